'use strict'
// Black-box: the package run the way PM2 runs it (InteractorClient.launchAndInteract
// spawns the daemon) against a real PM2 daemon with real apps and the legacy
// PM2.io interaction servers built from the real libraries: a pm2-axon `sub`
// on the push endpoint and an nssocket server on the reverse endpoint (see
// helpers/axon-backend.js). verifyPM2 (and the WebSocket endpoint of the
// configuration tests) comes from helpers/backend.js. Only PM2.io is simulated.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { AxonBackend, cipher, decipherText } = require('./helpers/axon-backend')
const { tmpHome, pm2, jlist, writeApp, killPm2, waitUntil } = require('./helpers/pm2')
const { launchAgent, getInfos, inboundDrops, waitForInboundDrops, killAgent, agentLog, MODE } = require('./helpers/agent')
const { assertRefusalsSayWhy } = require('./helpers/refusals')

const home = tmpHome('ka-axon-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
delete process.env.WS_JSON_PATCH
delete process.env.AGENT_TRANSPORT_WEBSOCKET
delete process.env.AGENT_TRANSPORT_AXON

const ROOT = path.join(__dirname, '..')
const KEYS = { secret_key: 'axon-secret-123', public_key: 'axon-pub-1', machine_name: 'axon-machine', pm2_version: '7.0.4' }
let backend // verifyPM2 (+ ws for the configuration tests)
let axonBackend
let launchMsg
const tmpDirs = []

function axonAnswer () {
  return backend.activeAnswer({ endpoints: Object.assign({ web: 'http://127.0.0.1/web' }, axonBackend.endpoints) })
}

const seqsOf = (packets) => packets.filter((p) => p.channel === 'human:event').map((p) => p.payload.data.seq)

test.before(async () => {
  const apps = {
    logger: writeApp(home, 'logger.js', "let i = 0\nsetInterval(() => console.log('tick ' + (i++)), 200)\n"),
    eventer: writeApp(home, 'eventer.js',
      "let seq = 0\nsetInterval(() => process.send({ type: 'human:event', data: { __name: 'seq', seq: seq++ } }), 100)\n")
  }
  axonBackend = await new AxonBackend(KEYS.secret_key).start()
  backend = await new Backend({ verify: () => axonAnswer() }).start()
  await pm2(home, ['start', apps.logger, '--name', 'logger'])
  await pm2(home, ['start', apps.eventer, '--name', 'eventer'])
  launchMsg = await launchAgent(backend, KEYS)
})

test.after(async () => {
  delete process.env.AGENT_TRANSPORT_WEBSOCKET
  await killAgent()
  await killPm2(home)
  if (backend) await backend.stop()
  if (axonBackend) await axonBackend.stop()
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true })
  fs.rmSync(home, { recursive: true, force: true })
})

test('the agent verifies and connects both Axon sockets, not the WebSocket', async () => {
  assert.equal(launchMsg.error, false)
  assert.equal(launchMsg.km_data.active, true)
  await waitUntil(() => axonBackend.askReps.length > 0, 20000, 50, 'ask:rep')
  assert.equal(axonBackend.pushConnections >= 1, true)
  assert.equal(backend.wsHandshakes.length, 0, 'no WebSocket was offered, none was opened')
  const infos = await getInfos()
  assert.deepEqual(infos.transporters, ['AxonTransport'])
  assert.equal(infos.connected, true)
})

test('ask is answered with the ciphered system metadata (lower-cased keys, fixed order)', async () => {
  await waitUntil(() => axonBackend.askReps.length > 0, 20000, 50, 'ask:rep')
  const rep = axonBackend.askReps[0]
  assert.deepEqual(Object.keys(rep), ['data', 'public_key'])
  assert.equal(rep.public_key, KEYS.public_key)
  assert.match(rep.data, /^[0-9a-f]+$/)
  const plain = decipherText(rep.data, KEYS.secret_key)
  const meta = JSON.parse(plain)
  assert.deepEqual(Object.keys(meta), ['machine_name', 'public_key', 'recycle', 'pm2_version', 'memory', 'hostname', 'cpus'])
  assert.equal(meta.machine_name, KEYS.machine_name)
  assert.equal(meta.public_key, KEYS.public_key)
  assert.equal(meta.pm2_version, KEYS.pm2_version)
  assert.equal(meta.hostname, os.hostname())
  assert.equal(meta.cpus.length, os.cpus().length)
  // The same facts verifyPM2 carried, upper-case there.
  const v = backend.verifyRequests[0].body.data
  assert.equal(meta.memory, v.MEMORY)
  assert.equal(meta.recycle, v.RECYCLE)
  // Ciphered exactly as Node's createCipher would (fixed IV per secret).
  assert.equal(cipher(plain, KEYS.secret_key), rep.data)
})

