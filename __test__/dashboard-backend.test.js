'use strict'
// dashboard/backend.js, the local backend of `npm start`: who gets in (the
// token for the page and its API, the run's keys for the agent's side), what
// it serves, and the trigger packets its actions send. The browser test
// (dashboard.test.js) drives the same backend with the real agent and PM2.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const http = require('http')
const os = require('os')
const path = require('path')
const WebSocket = require('ws')
const { DashboardBackend, safeEqual } = require('../dashboard/backend')

const KEYS = { public_key: 'pub-dash', secret_key: 'sec-dash' }
const webDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-web-'))
fs.writeFileSync(path.join(webDir, 'dashboard.html'), '<!doctype html><title>dash</title>')
let backend

function request (method, url, { body, headers } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}
const get = (p) => request('GET', backend.url + p)
const postJson = (p, obj) => request('POST', backend.url + p, { body: JSON.stringify(obj), headers: { 'Content-Type': 'application/json' } })

/** A WebSocket client with the agent's headers; resolves once open (or rejects with the refusal). */
function agentSocket (keys = KEYS) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${backend.port}/interaction`, {
      headers: { 'X-KM-PUBLIC': keys.public_key, 'X-KM-SECRET': keys.secret_key, 'X-KM-SERVER': 'm1', 'X-PROTOCOL-VERSION': '1' }
    })
    ws.received = []
    ws.on('message', (d) => ws.received.push(JSON.parse(d.toString())))
    ws.once('open', () => resolve(ws))
    ws.once('unexpected-response', (req, res) => reject(new Error(`refused: ${res.statusCode}`)))
    ws.once('error', reject)
  })
}

async function until (fn, what) {
  const deadline = Date.now() + 10000
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

test.before(async () => {
  backend = await new DashboardBackend({ keys: KEYS, webDir }).start()
})

test.after(async () => {
  await backend.stop()
  fs.rmSync(webDir, { recursive: true, force: true })
})

test('the token: 32 hex chars, fresh for each backend; compared whatever the lengths', () => {
  assert.match(backend.token, /^[0-9a-f]{32}$/)
  assert.notEqual(new DashboardBackend({ keys: KEYS }).token, backend.token)
  assert.equal(safeEqual('abc', 'abc'), true)
  assert.equal(safeEqual('abc', 'abd'), false)
  assert.equal(safeEqual('abc', 'abcd'), false)
  assert.equal(safeEqual(null, 'null'), false)
})

test('without the token, or with a wrong one, every page and API answers 403 "forbidden"', async () => {
  const wrong = '0'.repeat(32)
  for (const p of ['/', '/inspector', '/api/state', '/api/traffic', '/api/action', '/nope']) {
    for (const suffix of ['', `?token=${wrong}`, `?token=${backend.token}x`, '?token=']) {
      const r = await get(p + suffix)
      assert.equal(r.status, 403, `${p}${suffix}`)
      assert.equal(r.text, 'forbidden')
    }
  }
  const r = await postJson('/api/action', { type: 'pm2', method: 'startLogging' })
  assert.equal(r.status, 403)
  assert.ok(backend.refused.requests >= 25)
})

test('a foreign Host header is refused even with the token (no DNS rebinding)', async () => {
  const r = await request('GET', `${backend.url}/api/state?token=${backend.token}`, { headers: { Host: `evil.example:${backend.port}` } })
  assert.equal(r.status, 403)
})

test('with the token: the page (self-contained CSP, no referrer), the state, the traffic; 405 for another method', async () => {
  const page = await get(`/?token=${backend.token}`)
  assert.equal(page.status, 200)
  assert.match(page.text, /<title>dash<\/title>/)
  assert.match(page.headers['content-security-policy'], /default-src 'none'/)
  assert.match(page.headers['content-security-policy'], /connect-src 'self'/)
  assert.equal(page.headers['referrer-policy'], 'no-referrer')
  const state = JSON.parse((await get(`/api/state?token=${backend.token}`)).text)
  assert.equal(state.agents, 0)
  const traffic = JSON.parse((await get(`/api/traffic?token=${backend.token}`)).text)
  assert.equal(traffic.source, 'dashboard')
  assert.ok(Array.isArray(traffic.channels))
  const r = await request('POST', `${backend.url}/api/state?token=${backend.token}`)
  assert.equal(r.status, 405)
  assert.equal((await get(`/nope?token=${backend.token}`)).status, 404)
})

test('/inspector serves web/inspector.html, read at each request; 404 with a clear text while it is missing', async () => {
  const missing = await get(`/inspector?token=${backend.token}`)
  assert.equal(missing.status, 404)
  assert.match(missing.text, /inspector\.html is not installed/)
  fs.writeFileSync(path.join(webDir, 'inspector.html'), '<!doctype html><title>inspector</title>')
  const r = await get(`/inspector?token=${backend.token}`)
  assert.equal(r.status, 200)
  assert.match(r.text, /<title>inspector<\/title>/)
})

test('verifyPM2: active with our WebSocket endpoint for the run\'s keys only', async () => {
  const ok = JSON.parse((await request('POST', `${backend.url}/api/node/verifyPM2`, {
    body: JSON.stringify({ public_id: KEYS.public_key, private_id: KEYS.secret_key, data: {} }),
    headers: { 'Content-Type': 'application/json' }
  })).text)
  assert.equal(ok.active, true)
  assert.equal(ok.endpoints.ws, `ws://127.0.0.1:${backend.port}/interaction`)
  const bad = JSON.parse((await request('POST', `${backend.url}/api/node/verifyPM2`, {
    body: JSON.stringify({ public_id: KEYS.public_key, private_id: 'other', data: {} })
  })).text)
  assert.equal(bad.active, false)
  assert.equal(bad.error, true)
  assert.equal(bad.endpoints, undefined)
})

