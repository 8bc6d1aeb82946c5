'use strict'
// Black-box: the package run the way PM2 runs it (InteractorClient.launchAndInteract
// spawns the daemon), against a real PM2 daemon with real apps, and a local
// PM2.io stand-in (verifyPM2 + WebSocket). Only PM2.io is simulated.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { tmpHome, pm2, jlist, writeApp, killPm2, waitUntil } = require('./helpers/pm2')
const { assertRefusalsSayWhy } = require('./helpers/refusals')
const { getInfos: infos } = require('./helpers/agent')

const home = tmpHome('ka-ws-')
process.env.PM2_HOME = home
process.env.WS_JSON_PATCH = 'true' // as `pm2 link` sets it
process.env.PM2_SILENT = 'true'
// This file restarts PM2 itself; the watchdog has its own test.
process.env.PM2_AGENT_WATCHDOG = 'false'
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')

const KEYS = { secret_key: 'secret-key-123', public_key: 'pub-key-1', machine_name: 'ws-machine' }
let backend
let launchMsg
let apps

function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

function launch () {
  return new Promise((resolve, reject) => {
    InteractorClient.launchAndInteract({}, Object.assign({ info_node: backend.url }, KEYS), (err, msg) => {
      if (err) return reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
      resolve(msg)
    })
  })
}

async function startApps () {
  // One CLI at a time: two racing CLIs would both try to spawn PM2's daemon.
  await pm2(home, ['start', apps.logger, '--name', 'logger'])
  await pm2(home, ['start', apps.eventer, '--name', 'eventer'])
}

test.before(async () => {
  apps = {
    logger: writeApp(home, 'logger.js', "let i = 0\nsetInterval(() => console.log('tick ' + (i++)), 200)\n"),
    eventer: writeApp(home, 'eventer.js',
      "let seq = 0\nsetInterval(() => process.send({ type: 'human:event', data: { __name: 'seq', seq: seq++ } }), 100)\n"),
    thrower: writeApp(home, 'thrower.js', [
      "const fs = require('fs')",
      "const marker = __filename + '.thrown'",
      'if (!fs.existsSync(marker)) {',
      '  fs.writeFileSync(marker, "1")',
      "  setTimeout(function explode () { throw new Error('kaboom from thrower') }, 300)",
      '}',
      'setInterval(() => {}, 1000)',
      ''
    ].join('\n'))
  }
  backend = await new Backend().start()
  await startApps()
  launchMsg = await launch()
})

test.after(async () => {
  await new Promise((resolve) => InteractorClient.killInteractorDaemon(constants, () => resolve()))
  await killPm2(home)
  if (backend) await backend.stop()
})

test('the launch reports an active agent and the daemon verified with our keys', () => {
  assert.equal(launchMsg.error, false)
  assert.equal(launchMsg.km_data.active, true)
  assert.equal(launchMsg.machine_name, KEYS.machine_name)
  assert.equal(typeof launchMsg.pid, 'number')
  const v = backend.verifyRequests[0]
  assert.equal(v.body.public_id, KEYS.public_key)
  assert.equal(v.body.data.MACHINE_NAME, KEYS.machine_name)
  assert.match(v.headers['user-agent'], /^PM2 Agent v\d+\.\d+\.\d+$/)
  assert.equal(Number(v.headers['content-length']), Buffer.byteLength(v.raw))
  assert.equal(fs.readFileSync(constants.INTERACTOR_PID_PATH, 'utf8').trim(), String(launchMsg.pid))
})

test('WebSocket handshake carries the agent headers', async () => {
  await backend.waitConnected()
  const h = backend.wsHandshakes[backend.wsHandshakes.length - 1].headers
  assert.equal(h['x-km-public'], KEYS.public_key)
  assert.equal(h['x-km-secret'], KEYS.secret_key)
  assert.equal(h['x-km-server'], KEYS.machine_name)
  assert.equal(h['x-protocol-version'], '1')
})

test('status arrives every second with the real processes (JSON patches applied)', async () => {
  const before = backend.statuses.length
  await waitUntil(() => backend.statuses.length >= before + 3, 20000, 100, 'three more statuses')
  const list = await jlist(home)
  const status = backend.lastStatus
  assert.equal(status.server_name, KEYS.machine_name)
  const names = status.data.process.map((p) => p.name).sort()
  for (const name of ['eventer', 'logger']) assert.ok(names.includes(name), names.join(','))
  for (const proc of list) {
    const s = status.data.process.find((p) => p.pm_id === proc.pm_id)
    assert.ok(s, `pm_id ${proc.pm_id} in status`)
    assert.equal(s.name, proc.name)
    assert.equal(s.pid, proc.pid)
  }
  assert.equal(typeof status.data.server.hostname, 'string')
  assert.ok(backend.received.some((p) => p.channel === 'status:patch'), 'patch mode used after the first full status')
})