test('ciphered status arrives every second with the real processes and rev_con', async () => {
  const before = axonBackend.statuses.length
  const t0 = Date.now()
  await waitUntil(() => axonBackend.statuses.length >= before + 3, 20000, 50, 'three more statuses')
  assert.ok(Date.now() - t0 >= 1500, 'about one frame per second, not faster')
  const frame = axonBackend.frames[axonBackend.frames.length - 1]
  assert.deepEqual(Object.keys(frame.outer), ['public_key', 'data'])
  assert.equal(frame.outer.public_key, KEYS.public_key)
  assert.match(frame.outer.data, /^[0-9a-f]+$/)
  assert.ok(frame.raw.startsWith(`{"public_key":"${KEYS.public_key}","data":"`))
  const keys = Object.keys(frame.buffer)
  assert.deepEqual(keys.slice(-2), ['status', 'server_name'])
  assert.equal(frame.buffer.server_name, KEYS.machine_name)
  assert.equal(axonBackend.badFrames.length, 0)

  const status = axonBackend.lastStatus
  assert.equal(status.rev_con, true)
  assert.equal(status.server_name, KEYS.machine_name)
  assert.equal(typeof status.internal_ip, 'string')
  const list = await jlist(home)
  for (const proc of list) {
    const s = status.data.process.find((p) => p.pm_id === proc.pm_id)
    assert.ok(s, `pm_id ${proc.pm_id} in status`)
    assert.equal(s.name, proc.name)
    assert.equal(s.pid, proc.pid)
  }
  assert.deepEqual(status.data.process.map((p) => p.name).sort(), ['eventer', 'logger'])
  assert.equal(typeof status.data.server.hostname, 'string')
})

test('events arrive ciphered in the push buffer, grouped by channel', async () => {
  const ev = await axonBackend.waitFor((p) => p.channel === 'human:event' && p.via === 'push')
  assert.equal(ev.payload.name, 'seq')
  assert.equal(typeof ev.payload.data.seq, 'number')
  // ~10 events a second: one frame carries several, in order.
  const frame = axonBackend.frames.find((f) => (f.buffer['human:event'] || []).length > 1)
  assert.ok(frame, 'a frame with several events')
  const seqs = frame.buffer['human:event'].map((e) => e.data.seq)
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b))
  assert.ok(!axonBackend.received.some((p) => p.via === 'push' && p.channel.includes('trigger:')))
})

test('a ciphered restart restarts the real app; the result comes back in clear over nssocket', async () => {
  const before = (await jlist(home)).find((p) => p.name === 'logger').pm2_env.restart_time
  assert.equal(axonBackend.send('trigger:pm2:action', { method_name: 'restart', parameters: { name: 'logger' } }), 1)
  const res = await axonBackend.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'restart')
  assert.equal(res.via, 'reverse')
  // In clear: nssocket parsed an object, not a ciphered string.
  assert.deepEqual(res.payload.ret, { err: null })
  assert.equal(res.payload.meta.app_name, 'logger')
  assert.equal(res.payload.meta.machine_name, KEYS.machine_name)
  await waitUntil(async () => (await jlist(home)).find((p) => p.name === 'logger').pm2_env.restart_time > before,
    20000, 200, 'restart_time to grow')
  await waitUntil(() => {
    const s = axonBackend.lastStatus.data.process.find((p) => p.name === 'logger')
    return s && s.restart_time > before
  }, 20000, 200, 'status to show the restart')
})

test('refused and failed remote actions say why, over nssocket too', async () => {
  await assertRefusalsSayWhy(axonBackend, 'logger')
  assert.ok(axonBackend.received.filter((p) => p.channel === 'trigger:pm2:result').every((p) => p.via === 'reverse'))
})