test('the agent\'s WebSocket: other keys are refused; packets reach the store and the traffic view', async () => {
  await assert.rejects(agentSocket({ public_key: KEYS.public_key, secret_key: 'nope' }), /refused: 403/)
  const ws = await agentSocket()
  const status = {
    data: { process: [{ pm_id: 0, name: 'app', status: 'online', restart_time: 1, axm_actions: [{ action_name: 'hello' }] }], server: { hostname: 'h' } },
    server_name: 'm1'
  }
  ws.send(JSON.stringify({ payload: status, channel: 'status' }))
  await until(() => backend.store.processes.size === 1, 'the status')
  const state = JSON.parse((await get(`/api/state?token=${backend.token}`)).text)
  assert.equal(state.agents, 1)
  assert.equal(state.processes[0].name, 'app')
  assert.equal(state.server.hostname, 'h')
  const traffic = JSON.parse((await get(`/api/traffic?token=${backend.token}`)).text)
  assert.deepEqual(traffic.channels.map((c) => c.channel), ['status'])
  assert.deepEqual(traffic.channels[0].last[0].data, { payload: status, channel: 'status' })

  // A patch with no baseline it applies to: the backend asks for a full status.
  ws.send(JSON.stringify({ payload: [{ op: 'replace', path: '/x/y', value: 1 }], channel: 'status:patch' }))
  await until(() => ws.received.some((m) => m.channel === 'status:resend'), 'status:resend')

  // Actions become the trigger packets PM2.io sends.
  const cases = [
    [{ type: 'pm2', method: 'restart', app: 'app' }, { channel: 'trigger:pm2:action', payload: { method_name: 'restart', parameters: { name: 'app' } } }],
    [{ type: 'pm2', method: 'reload', app: 'app' }, { channel: 'trigger:pm2:action', payload: { method_name: 'reload', parameters: { name: 'app' } } }],
    [{ type: 'pm2', method: 'startLogging' }, { channel: 'trigger:pm2:action', payload: { method_name: 'startLogging', parameters: {} } }],
    [{ type: 'pm2', method: 'stopLogging' }, { channel: 'trigger:pm2:action', payload: { method_name: 'stopLogging', parameters: {} } }],
    [{ type: 'custom', pm_id: 0, action: 'hello' }, { channel: 'trigger:action', payload: { process_id: 0, action_name: 'hello' } }]
  ]
  // The status was dropped by the failed patch; send it again for the action checks.
  ws.send(JSON.stringify({ payload: status, channel: 'status' }))
  await until(() => backend.store.processes.size === 1, 'the status again')
  for (const [action, expected] of cases) {
    const before = ws.received.length
    const r = await postJson(`/api/action?token=${backend.token}`, action)
    assert.equal(r.status, 200, r.text)
    await until(() => ws.received.length > before, `${expected.channel} ${JSON.stringify(action)}`)
    assert.deepEqual(ws.received[ws.received.length - 1], expected)
  }
  for (const bad of [
    { type: 'pm2', method: 'delete', app: 'app' },
    { type: 'pm2', method: 'restart', app: 'other' },
    { type: 'custom', pm_id: 0, action: 'not-declared' },
    { type: 'custom', pm_id: 7, action: 'hello' },
    { type: 'eval' }
  ]) {
    const r = await postJson(`/api/action?token=${backend.token}`, bad)
    assert.equal(r.status, 400, JSON.stringify(bad))
  }
  const form = await request('POST', `${backend.url}/api/action?token=${backend.token}`, { body: 'type=pm2', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })
  assert.equal(form.status, 415)
  const state2 = JSON.parse((await get(`/api/state?token=${backend.token}`)).text)
  assert.equal(state2.replies.filter((r) => r.direction === 'sent').length, cases.length)
  ws.close()
  await until(() => backend.agents.size === 0, 'the agent gone')
  const none = await postJson(`/api/action?token=${backend.token}`, { type: 'pm2', method: 'startLogging' })
  assert.equal(none.status, 503)
})