test('logs flow only after startLogging', async () => {
  assert.equal(backend.received.filter((p) => p.channel === 'logs').length, 0, 'no logs before streaming is on')
  backend.send('trigger:pm2:action', { method_name: 'startLogging', parameters: {} })
  const res = await backend.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'startLogging')
  assert.deepEqual(res.payload.ret, { err: null, data: 'Log streaming enabled' })
  const log = await backend.waitFor((p) => p.channel === 'logs' && p.payload.process.name === 'logger')
  assert.match(log.payload.data, /^tick \d+/)
  assert.equal(log.payload.log_type, 'out')
  assert.equal(log.payload.process.server, KEYS.machine_name)
})

test('an exception arrives with its source context', async () => {
  await pm2(home, ['start', apps.thrower, '--name', 'thrower'])
  const ex = await backend.waitFor((p) => p.channel === 'process:exception' && p.payload.process.name === 'thrower')
  const data = ex.payload.data
  assert.match(data.message || data.stack, /kaboom from thrower/)
  assert.equal(data.callsite, `${apps.thrower}:5`)
  assert.match(data.context, />>.*throw new Error\('kaboom from thrower'\)/)
  assert.ok(Array.isArray(data.last_logs) || data.last_logs === undefined)
})

test('a custom event arrives with its name moved out of data', async () => {
  const ev = await backend.waitFor((p) => p.channel === 'human:event')
  assert.equal(ev.payload.name, 'seq')
  assert.equal(ev.payload.data.__name, undefined)
  assert.equal(typeof ev.payload.data.seq, 'number')
})

test('a profile reported by an app is read, sent on `profiling`, then deleted', async () => {
  const dump = path.join(home, 'app.heapprofile')
  fs.writeFileSync(dump, JSON.stringify({ head: { callFrame: { functionName: '(root)' } }, samples: [1, 2, 3] }))
  const profiler = writeApp(home, 'profiler.js', [
    `process.send({ type: 'axm:reply', data: { return: { heapprofile: true, dump_file: ${JSON.stringify(dump)} } } })`,
    'setInterval(() => {}, 1000)',
    ''
  ].join('\n'))
  await pm2(home, ['start', profiler, '--name', 'profiler'])
  const p = await backend.waitFor((x) => x.channel === 'profiling')
  assert.equal(p.payload.name, 'profiler')
  assert.equal(p.payload.type, 'heapprofile')
  assert.equal(p.payload.heapprofile, true)
  assert.equal(p.payload.server_name, KEYS.machine_name)
  assert.equal(p.payload.public_key, KEYS.public_key)
  assert.deepEqual(JSON.parse(p.payload.data).samples, [1, 2, 3])
  await waitUntil(() => !fs.existsSync(dump), 10000, 100, 'the dump file to be deleted')
  assert.ok(!backend.received.some((x) => x.channel === 'axm:reply' && x.payload.process.name === 'profiler'),
    'the profiling reply itself is not forwarded')
  await pm2(home, ['delete', 'profiler'])
})

/**
 * A scratch directory outside both the temp directory and PM2_HOME (where
 * the agent reads no dump), or null when this machine has none writable.
 */
function outsideDir () {
  const real = (p) => { try { return fs.realpathSync(p) } catch (e) { return null } }
  const allowed = [os.tmpdir(), '/tmp', home].map(real).filter(Boolean)
  const within = (p) => allowed.some((a) => p === a || p.startsWith(a + path.sep))
  for (const base of [path.join(__dirname), os.homedir(), '/var/tmp', '/dev/shm']) {
    const r = real(base)
    if (!r || within(r)) continue
    try { return fs.mkdtempSync(path.join(r, '.ka-outside-')) } catch (e) {}
  }
  return null
}

