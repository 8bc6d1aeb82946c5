'use strict'
// Black-box: reaching PM2.io by proof. The verifyPM2 answer offers `ws` and
// `push`/`reverse` endpoints; the agent (Axon by default) must find out
// whether those speak Axon, fall back to the WebSocket at once when they do
// not, say why in getInteractInfo, and take the traffic back to Axon when a
// real pm2-axon sub + nssocket server answers. Real PM2 with real apps;
// only PM2.io is a local stand-in (helpers/backend.js, axon-backend.js).

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const http = require('http')
const net = require('net')
const os = require('os')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { AxonBackend } = require('./helpers/axon-backend')
const { makeTestPki } = require('./helpers/proxies')
const { tmpHome, pm2, writeApp, killPm2, waitUntil } = require('./helpers/pm2')
const { launchAgent, getInfos, killAgent, agentLog } = require('./helpers/agent')

const home = tmpHome('ka-fallback-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
delete process.env.WS_JSON_PATCH
delete process.env.AGENT_TRANSPORT_WEBSOCKET
delete process.env.AGENT_TRANSPORT_AXON

const KEYS = { secret_key: 'fallback-secret', public_key: 'fallback-pub', machine_name: 'fallback-machine', pm2_version: '7.0.4' }
const closers = []
const tmpDirs = []

const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)))

/** A status over the WebSocket listing both real apps. */
const bothApps = (p) => p.channel === 'status' &&
  ['logger', 'eventer'].every((n) => p.payload.data.process.some((x) => x.name === n))

const seqsOf = (packets) => packets.filter((p) => p.channel === 'human:event').map((p) => p.payload.data.seq)

test.before(async () => {
  const logger = writeApp(home, 'logger.js', "let i = 0\nsetInterval(() => console.log('tick ' + (i++)), 200)\n")
  const eventer = writeApp(home, 'eventer.js',
    "let seq = 0\nsetInterval(() => process.send({ type: 'human:event', data: { __name: 'seq', seq: seq++ } }), 100)\n")
  await pm2(home, ['start', logger, '--name', 'logger'])
  await pm2(home, ['start', eventer, '--name', 'eventer'])
})

test.after(async () => {
  await killAgent()
  await killPm2(home)
  for (const c of closers) await c()
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true })
  fs.rmSync(home, { recursive: true, force: true })
})

/**
 * Launches the agent against a backend that offers `ws` plus push/reverse
 * at `push`/`reverse`; checks a status with both apps arrives over the
 * WebSocket within `withinMs` of the launch and that getInteractInfo names
 * the failed Axon endpoints with `reason`.
 */
