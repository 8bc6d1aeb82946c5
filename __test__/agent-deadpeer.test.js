'use strict'
// Dead peers on every channel. A loopback relay (helpers/proxies.js
// TcpRelay) sits between the agent and the PM2.io stand-ins and, on cue,
// stops forwarding in both directions without closing anything: its kernel
// keeps acknowledging (so TCP keepalive alone would never fire), nothing
// is read, nothing answered. The agent must notice within
// PM2_AGENT_DEAD_PEER_TIMEOUT (3 s here), say why in agent.log and
// getInfos, reconnect once the relay forwards again, and carry data again.
// - Axon (push: pm2-axon sub; reverse: nssocket server, helpers/axon-backend.js):
//   the wires have no ping; the agent sees its send queue stop draining.
// - WebSocket (helpers/backend.js): pings unanswered.
// Real PM2 with a real app emitting events. Runs in both modes.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const { Backend } = require('./helpers/backend')
const { AxonBackend } = require('./helpers/axon-backend')
const { TcpRelay } = require('./helpers/proxies')
const { tmpHome, pm2, writeApp, killPm2, waitUntil } = require('./helpers/pm2')
const { launchAgent, getInfos, killAgent, agentLog, MODE } = require('./helpers/agent')

const home = tmpHome('ka-deadpeer-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_WATCHDOG = 'false'
process.env.PM2_AGENT_DEAD_PEER_TIMEOUT = '3000'
delete process.env.WS_JSON_PATCH
delete process.env.AGENT_TRANSPORT_WEBSOCKET
delete process.env.AGENT_TRANSPORT_AXON

const KEYS = { secret_key: 'deadpeer-secret', public_key: 'deadpeer-pub', machine_name: 'deadpeer-machine' }
let backend // verifyPM2 and the WebSocket endpoint
let axonBackend
let answer = null
const relays = []

async function relay (port) {
  const r = await new TcpRelay(port).start()
  relays.push(r)
  return r
}

/** The agent's view of `name` in getInfos().transport. */
async function member (name) {
  const infos = await getInfos()
  for (const route of (infos.transport || {}).routes || []) {
    const m = route.transporters.find((t) => t.name === name)
    if (m) return { infos, m }
  }
  return { infos, m: null }
}

/**
 * Freezes `frozen`, waits for the agent to say `name` lost its peer, then
 * thaws; returns the reason logged and how long the agent took.
 */
async function loseAndRecover (t, name, frozen) {
  const logStart = agentLog().length
  const t0 = Date.now()
  for (const r of frozen) r.freeze()
  const failed = new RegExp(`${name} failed.*no answer from the peer for 3 s`)
  await waitUntil(() => failed.test(agentLog().slice(logStart)), 30000, 50, `${name} to notice the dead peer`)
  const took = Date.now() - t0
  t.diagnostic(`${MODE}: ${name} noticed the dead peer ${took} ms after the relay stopped forwarding`)
  const line = agentLog().slice(logStart).split('\n').find((l) => failed.test(l))
  assert.equal(agentLog().slice(logStart).split('\n').filter((l) => failed.test(l)).length, 1, 'said once per loss')
  // The reason stays visible in getInfos while the peer is unreachable.
  const { infos, m } = await member(name)
  assert.ok(m, JSON.stringify(infos.transport))
  assert.match(m.last_error, /no answer from the peer for 3 s/)
  assert.notEqual(m.state, 'connected')
  assert.equal(infos.connected, false)
  for (const r of frozen) r.thaw()
  return { line, took }
}

test.before(async () => {
  // ~80 KB/s of events: a peer that stops reading fills its window in
  // about a second (a real agent sends at least its status every second).
  const bulk = writeApp(home, 'bulk.js', [
    "const pad = 'x'.repeat(8192)",
    'let seq = 0',
    "setInterval(() => process.send({ type: 'human:event', data: { __name: 'bulk', seq: seq++, pad } }), 100)",
    ''
  ].join('\n'))
  axonBackend = await new AxonBackend(KEYS.secret_key).start()
  backend = await new Backend({ verify: () => answer() }).start()
  await pm2(home, ['start', bulk, '--name', 'bulk'])
})

test.after(async () => {
  await killAgent()
  await killPm2(home)
  for (const r of relays) await r.stop()
  if (backend) await backend.stop()
  if (axonBackend) await axonBackend.stop()
  fs.rmSync(home, { recursive: true, force: true })
})

test('Axon: a push and reverse peer gone silent is noticed, and the pair reopened once it answers', async (t) => {
  const push = await relay(axonBackend.pushPort)
  const reverse = await relay(axonBackend.reversePort)
  answer = () => backend.activeAnswer({ endpoints: { web: 'http://127.0.0.1/web', push: push.url, reverse: reverse.url } })
  const msg = await launchAgent(backend, KEYS)
  await waitUntil(() => axonBackend.askReps.length > 0, 20000, 50, 'ask:rep')
  await waitUntil(() => axonBackend.statuses.length >= 2, 20000, 50, 'statuses')
  const asked = axonBackend.askReps.length

  const { line } = await loseAndRecover(t, 'AxonTransport', [push, reverse])
  assert.match(line, new RegExp(`push tcp://127\\.0\\.0\\.1:${push.port}: no answer from the peer for 3 s \\(\\d+ bytes written and neither acknowledged nor read\\)`))

  // Back: a new authenticated pair, proven, and data flowing on it.
  await waitUntil(() => axonBackend.askReps.length > asked, 30000, 50, 'a new ask:rep')
  await waitUntil(async () => (await getInfos()).connected === true, 30000, 100, 'connected again')
  const statuses = axonBackend.statuses.length
  const events = axonBackend.received.filter((p) => p.channel === 'human:event').length
  await waitUntil(() => axonBackend.statuses.length >= statuses + 3, 20000, 100, 'statuses again')
  await waitUntil(() => axonBackend.received.filter((p) => p.channel === 'human:event').length > events + 5, 20000, 100, 'events again')
  const { m } = await member('AxonTransport')
  assert.equal(m.state, 'connected')
  assert.ok(m.connects >= 2, `reconnected: ${JSON.stringify(m)}`)
  // The same agent did it (no rescue, no restart).
  assert.equal(fs.readFileSync(require('../constants').INTERACTOR_PID_PATH, 'utf8').trim(), String(msg.pid))
  await killAgent()
})

test('WebSocket: a peer gone silent is noticed (pings unanswered), and the link reopened once it answers', async (t) => {
  const ws = await relay(backend.port)
  answer = () => backend.activeAnswer({ endpoints: { web: 'http://127.0.0.1/web', ws: `ws://127.0.0.1:${ws.port}/interaction` } })
  await launchAgent(backend, KEYS)
  await waitUntil(() => backend.statuses.length >= 2, 20000, 50, 'statuses over the WebSocket')
  const handshakes = backend.wsHandshakes.length

  const { line } = await loseAndRecover(t, 'WebsocketTransport', [ws])
  assert.match(line, /no answer from the peer for 3 s \(no frame, not even a pong\)/)

  await waitUntil(() => backend.wsHandshakes.length > handshakes, 30000, 50, 'a new WebSocket')
  await waitUntil(async () => (await getInfos()).connected === true, 30000, 100, 'connected again')
  const statuses = backend.statuses.length
  await waitUntil(() => backend.statuses.length >= statuses + 3, 20000, 100, 'statuses again')
  const events = backend.received.filter((p) => p.channel === 'human:event').length
  await waitUntil(() => backend.received.filter((p) => p.channel === 'human:event').length > events + 5, 20000, 100, 'events again')
  await killAgent()
})