test('unusable reverse messages are dropped, each counted per channel and reason in getInfos', async () => {
  assert.deepEqual(await inboundDrops(), {})
  for (const s of axonBackend.sockets) {
    s.send('trigger:action', 'not hex') // undecipherable
    s.send('trigger:action', cipher({ a: 1 }, 'another-secret')) // undecipherable: not our key
    s.send('trigger:action', { method_name: 'clear' }) // not ciphered
    s.send('trigger:action', cipher(null, KEYS.secret_key)) // no payload
    s.send(['trigger', 'action'], cipher({ a: 1 }, KEYS.secret_key)) // two segments: the JS agent ignores it
    s.socket.write('not json at all\n') // not an nssocket line
  }
  // Still serving: the next command is answered.
  axonBackend.send('trigger:pm2:action', { method_name: 'ping', parameters: { name: 'logger' } })
  const res = await axonBackend.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'ping' &&
    p.payload.ret.err === null)
  assert.equal(res.via, 'reverse')
  const expected = {
    'trigger:action inbound: undecipherable': 2,
    'trigger:action inbound: not ciphered': 1,
    'trigger:action inbound: no payload': 1,
    'trigger::action inbound: multi-segment event': 1,
    '(unparsed) inbound: malformed nssocket line': 1
  }
  await waitForInboundDrops(expected)
  const member = (await getInfos()).transport.routes[0].transporters.find((t) => t.name === 'AxonTransport')
  assert.equal(member.inbound_dropped, 6)
})

test('the reverse server dropping the connection is survived', async () => {
  const asks = axonBackend.askReps.length
  const reverseConns = axonBackend.reverseConnections
  const pushConns = axonBackend.pushConnections
  axonBackend.dropReverse()
  const dropped = Date.now()
  await waitUntil(() => axonBackend.askReps.length > asks, 30000, 50, 'a new ask:rep')
  assert.equal(axonBackend.reverseConnections, reverseConns + 1)
  // Both sockets are renewed together.
  assert.ok(axonBackend.pushConnections > pushConns, 'the push socket reconnected too')
  const frames = axonBackend.frames.length
  await waitUntil(() => axonBackend.frames.length >= frames + 2, 20000, 50, 'push frames again')
  const lastSeqBefore = Math.max(...seqsOf(axonBackend.received))
  await waitUntil(() => Math.max(...seqsOf(axonBackend.received)) > lastSeqBefore + 5, 20000, 100, 'events again')
  // Commands work on the new reverse connection.
  axonBackend.send('trigger:pm2:action', { method_name: 'ping', parameters: { name: 'logger' } })
  const res = await axonBackend.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'ping')
  assert.equal(res.payload.ret.err, null)
  assert.ok(Date.now() - dropped < 30000)
  assert.match(agentLog(), /AxonTransport failed.*reverse .*connection closed by the server/)
})

test('default config with only ws offered falls back to WebSocket, and says why', async () => {
  await killAgent()
  const logBefore = agentLog().length
  const reverseConns = axonBackend.reverseConnections
  backend.verify = () => backend.activeAnswer() // web + ws only
  await launchAgent(backend, KEYS)
  await backend.waitConnected()
  await backend.waitFor((p) => p.channel === 'status')
  const infos = await getInfos()
  assert.deepEqual(infos.transporters, ['WebsocketTransport'])
  const log = agentLog().slice(logBefore)
  assert.match(log, /no endpoint for the enabled transporters \(axon\); PM2\.io offers a WebSocket endpoint, using it/)
  assert.equal(axonBackend.reverseConnections, reverseConns, 'no Axon connection attempted')
})