async function expectFallback ({ push, reverse, reason, withinMs, tls }) {
  const backend = await new Backend({
    tls,
    verify: () => backend.activeAnswer({ endpoints: { web: 'http://127.0.0.1/web', ws: backend.wsUrl, push, reverse } })
  }).start()
  closers.push(() => backend.stop())
  const t0 = Date.now()
  const msg = await launchAgent(backend, KEYS)
  assert.equal(msg.error, false)
  await backend.waitFor(bothApps, withinMs, 'a status with both apps over the WebSocket')
  const took = Date.now() - t0
  assert.ok(took <= withinMs, `status after ${took} ms`)
  const infos = await getInfos()
  assert.equal(infos.connected, true)
  assert.deepEqual(infos.transporters, ['WebsocketTransport'])
  const route = infos.transport.routes[0]
  assert.equal(route.carrier, 'WebsocketTransport')
  const [axon, ws] = route.transporters
  assert.equal(axon.name, 'AxonTransport')
  assert.equal(axon.role, 'configured')
  assert.ok(['failed', 'connecting'].includes(axon.state), axon.state)
  assert.ok(axon.endpoint.includes(push.replace(/^\w+:\/\//, '')), axon.endpoint)
  assert.match(axon.last_error, reason)
  assert.equal(axon.carrying, false)
  assert.equal(ws.name, 'WebsocketTransport')
  assert.equal(ws.role, 'fallback')
  assert.equal(ws.state, 'connected')
  assert.equal(ws.carrying, true)
  assert.equal(typeof ws.since, 'number')
  // One line in agent.log says why, with the endpoint and the reason.
  const line = agentLog().split('\n').filter((l) => l.includes('WebSocket fallback')).pop()
  assert.ok(line && line.includes('AxonTransport') && reason.test(line), line)
  await killAgent()
}

test('(a) push/reverse answered by an HTTP server: WebSocket within 3 s, reason named', async () => {
  const server = http.createServer((req, res) => res.end('not axon'))
  const port = await listen(server)
  closers.push(() => new Promise((resolve) => server.close(() => resolve())))
  await expectFallback({ push: `tcp://127.0.0.1:${port}`, reverse: `tcp://127.0.0.1:${port}`, reason: /HTTP response/, withinMs: 3000 })
})

test('(b) push/reverse on a closed port: WebSocket within 3 s, connection refused', async () => {
  const server = net.createServer()
  const port = await listen(server)
  await new Promise((resolve) => server.close(() => resolve()))
  await expectFallback({ push: `tcp://127.0.0.1:${port}`, reverse: `tcp://127.0.0.1:${port}`, reason: /refused/i, withinMs: 3000 })
})

test('(c) push/reverse accepting and never speaking: WebSocket within 15 s', async () => {
  const sockets = new Set()
  const server = net.createServer((s) => { sockets.add(s); s.on('error', () => {}) })
  const port = await listen(server)
  closers.push(() => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }))
  await expectFallback({ push: `tcp://127.0.0.1:${port}`, reverse: `tcp://127.0.0.1:${port}`, reason: /did not ask to authenticate/, withinMs: 15000 })
})

test('(d) push/reverse on a TLS backend: WebSocket (wss) within 3 s, TLS named', async () => {
  const pki = makeTestPki(fs.mkdtempSync(path.join(os.tmpdir(), 'ka-fallback-pki-')))
  tmpDirs.push(path.dirname(pki.caFile))
  process.env.PM2_AGENT_CA_FILE = pki.caFile
  try {
    const holder = {}
    // push/reverse point at the TLS backend's own port.
    const backend = await new Backend({
      tls: pki,
      verify: () => backend.activeAnswer({ endpoints: { web: 'http://127.0.0.1/web', ws: backend.wsUrl, push: `tcp://127.0.0.1:${backend.port}`, reverse: `tcp://127.0.0.1:${backend.port}` } })
    }).start()
    holder.backend = backend
    closers.push(() => backend.stop())
    const t0 = Date.now()
    await launchAgent(backend, KEYS)
    await backend.waitFor(bothApps, 3000, 'a status with both apps over wss')
    assert.ok(Date.now() - t0 <= 3000)
    const infos = await getInfos()
    const [axon, ws] = infos.transport.routes[0].transporters
    assert.match(axon.last_error, /TLS/) // an alert, or a close when sent a line
    assert.equal(ws.carrying, true)
    await killAgent()
  } finally {
    delete process.env.PM2_AGENT_CA_FILE
  }
})

test('a real Axon backend is chosen and no WebSocket is opened; Axon dying moves traffic to WebSocket and back, events contiguous', async () => {
  const axonBackend = await new AxonBackend(KEYS.secret_key).start()
  closers.push(() => axonBackend.stop())
  const backend = await new Backend({
    verify: () => backend.activeAnswer({ endpoints: Object.assign({ web: 'http://127.0.0.1/web', ws: backend.wsUrl }, axonBackend.endpoints) })
  }).start()
  closers.push(() => backend.stop())
  await launchAgent(backend, KEYS)
  await waitUntil(() => seqsOf(axonBackend.received).length > 5, 20000, 100, 'events over Axon')
  assert.equal(backend.wsHandshakes.length, 0, 'no WebSocket while Axon is proven')
  let infos = await getInfos()
  assert.deepEqual(infos.transporters, ['AxonTransport'])
  assert.equal(infos.transport.routes[0].transporters[1].state, 'standby')

  // Axon goes away: the traffic moves to the WebSocket.
  const ports = { push: axonBackend.pushPort, reverse: axonBackend.reversePort }
  await axonBackend.stop()
  await waitUntil(() => seqsOf(backend.received).length > 5, 20000, 100, 'events over the WebSocket')
  infos = await getInfos()
  assert.equal(infos.transport.routes[0].carrier, 'WebsocketTransport')

  // Axon comes back on the same endpoints: it takes the traffic back.
  const back = new AxonBackend(KEYS.secret_key)
  await back.start(ports)
  closers.push(() => back.stop())
  await waitUntil(() => seqsOf(back.received).length > 5, 30000, 100, 'events over Axon again')
  await waitUntil(async () => (await getInfos()).transport.routes[0].transporters[1].state === 'standby', 20000, 100, 'WebSocket back to standby')
  infos = await getInfos()
  assert.deepEqual(infos.transporters, ['AxonTransport'])

  // Every event from the first Axon one to the last received: contiguous
  // across the three connections, none duplicated.
  const all = [...seqsOf(axonBackend.received), ...seqsOf(backend.received), ...seqsOf(back.received)]
  const sorted = [...all].sort((a, b) => a - b)
  assert.equal(new Set(all).size, all.length, 'no event twice')
  const lo = sorted[0]
  const hi = sorted[sorted.length - 1]
  const missing = []
  for (let i = lo; i <= hi; i++) if (!all.includes(i)) missing.push(i)
  assert.deepEqual(missing, [], `events ${lo}..${hi} contiguous`)
  await killAgent()
})
