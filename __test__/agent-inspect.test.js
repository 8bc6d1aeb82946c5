'use strict'
// Black-box: PM2_AGENT_INSPECT. The agent, linked to the local PM2.io
// stand-in over WebSocket, serves on 127.0.0.1 a token-guarded view of every
// packet it hands to its transporters (docs/inspector.md); the token is only
// in $PM2_HOME/agent-inspect.url. A bad value is reported, not fatal.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const net = require('net')
const os = require('os')
const path = require('path')
const { isDeepStrictEqual } = require('util')
const { tmpHome, waitUntil } = require('./helpers/pm2')

const home = tmpHome('ka-inspect-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_INSPECT = '0'
const { launchAgent, idleStage, getInfos, killAgent, agentLog } = require('./helpers/agent')

const KEYS = { secret_key: 'secret-inspect-s3cr3t', public_key: 'pub-inspect', machine_name: 'inspect-machine' }
const URL_FILE = path.join(home, 'agent-inspect.url')
let stage
let backend
let url // http://127.0.0.1:<port>/?token=<token>
let token
let base // http://127.0.0.1:<port>/

const hasApp = (m) => m.channel === 'status' && Array.isArray(m.payload.data.process) &&
  m.payload.data.process.some((p) => p.name === 'idle')

async function get (target, init) {
  const res = await fetch(new URL(target, base), init)
  return { status: res.status, type: res.headers.get('content-type') || '', body: await res.text() }
}

async function traffic () {
  const r = await get(`api/traffic?token=${token}`)
  assert.equal(r.status, 200, r.body)
  assert.match(r.type, /^application\/json/)
  return { doc: JSON.parse(r.body), raw: r.body }
}

test.before(async () => {
  stage = await idleStage(home)
  backend = stage.backend
  await launchAgent(backend, KEYS)
  await backend.waitFor(hasApp, 20000, 'a status with the app')
  await waitUntil(() => fs.existsSync(URL_FILE), 10000, 100, 'agent-inspect.url')
  url = fs.readFileSync(URL_FILE, 'utf8').trim()
  const m = /^(http:\/\/127\.0\.0\.1:\d+\/)\?token=([0-9a-f]{32})$/.exec(url)
  assert.ok(m, `URL file: ${JSON.stringify(url)}`)
  base = m[1]
  token = m[2]
})

test.after(() => stage.teardown())

test('the URL file is private; getInfos and agent.log give the URL without the token', async () => {
  assert.equal(fs.statSync(URL_FILE).mode & 0o777, 0o600)
  const infos = await getInfos()
  assert.deepEqual(infos.inspect, { url: base, url_file: URL_FILE })
  assert.ok(!JSON.stringify(infos).includes(token), 'no token in getInfos')
  const log = agentLog()
  assert.ok(log.includes(`inspector listening on ${base} (URL with token in ${URL_FILE})`), log)
  assert.ok(!log.includes(token), 'no token in agent.log')
})

test('/api/traffic lists what the backend received, byte for byte', async () => {
  // One packet on a channel of its own: a remote action's reply.
  backend.send('trigger:pm2:action', { method_name: 'startLogging', parameters: {} })
  const reply = await backend.waitFor((p) => p.channel === 'trigger:pm2:result')
  const { doc } = await traffic()
  assert.equal(doc.source, 'agent')
  assert.ok(doc.started_at <= doc.now)
  const names = doc.channels.map((c) => c.channel)
  assert.deepEqual(names, [...names].sort(), 'sorted by channel name')

  const result = doc.channels.find((c) => c.channel === 'trigger:pm2:result')
  assert.ok(result, names.join(','))
  assert.equal(result.packets, 1)
  // The agent's JSON text of the packet as handed to the transporter, and
  // what the backend received, re-serialized in the contract's key order.
  const text = JSON.stringify({ channel: reply.channel, payload: reply.payload })
  assert.equal(result.bytes, Buffer.byteLength(text))
  assert.equal(result.last.length, 1)
  assert.equal(result.last[0].bytes, result.bytes)
  assert.deepEqual(result.last[0].data, { channel: reply.channel, payload: reply.payload })
  assert.equal(result.per_minute.reduce((a, b) => a + b, 0), result.bytes)

  const status = doc.channels.find((c) => c.channel === 'status')
  assert.ok(status && status.packets > 0, names.join(','))
  assert.ok(status.last.length >= 1 && status.last.length <= 10)
  assert.ok(status.bytes >= status.last.reduce((n, k) => n + k.bytes, 0))
  for (const k of status.last) assert.equal(k.bytes, Buffer.byteLength(JSON.stringify(k.data)))
  // The newest recorded status reached the backend as it is shown.
  const newest = status.last[0].data
  // (Patches applied, in case WS_JSON_PATCH is on.)
  await waitUntil(() => backend.statuses.some((s) => isDeepStrictEqual(s, newest.payload)), 20000, 100,
    'the newest recorded status at the backend')
})

test('the page is served at / and /inspector; the secret key is nowhere', async () => {
  for (const p of ['', 'inspector']) {
    const r = await get(`${p}?token=${token}`)
    assert.equal(r.status, 200)
    assert.match(r.type, /^text\/html/)
    assert.match(r.body, /<title>[^<]*traffic/i)
    assert.ok(r.body.includes('api/traffic'))
    assert.ok(!r.body.includes(KEYS.secret_key))
  }
  const { raw } = await traffic()
  assert.ok(!raw.includes(KEYS.secret_key), 'no secret in /api/traffic')
  for (const f of fs.readdirSync(home).filter((n) => n.startsWith('agent-inspect'))) {
    assert.ok(!fs.readFileSync(path.join(home, f), 'utf8').includes(KEYS.secret_key), f)
  }
})

test('no token or a bad one: 403; other methods: 405 with the token, 403 without', async () => {
  for (const target of ['', 'inspector', 'api/traffic', 'nowhere', `api/traffic?token=${'0'.repeat(32)}`,
    `api/traffic?token=${token.slice(1)}`, `api/traffic?token=${token}0`]) {
    const r = await get(target)
    assert.equal(r.status, 403, target)
    assert.equal(r.body, 'forbidden')
  }
  assert.equal((await get(`nowhere?token=${token}`)).status, 404)
  assert.equal((await get(`api/traffic?token=${token}`, { method: 'POST', body: 'x' })).status, 405)
  assert.equal((await get('api/traffic', { method: 'POST', body: 'x' })).status, 403)
  assert.equal((await get(`api/traffic?token=${token}`, { method: 'DELETE' })).status, 405)
})

test('the inspector listens on 127.0.0.1 only', async (t) => {
  const addr = Object.values(os.networkInterfaces()).flat()
    .find((i) => i && i.family === 'IPv4' && !i.internal)
  if (!addr) return t.skip('this machine has no non-loopback IPv4 address to try')
  const port = Number(new URL(base).port)
  const err = await new Promise((resolve) => {
    const s = net.connect({ host: addr.address, port })
    s.on('connect', () => { s.destroy(); resolve(null) })
    s.on('error', resolve)
  })
  assert.ok(err, `${addr.address}:${port} accepted a connection`)
  assert.equal(err.code, 'ECONNREFUSED')
})

test('a clean stop removes the URL file; a bad value is reported and the agent still works', async () => {
  await killAgent()
  assert.ok(!fs.existsSync(URL_FILE), 'URL file removed at a clean stop')
  process.env.PM2_AGENT_INSPECT = 'not-a-port'
  try {
    const before = backend.received.length
    await launchAgent(backend, KEYS)
    await backend.waitFor((m) => backend.received.indexOf(m) >= before && hasApp(m), 20000, 'a status after the relaunch')
    const infos = await getInfos()
    assert.match(infos.inspect.error, /PM2_AGENT_INSPECT must be a port number .*"not-a-port"/)
    assert.ok(!fs.existsSync(URL_FILE))
    const lines = agentLog().split('\n').filter((l) => l.includes('PM2_AGENT_INSPECT must be a port number'))
    assert.equal(lines.length, 1, lines.join('\n'))
  } finally {
    process.env.PM2_AGENT_INSPECT = '0'
  }
})