test('AGENT_TRANSPORT_WEBSOCKET=true with push, reverse and ws: both transporters carry every event', async () => {
  await killAgent()
  process.env.AGENT_TRANSPORT_WEBSOCKET = 'true'
  backend.verify = () => backend.activeAnswer({
    endpoints: Object.assign({ web: 'http://127.0.0.1/web', ws: backend.wsUrl }, axonBackend.endpoints)
  })
  const asks = axonBackend.askReps.length
  const wsHandshakes = backend.wsHandshakes.length
  try {
    await launchAgent(backend, KEYS)
  } finally {
    delete process.env.AGENT_TRANSPORT_WEBSOCKET
  }
  await waitUntil(() => backend.wsHandshakes.length > wsHandshakes && backend.sockets.size > 0, 20000, 50, 'the WebSocket')
  await waitUntil(() => axonBackend.askReps.length > asks, 20000, 50, 'the Axon ask:rep')
  const infos = await getInfos()
  assert.deepEqual([...infos.transporters].sort(), ['AxonTransport', 'WebsocketTransport'])

  // Events from now on: both sides see every one of them.
  const wsFrom = backend.received.length
  const axFrom = axonBackend.received.length
  const ws = () => new Set(seqsOf(backend.received.slice(wsFrom)))
  const ax = () => new Set(seqsOf(axonBackend.received.slice(axFrom)))
  await waitUntil(() => ws().size > 5 && ax().size > 5, 20000, 100, 'events on both')
  const lo = Math.max(Math.min(...ws()), Math.min(...ax()))
  await waitUntil(() => Math.max(...ws()) >= lo + 20 && Math.max(...ax()) >= lo + 20, 20000, 100, '20 more events on both')
  const missing = []
  for (let s = lo; s <= lo + 20; s++) {
    if (!ws().has(s)) missing.push(`ws:${s}`)
    if (!ax().has(s)) missing.push(`axon:${s}`)
  }
  assert.deepEqual(missing, [])
  // Status too, each in its transport's form.
  await waitUntil(() => backend.received.slice(wsFrom).some((p) => p.channel === 'status' && p.payload.rev_con === undefined),
    5000, 50, 'ws status')
  await waitUntil(() => axonBackend.statuses.length > 0 && axonBackend.lastStatus.rev_con === true, 5000, 50, 'axon status')
  // A command over either transporter is answered on the same one.
  backend.send('trigger:pm2:action', { method_name: 'ping', parameters: {} })
  axonBackend.send('trigger:pm2:action', { method_name: 'ping', parameters: {} })
  const wsPings = () => backend.received.slice(wsFrom).filter((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'ping')
  const axPings = () => axonBackend.received.slice(axFrom).filter((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'ping')
  await waitUntil(() => wsPings().length > 0 && axPings().length > 0, 20000, 50, 'both ping results')
})

test('a malformed config.json: the daemon exits 1 naming the file and the key', async () => {
  const pkg = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-axcfg-'))
  tmpDirs.push(pkg)
  fs.cpSync(path.join(ROOT, 'src'), path.join(pkg, 'src'), { recursive: true })
  const DAEMON_BIN = 'keymetrics-agent-daemon.linux-x64-gnu'
  for (const f of ['index.js', 'package.json', 'constants.js', 'interactor.linux-x64-gnu.node'].concat(MODE === 'native' ? [DAEMON_BIN] : [])) {
    fs.copyFileSync(path.join(ROOT, f), path.join(pkg, f))
  }
  fs.writeFileSync(path.join(pkg, 'config.json'), JSON.stringify({ axon: { enabled: 'yes', endpoints: { push: 'push', pull: 'reverse' } } }))
  const agentHome = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-axh-'))
  tmpDirs.push(agentHome)
  const env = Object.assign({}, process.env, {
    PM2_HOME: agentHome,
    PM2_MACHINE_NAME: KEYS.machine_name,
    PM2_PUBLIC_KEY: KEYS.public_key,
    PM2_SECRET_KEY: KEYS.secret_key,
    KEYMETRICS_NODE: backend.url
  })
  delete env.PM2_AGENT_ONLINE
  // Native: no PM2_AGENT_CONFIG_FILE, so the binary reads the config.json beside it.
  delete env.PM2_AGENT_CONFIG_FILE
  const child = MODE === 'native'
    ? spawn(path.join(pkg, DAEMON_BIN), [], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, [path.join(pkg, 'src', 'InteractorDaemon.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  const verifies = backend.verifyRequests.length
  const code = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('the daemon did not exit')) }, 15000)
    child.on('exit', (c) => { clearTimeout(timer); resolve(c) })
  })
  assert.equal(code, 1)
  assert.ok(stderr.includes(`${path.join(pkg, 'config.json')}: axon.enabled must be true or false`), stderr)
  assert.equal(backend.verifyRequests.length, verifies, 'it stopped before contacting PM2.io')
  assert.equal(fs.existsSync(path.join(agentHome, 'interactor.sock')), false)
})
