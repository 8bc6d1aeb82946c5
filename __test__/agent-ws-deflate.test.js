'use strict'
// Black-box: WS_GZIP, permessage-deflate (RFC 7692) against the real `ws`
// library. The backend's `ws` server has perMessageDeflate on with
// threshold 0, so every message it sends the agent is compressed too. With
// WS_GZIP=true the agent offers the extension like the JS agent, `ws`
// agrees, inflates the agent's statuses, and a remote action it sends
// compressed reaches PM2 and is answered; without WS_GZIP nothing is
// offered and everything travels plain. Real PM2; only PM2.io is a stand-in.

const test = require('node:test')
const assert = require('node:assert/strict')
const { Backend } = require('./helpers/backend')
const { tmpHome, pm2, jlist, writeApp, killPm2, waitUntil } = require('./helpers/pm2')
const { launchAgent, getInfos, killAgent, agentLog } = require('./helpers/agent')

const home = tmpHome('ka-deflate-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.WS_JSON_PATCH = 'true' // as `pm2 link` sets it
delete process.env.WS_GZIP
delete process.env.AGENT_TRANSPORT_AXON
delete process.env.AGENT_TRANSPORT_WEBSOCKET

const KEYS = { secret_key: 'deflate-secret-key', public_key: 'deflate-pub', machine_name: 'deflate-machine' }
const backends = []

async function backend () {
  const b = await new Backend({ perMessageDeflate: { threshold: 0 }, inspectFrames: true }).start()
  backends.push(b)
  return b
}

/** The WebSocket transporter's entry in getInfos. */
async function wsInfo () {
  const infos = await getInfos()
  return infos.transport.routes[0].transporters.find((t) => t.name === 'WebsocketTransport')
}

test.before(async () => {
  await pm2(home, ['start', writeApp(home, 'idle.js', 'setInterval(() => {}, 1000)\n'), '--name', 'idle'])
})

test.after(async () => {
  delete process.env.WS_GZIP
  await killAgent()
  await killPm2(home)
  for (const b of backends) await b.stop()
})

test('WS_GZIP=true: permessage-deflate with ws both ways, a compressed remote action reaches PM2', async () => {
  process.env.WS_GZIP = 'true'
  const b = await backend()
  const msg = await launchAgent(b, KEYS)
  assert.equal(msg.error, false)
  await b.waitConnected()
  const hs = b.wsHandshakes[b.wsHandshakes.length - 1]
  // Byte for byte what `ws` offers with perMessageDeflate on, and agreed.
  assert.equal(hs.headers['sec-websocket-extensions'], 'permessage-deflate; client_max_window_bits')
  await waitUntil(() => hs.extensions !== null, 10000, 50, 'the upgrade to complete')
  assert.equal(hs.extensions, 'permessage-deflate')

  // Statuses arrive, inflated by ws, with the real process list; they
  // travelled compressed.
  const before = b.statuses.length
  await waitUntil(() => b.statuses.length >= before + 3, 20000, 100, 'three statuses')
  const names = b.lastStatus.data.process.map((p) => p.name)
  assert.ok(names.includes('idle'), names.join(','))
  assert.equal(b.lastStatus.server_name, KEYS.machine_name)
  assert.ok(b.frames.compressed >= 3, `compressed messages from the agent: ${JSON.stringify(b.frames)}`)

  // A remote action, compressed by ws, reaches PM2; the answer comes back.
  const restarts = (await jlist(home)).find((p) => p.name === 'idle').pm2_env.restart_time
  const sentBefore = b.sentFrames.compressed
  b.send('trigger:pm2:action', { method_name: 'restart', parameters: { name: 'idle' } })
  const res = await b.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'restart')
  assert.deepEqual(res.payload.ret, { err: null })
  assert.equal(b.sentFrames.compressed, sentBefore + 1, 'ws sent the action compressed')
  await waitUntil(async () => (await jlist(home)).find((p) => p.name === 'idle').pm2_env.restart_time > restarts,
    20000, 200, 'PM2 to restart the app')

  // getInfos and agent.log say so.
  assert.equal((await wsInfo()).compression, 'permessage-deflate')
  assert.match(agentLog(), /WebSocket compression \(WS_GZIP\): permessage-deflate/)
  await killAgent()
})

test('without WS_GZIP nothing is offered and everything travels plain', async () => {
  delete process.env.WS_GZIP
  const b = await backend()
  const msg = await launchAgent(b, KEYS)
  assert.equal(msg.error, false)
  await b.waitConnected()
  const hs = b.wsHandshakes[b.wsHandshakes.length - 1]
  assert.equal(hs.headers['sec-websocket-extensions'], undefined)
  await waitUntil(() => b.statuses.length >= 2, 20000, 100, 'two statuses')
  assert.equal(hs.extensions, '')
  b.send('trigger:pm2:action', { method_name: 'startLogging', parameters: {} })
  const res = await b.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === 'startLogging')
  assert.deepEqual(res.payload.ret, { err: null, data: 'Log streaming enabled' })
  assert.equal(b.frames.compressed, 0)
  assert.ok(b.frames.plain >= 3, JSON.stringify(b.frames))
  assert.equal(b.sentFrames.compressed, 0)
  assert.ok(b.sentFrames.plain >= 1)
  assert.equal((await wsInfo()).compression, null)
})
