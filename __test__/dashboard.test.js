'use strict'
// Browser test of `npm start` (README, "The local dashboard"): the real
// script as a child process on a fresh PM2_HOME (so it starts its own PM2
// from node_modules with the demo app, and this package's agent), the real
// page in headless Chromium (Debian's `chromium` + puppeteer-core; installed
// by __test__/helpers/browser.js, skipped with the reason where it cannot
// be). KM_UPDATE_SCREENSHOT=1 saves the page to docs/dashboard.png.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('child_process')
const fs = require('fs')
const http = require('http')
const path = require('path')
const { tmpHome, killPm2, waitUntil } = require('./helpers/pm2')
const { agentProcesses, godProcesses, alive } = require('./helpers/agent')
const { findChromium, launchBrowser } = require('./helpers/browser')

const ROOT = path.join(__dirname, '..')
const DEMO = 'km-dashboard-demo'
const APP = `.card.process[data-app="${DEMO}"]`
// A link that npm start must leave as it found it.
const REAL_CONF = JSON.stringify({ public_key: 'real-public', secret_key: 'real-secret', machine_name: 'real-machine' }, null, 4)

function get (url, headers) {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode, text }))
    }).on('error', reject)
  })
}

test('npm start: the page shows the demo app, its logs, restarts and exceptions; Ctrl-C stops what it started', { timeout: 30 * 60 * 1000 }, async (t) => {
  const chromium = await findChromium()
  if (chromium.skip) return t.skip(chromium.skip)

  const home = tmpHome('ka-dash-')
  const conf = path.join(home, 'agent.json5')
  fs.writeFileSync(conf, REAL_CONF, { mode: 0o600 })
  const env = Object.assign({}, process.env, {
    PM2_HOME: home,
    KM_DEMO_THROW_MS: '15000',
    // The agent's own settings (README): aggregated transactions every 5 s, and
    // no 10-minute learning period after the restarts this test makes.
    PM2_TRACE_FLUSH_INTERVAL: '5000',
    PM2_AGGREGATION_DURATION: '0',
    NO_COLOR: '1'
  })
  for (const k of ['PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'KEYMETRICS_NODE', 'PM2_SILENT', 'NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE']) delete env[k]
  // Its own process group, so that the SIGINT below is a terminal's Ctrl-C.
  const child = spawn('npm', ['start'], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { out += d })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  let browser = null
  t.after(async () => {
    if (browser) await browser.closeAndClean()
    try { process.kill(-child.pid, 'SIGKILL') } catch (e) {}
    for (const pid of agentProcesses(home)) try { process.kill(pid, 'SIGKILL') } catch (e) {}
    await killPm2(home)
  })

  await waitUntil(() => /^Dashboard: http/m.test(out), 120000, 200, `the dashboard URL; npm start said:\n${out}`)
  const pageUrl = /^Dashboard: (http\S+)/m.exec(out)[1]
  const base = new URL(pageUrl)
  const token = base.searchParams.get('token')
  assert.match(token, /^[0-9a-f]{32}$/)
  assert.equal(base.hostname, '127.0.0.1')
  // The real link was set aside while npm start runs.
  assert.ok(fs.existsSync(`${conf}.npm-start-backup`))
  assert.notEqual(fs.readFileSync(conf, 'utf8'), REAL_CONF)

  // No token, a wrong one: 403 for the page and the API.
  for (const p of ['/', '/api/state', '/api/traffic', '/inspector']) {
    for (const suffix of ['', `?token=${'0'.repeat(32)}`]) {
      const r = await get(`${base.origin}${p}${suffix}`)
      assert.equal(r.status, 403, `${p}${suffix}`)
      assert.equal(r.text, 'forbidden')
    }
  }

  browser = await launchBrowser(chromium.path)
  const page = await browser.newPage()
  const pageErrors = []
  page.on('pageerror', (e) => pageErrors.push(e.message))
  await page.setViewport({ width: 1280, height: 1500 })
  await page.goto(pageUrl)

  // The demo app's row, online, with the machine figures above.
  await page.waitForSelector(`${APP} .badge.online`, { timeout: 120000 })
  const hostname = await page.$eval('#server-kv', (e) => e.textContent)
  assert.match(hostname, /hostname/)
  assert.match(hostname, /total_mem/)

  // Log lines only once streaming is on.
  assert.equal((await page.$$(`${APP} .logs .line`)).length, 0, 'no log line before streaming')
  await page.click('#start-logging')
  await page.waitForFunction((sel) => [...document.querySelectorAll(sel)].some((e) => /demo tick \d+/.test(e.textContent)),
    { timeout: 60000 }, `${APP} .logs .line`)
  await page.waitForFunction(() => /Log streaming enabled/.test(document.getElementById('reply-list').textContent), { timeout: 30000 })

  // Restart: the counter grows, and the agent's answer is shown.
  const restarts = async () => Number(await page.$eval(`${APP} .restarts`, (e) => e.textContent))
  const before = await restarts()
  await page.click(`${APP} button[data-action="restart"]`)
  await page.waitForFunction((sel, n) => Number(document.querySelector(sel).textContent) > n, { timeout: 60000 }, `${APP} .restarts`, before)
  await page.waitForFunction(() => [...document.querySelectorAll('#reply-list li')]
    .some((li) => /trigger:pm2:result/.test(li.textContent) && /"method_name":"restart"/.test(li.textContent) && /"err":null/.test(li.textContent)),
  { timeout: 30000 })

  // The app's custom action, declared over IPC: sent as trigger:action, answered.
  // (Retried a few times: a click that lands while the app restarts after its
  // exception is answered with a failure, and the button is re-made.)
  const hello = `${APP} button[data-custom-action="say-hello"]`
  for (let attempt = 1; ; attempt++) {
    await page.waitForSelector(hello, { timeout: 60000 })
    try { await page.click(hello) } catch (e) {}
    const answered = await page.waitForFunction(() => [...document.querySelectorAll('#reply-list li')]
      .some((li) => /trigger:action:success/.test(li.textContent) && /"action_name":"say-hello"/.test(li.textContent)),
    { timeout: 15000 }).then(() => true, () => false)
    if (answered) break
    assert.ok(attempt < 4, `say-hello never answered:\n${await page.$eval('#reply-list', (e) => e.textContent)}`)
  }

  // The demo app's uncaught exception, with its source context (the line that threw marked >>).
  await page.waitForSelector(`${APP} .exception .context`, { timeout: 120000 })
  const ex = await page.$eval(`${APP} .exception`, (e) => ({
    msg: e.querySelector('.msg').textContent,
    context: e.querySelector('.context').textContent,
    where: e.querySelector('.empty').textContent
  }))
  assert.match(ex.msg, /Cannot read properties of undefined/)
  assert.match(ex.context, />>\s*return conf\.settings\.retries/)
  assert.match(ex.where, /demo-app\.js:\d+/)

  // A custom event and the CPU/memory plots.
  await page.waitForSelector(`${APP} .events tr.event`, { timeout: 60000 })
  assert.match(await page.$eval(`${APP} .events tr.event`, (e) => e.textContent), /demo:heartbeat/)
  assert.equal((await page.$$(`${APP} .plots svg polyline`)).length, 2)

  // The traffic view counts what the agent sent.
  const traffic = JSON.parse((await get(`${base.origin}/api/traffic?token=${token}`)).text)
  assert.equal(traffic.source, 'dashboard')
  const channels = traffic.channels.map((c) => c.channel)
  for (const c of ['logs', 'process:exception', 'human:event', 'trigger:pm2:result']) assert.ok(channels.includes(c), `${c} in ${channels}`)
  assert.ok(channels.includes('status') || channels.includes('status:patch'))

  // The inspector page (web/inspector.html, the agent's own page too) shows
  // the same traffic: the logs channel, and its last packets as JSON.
  const inspector = await browser.newPage()
  await inspector.goto(`${base.origin}/inspector?token=${token}`)
  const logsRow = await inspector.waitForFunction(() => [...document.querySelectorAll('#channels tr')]
    .find((tr) => tr.firstChild && tr.firstChild.textContent === 'logs'), { timeout: 30000 })
  await logsRow.asElement().click()
  await inspector.waitForFunction(() => /"channel":\s*"logs"/.test(document.getElementById('detail').textContent), { timeout: 30000 })
  assert.match(await inspector.$eval('#detail-title', (e) => e.textContent), /packet\(s\) of logs/)
  if (process.env.KM_UPDATE_SCREENSHOT === '1') await inspector.screenshot({ path: path.join(ROOT, 'docs', 'inspector.png') })
  await inspector.close()

  // Aggregated HTTP transactions of the demo app's self-calls.
  await page.waitForSelector(`${APP} .transactions tr.route`, { timeout: 120000 })
  assert.match(await page.$eval(`${APP} .transactions`, (e) => e.textContent), /\/users\/\*|\/health|\/slow/)

  if (process.env.KM_UPDATE_SCREENSHOT === '1') {
    // The custom action is declared again after each restart.
    await page.waitForSelector(`${APP} button[data-custom-action="say-hello"]`, { timeout: 60000 })
    await page.evaluate(() => window.scrollTo(0, 0))
    await page.screenshot({ path: path.join(ROOT, 'docs', 'dashboard.png') })
  }
  assert.deepEqual(pageErrors, [])

  // Ctrl-C: the agent and the PM2 it started are gone; the real link is back.
  const agents = agentProcesses(home)
  const gods = godProcesses(home)
  assert.equal(agents.length, 1, `one agent for ${home}`)
  assert.equal(gods.length, 1, `one PM2 for ${home}`)
  process.kill(-child.pid, 'SIGINT')
  // npm forwards the SIGINT to the script and then ends by it, as after a
  // terminal's Ctrl-C; the script itself says goodbye once it cleaned up.
  const { code, signal } = await exited
  assert.ok(code === 0 || signal === 'SIGINT', `npm start ended with ${code} / ${signal}:\n${out}`)
  assert.match(out, /\[npm start\] bye/)
  assert.doesNotMatch(out, /could not|failed/)
  await waitUntil(() => [...agents, ...gods].every((pid) => !alive(pid)), 30000, 200, 'agent and PM2 gone')
  assert.deepEqual(agentProcesses(home), [])
  assert.deepEqual(godProcesses(home), [])
  assert.equal(fs.readFileSync(conf, 'utf8'), REAL_CONF)
  assert.equal(fs.statSync(conf).mode & 0o777, 0o600)
  assert.ok(!fs.existsSync(`${conf}.npm-start-backup`))
  assert.match(out, /stopped the agent/)
  assert.match(out, /stopped the PM2 it started/)
})