test('a profile dump outside the temp directory and PM2_HOME is refused, kept, counted and logged', async (t) => {
  const outside = outsideDir()
  if (!outside) return t.skip('no writable directory outside the temp directory and PM2_HOME')
  t.after(() => fs.rmSync(outside, { recursive: true, force: true }))
  const direct = path.join(outside, 'private.heapprofile')
  fs.writeFileSync(direct, 'not a dump: a file of the agent\'s user')
  // A symlink in PM2_HOME leading out of it.
  const target = path.join(outside, 'target.txt')
  fs.writeFileSync(target, 'another private file')
  const link = path.join(home, 'escape.heapprofile')
  fs.symlinkSync(target, link)
  const reporter = writeApp(home, 'reporter.js', [
    `for (const f of ${JSON.stringify([direct, link])}) process.send({ type: 'axm:reply', data: { return: { heapprofile: true, dump_file: f } } })`,
    'setInterval(() => {}, 1000)',
    ''
  ].join('\n'))
  const logBefore = fs.readFileSync(constants.INTERACTOR_LOG_FILE_PATH, 'utf8').length
  await pm2(home, ['start', reporter, '--name', 'reporter'])
  const refused = (infos) => (infos.drops || []).find((d) => d.channel === 'profiling' && /outside the temp directory and PM2_HOME/.test(d.reason))
  await waitUntil(async () => { const c = refused(await infos()); return c && c.count >= 2 }, 20000, 100, 'both dumps counted as refused')
  assert.ok(fs.existsSync(direct) && fs.existsSync(target) && fs.lstatSync(link).isSymbolicLink(), 'nothing deleted')
  assert.ok(!backend.received.some((p) => p.channel === 'profiling' && p.payload.name === 'reporter'), 'nothing sent')
  const log = fs.readFileSync(constants.INTERACTOR_LOG_FILE_PATH, 'utf8').slice(logBefore)
  assert.match(log, /profile not sent: profile dump \S+ resolves to \S+, outside the temp directory and PM2_HOME: refused, left in place/)
  await pm2(home, ['delete', 'reporter'])
  fs.rmSync(link, { force: true })
})

test('a remote restart really restarts the app', async () => {
  const before = (await jlist(home)).find((p) => p.name === 'logger').pm2_env.restart_time
  backend.send('trigger:pm2:action', { method_name: 'restart', parameters: { name: 'logger' } })
  const res = await backend.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'restart')
  assert.deepEqual(res.payload.ret, { err: null })
  assert.equal(res.payload.meta.app_name, 'logger')
  await waitUntil(async () => (await jlist(home)).find((p) => p.name === 'logger').pm2_env.restart_time > before,
    20000, 200, 'restart_time to grow')
  await waitUntil(() => {
    const s = backend.lastStatus.data.process.find((p) => p.name === 'logger')
    return s && s.restart_time > before
  }, 20000, 200, 'status to show the restart')
})

test('refused and failed remote actions say why (message and code in ret.err)', async () => {
  await assertRefusalsSayWhy(backend, 'logger')
})

test('the backend going away and coming back loses no queued event', async () => {
  const seqs = () => backend.received.filter((p) => p.channel === 'human:event').map((p) => p.payload.data.seq)
  await backend.waitFor((p) => p.channel === 'human:event')
  await backend.stop()
  await sleep(1500) // ~15 events are emitted while PM2.io is away
  await backend.restart()
  await backend.waitConnected(30000)
  const lastBefore = Math.max(...seqs())
  await waitUntil(() => Math.max(...seqs()) > lastBefore + 20, 30000, 100, 'events after the outage')
  // The eventer restarts never; its sequence must be contiguous across the outage.
  const got = [...new Set(seqs())].sort((a, b) => a - b)
  const first = got[0]
  const missing = []
  for (let s = first; s <= got[got.length - 1]; s++) if (!got.includes(s)) missing.push(s)
  assert.deepEqual(missing, [], 'every event emitted during the outage arrived')
})

test('PM2 killed and restarted is picked up again', async () => {
  const pid = parseInt(fs.readFileSync(path.join(home, 'pm2.pid'), 'utf8'))
  process.kill(pid, 'SIGTERM')
  await waitUntil(() => { try { process.kill(pid, 0); return false } catch (e) { return true } }, 20000, 100, 'PM2 to die')
  await startApps()
  const list = await jlist(home)
  const loggerPid = list.find((p) => p.name === 'logger').pid
  await waitUntil(() => {
    const s = backend.lastStatus && backend.lastStatus.data.process.find((p) => p.name === 'logger')
    return s && s.pid === loggerPid
  }, 30000, 200, 'status from the new PM2')
})

test('killInteractorDaemon stops the agent and removes its files', async () => {
  const res = await new Promise((resolve) => InteractorClient.killInteractorDaemon(constants, (err, r) => resolve({ err, r })))
  assert.equal(res.err, null)
  await waitUntil(() => { try { process.kill(launchMsg.pid, 0); return false } catch (e) { return true } }, 10000, 100, 'agent exit')
  assert.equal(fs.existsSync(constants.INTERACTOR_RPC_PORT), false)
  assert.equal(fs.existsSync(constants.INTERACTOR_PID_PATH), false)
  const log = fs.readFileSync(constants.INTERACTOR_LOG_FILE_PATH, 'utf8')
  assert.ok(!log.includes(KEYS.secret_key), 'the secret key never reaches agent.log')
})
