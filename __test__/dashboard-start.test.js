'use strict'
// `npm start` with a PM2 that already runs (README, "The local dashboard"):
// it refuses to take over a running agent (a real link), and with `--demo`
// it adds the demo app to that PM2 and at Ctrl-C deletes only that app,
// leaving PM2 and the user's apps running. Real PM2, real agent; the link
// it must not take over goes to the PM2.io stand-in.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('child_process')
const fs = require('fs')
const path = require('path')
const { tmpHome, pm2, jlist, writeApp, killPm2, waitUntil } = require('./helpers/pm2')

const home = tmpHome('ka-dstart-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
const { Backend } = require('./helpers/backend')
const { launchAgent, killAgent, agentProcesses, godProcesses, alive, environOf } = require('./helpers/agent')

const ROOT = path.join(__dirname, '..')
const conf = path.join(home, 'agent.json5')
let backend

function npmStart (args = []) {
  const env = Object.assign({}, process.env, { PM2_HOME: home, NO_COLOR: '1' })
  for (const k of ['PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'KEYMETRICS_NODE', 'PM2_SILENT', 'NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE']) delete env[k]
  const child = spawn('npm', ['start', ...(args.length ? ['--', ...args] : [])], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  child.out = ''
  child.stdout.on('data', (d) => { child.out += d })
  child.stderr.on('data', (d) => { child.out += d })
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  return child
}

test.before(async () => {
  backend = await new Backend().start()
  await pm2(home, ['start', writeApp(home, 'mine.js', 'setInterval(() => {}, 1000)\n'), '--name', 'mine'])
})

test.after(async () => {
  for (const pid of agentProcesses(home)) try { process.kill(pid, 'SIGKILL') } catch (e) {}
  await killPm2(home)
  await backend.stop()
})

test('an agent already runs for PM2_HOME: npm start refuses and touches nothing', { timeout: 120000 }, async () => {
  await launchAgent(backend, { public_key: 'real-pub', secret_key: 'real-secret', machine_name: 'real' })
  await backend.waitConnected()
  const agents = agentProcesses(home)
  assert.equal(agents.length, 1)
  const before = fs.readFileSync(conf, 'utf8')

  const child = npmStart()
  const { code } = await child.exited
  assert.notEqual(code, 0)
  assert.match(child.out, /an agent already runs for PM2_HOME=/)
  assert.match(child.out, /pm2 link stop/)
  assert.deepEqual(agentProcesses(home), agents, 'the running agent is left alone')
  assert.equal(fs.readFileSync(conf, 'utf8'), before)
  assert.ok(!fs.existsSync(`${conf}.npm-start-backup`))
  await killAgent()
})

test('--demo on a running PM2: the demo app is added, and at Ctrl-C only it goes', { timeout: 180000 }, async () => {
  const gods = godProcesses(home)
  assert.equal(gods.length, 1)
  const before = fs.readFileSync(conf, 'utf8')
  const child = npmStart(['--demo'])
  await waitUntil(() => /^Dashboard: http/m.test(child.out), 120000, 200, 'the dashboard URL')
  assert.match(child.out, /adding the demo app/)
  const names = (await jlist(home)).map((p) => p.name).sort()
  assert.deepEqual(names, ['km-dashboard-demo', 'mine'])
  const agents = agentProcesses(home)
  assert.equal(agents.length, 1)
  // Linked to the local backend, without the watchdog that would rewrite dump.pm2.
  const env = environOf(agents[0])
  assert.match(env.KEYMETRICS_NODE, /^http:\/\/127\.0\.0\.1:\d+$/)
  assert.equal(env.PM2_AGENT_WATCHDOG, 'false')
  assert.match(env.PM2_PUBLIC_KEY, /^local-[0-9a-f]{12}$/)

  process.kill(-child.pid, 'SIGINT')
  const { code, signal } = await child.exited
  assert.ok(code === 0 || signal === 'SIGINT', child.out)
  assert.match(child.out, /deleted the demo app/)
  await waitUntil(() => agents.every((pid) => !alive(pid)), 30000, 200, 'its agent gone')
  assert.deepEqual(agentProcesses(home), [])
  assert.deepEqual(godProcesses(home), gods, 'the PM2 it found still runs')
  assert.deepEqual((await jlist(home)).map((p) => p.name), ['mine'])
  assert.equal(fs.readFileSync(conf, 'utf8'), before)
})
