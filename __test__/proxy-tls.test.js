'use strict'
// Black-box: the agent launched the way PM2 launches it
// (InteractorClient.launchAndInteract), reaching a local PM2.io stand-in
// through loopback proxies (HTTP CONNECT, SOCKS5, with and without
// credentials) and over TLS with a certificate signed by a test CA. The
// verifyPM2 request and the WebSocket handshake (X-KM-* headers) prove the
// path; PM2 itself is not running (neither needs it).
//
// Each case runs its own daemon in its own PM2_HOME, with the network
// variables set in this process's environment only while the daemon is
// spawned (it inherits them; the parent's environment wins over the
// client's defaults), and checked in the daemon's own environment.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { ConnectProxy, SocksProxy, makeTestPki, closedPort } = require('./helpers/proxies')
const { waitUntil } = require('./helpers/pm2')

// What steers the daemon's network path. Shells set some of these
// (NODE_EXTRA_CA_CERTS, HTTPS_PROXY…): cleared for the whole file, set only
// around a launch. (Node's own http client ignores them; this file makes no
// outbound HTTP request anyway: the backend and the proxies are servers.)
const NET_VARS = [
  'PM2_PROXY', 'HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy',
  'NO_PROXY', 'no_proxy', 'PM2_AGENT_CA_FILE', 'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR'
]
// Would override the launch options or change where the agent logs.
const OTHER_VARS = [
  'PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'KEYMETRICS_PUBLIC', 'KEYMETRICS_SECRET', 'PM2_MACHINE_NAME',
  'INSTANCE_NAME', 'KEYMETRICS_NODE', 'PM2_AGENT_ONLINE', 'PM2_NO_INTERACTION', 'NODE_ENV', 'TRAVIS',
  'AGENT_TRANSPORT_WEBSOCKET', 'AGENT_TRANSPORT_AXON'
]
for (const k of [...NET_VARS, ...OTHER_VARS]) delete process.env[k]

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-px-'))
process.env.PM2_HOME = fs.mkdtempSync(path.join(root, 'h'))
process.env.PM2_SILENT = 'true'
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')

const KEYS = { secret_key: 'proxy-secret-key-42', public_key: 'proxy-pub-1', machine_name: 'proxy-machine' }
const PASSWORD = 'p@ss:w/rd%' // needs percent-encoding in a URL
const enc = encodeURIComponent
let pki
const agents = new Set()

test.before(() => {
  pki = makeTestPki(fs.mkdtempSync(path.join(root, 'pki-')))
})

test.after(async () => {
  for (const agent of agents) await stopAgent(agent)
  fs.rmSync(root, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------
// The agent

function alive (pid) {
  try { process.kill(pid, 0); return true } catch (e) { return e.code === 'EPERM' }
}

function readFile (file) {
  try { return fs.readFileSync(file, 'utf8') } catch (e) { return '' }
}

/** The environment the daemon process `pid` started with (Linux), else null. */
function daemonEnv (pid) {
  if (process.platform !== 'linux') return null
  const env = {}
  for (const entry of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const i = entry.indexOf('=')
    if (i > 0) env[entry.slice(0, i)] = entry.slice(i + 1)
  }
  return env
}

/**
 * Launches the agent like `pm2 link` does, for `backend`, in a fresh
 * PM2_HOME, with `env` (network variables) in its environment only.
 */
async function launch (backend, env = {}) {
  for (const k of NET_VARS) assert.equal(process.env[k], undefined, `${k} leaked into this process`)
  for (const k of Object.keys(env)) assert.ok(NET_VARS.includes(k), k)
  const home = fs.mkdtempSync(path.join(root, 'h'))
  const cst = constants.forHome(home)
  const agent = { home, cst, pid: null, log: () => readFile(cst.INTERACTOR_LOG_FILE_PATH) }
  agents.add(agent)
  Object.assign(process.env, env, { PM2_HOME: home })
  try {
    agent.launched = new Promise((resolve) => {
      InteractorClient.launchAndInteract(cst, Object.assign({ info_node: backend.url }, KEYS),
        (err, msg) => resolve({ err, msg }))
    })
    // Spawned (with a copy of this environment) once agent.pid names it.
    agent.pid = await waitUntil(() => parseInt(readFile(cst.INTERACTOR_PID_PATH), 10) || false,
      20000, 10, 'the daemon to be spawned')
  } finally {
    for (const k of NET_VARS) delete process.env[k]
  }
  const denv = daemonEnv(agent.pid)
  if (denv) {
    const got = Object.fromEntries(NET_VARS.filter((k) => k in denv).map((k) => [k, denv[k]]))
    assert.deepEqual(got, env, 'the daemon has exactly the network variables of its case')
    assert.equal(denv.PM2_HOME, home)
  }
  return agent
}

async function stopAgent (agent) {
  if (!agents.delete(agent)) return
  if (agent.pid && alive(agent.pid)) {
    await new Promise((resolve) => InteractorClient.killInteractorDaemon(agent.cst, () => resolve()))
    try {
      await waitUntil(() => !alive(agent.pid), 10000, 50, 'the agent to exit')
    } catch (e) {
      try { process.kill(agent.pid, 'SIGKILL') } catch (e2) {}
    }
  }
  // Resolves on the daemon's answer, its exit, or the client's 7 s timeout.
  await agent.launched
}

function getInfos (agent) {
  return new Promise((resolve, reject) => {
    InteractorClient.getInteractInfo(agent.cst, (err, infos) => err ? reject(err) : resolve(infos))
  })
}

/** One case: resources started through `ctx.start` and the agent are always stopped. */
function scenario (name, fn) {
  test(name, async () => {
    const resources = []
    const ctx = {
      start: async (r) => { resources.push(r); return r.start() },
      agent: null,
      launch: async (backend, env) => { ctx.agent = await launch(backend, env); return ctx.agent }
    }
    try {
      await fn(ctx)
    } finally {
      for (const k of NET_VARS) delete process.env[k]
      if (ctx.agent) await stopAgent(ctx.agent)
      for (const r of resources.reverse()) await r.stop()
    }
  })
}

// ---------------------------------------------------------------------------
// What a working and a failing path look like

/**
 * The agent verified with `backend` and opened its WebSocket to it; with
 * `via`, every verify request and WebSocket handshake the backend got came
 * through that proxy.
 */
async function assertLinked (agent, backend, via) {
  const { err, msg } = await agent.launched
  assert.equal(err, null, err && JSON.stringify(err))
  assert.equal(msg.error, false)
  assert.equal(msg.km_data.active, true)
  assert.equal(msg.pid, agent.pid)
  await backend.waitConnected(30000)

  assert.ok(backend.verifyRequests.length >= 1)
  const v = backend.verifyRequests[0]
  assert.equal(v.body.public_id, KEYS.public_key)
  assert.equal(v.body.private_id, KEYS.secret_key)
  assert.equal(v.encrypted, Boolean(backend.tls))
  const ws = backend.wsHandshakes[0]
  assert.equal(ws.url, '/interaction')
  assert.equal(ws.headers['x-km-public'], KEYS.public_key)
  assert.equal(ws.headers['x-km-secret'], KEYS.secret_key)
  assert.equal(ws.headers['x-km-server'], KEYS.machine_name)
  assert.equal(ws.encrypted, Boolean(backend.tls))

  if (via) {
    for (const r of [...backend.verifyRequests, ...backend.wsHandshakes]) {
      assert.ok(via.upstreamPorts.has(r.remotePort), `request from port ${r.remotePort} came through the proxy`)
    }
    assert.ok(via.tunnels >= 2, `verify and WebSocket tunnels (${via.tunnels})`)
  }

  const infos = await waitUntil(async () => {
    const i = await getInfos(agent)
    return i && i.connected === true && i
  }, 20000, 100, 'getInfos to say connected')
  assert.equal(infos.last_error, undefined)
  assert.deepEqual(infos.transporters, ['WebsocketTransport'])
  assert.ok(alive(agent.pid))
}

/**
 * Verification keeps failing for `reason`: getInfos says so (not
 * connected), agent.log too, attempts are retried, the daemon runs on and
 * the backend never got a request. Returns the getInfos answer.
 */
async function assertFailing (agent, backend, reason) {
  const infos = await waitUntil(async () => {
    const i = await getInfos(agent).catch(() => null)
    return i && i.last_error && i
  }, 30000, 100, 'getInfos to report why the agent is not linked')
  assert.equal(infos.connected, false)
  assert.deepEqual(infos.transporters, [])
  assert.match(infos.last_error, reason)
  await waitUntil(() => (agent.log().match(/verifyPM2 failed: /g) || []).length >= 2, 30000, 100,
    'a retried verification in agent.log')
  const failures = agent.log().split('\n').filter((l) => l.includes('verifyPM2 failed: '))
  for (const line of failures) assert.match(line, reason)
  assert.ok(alive(agent.pid), 'the daemon keeps running')
  assert.equal(backend.verifyRequests.length, 0)
  assert.equal(backend.wsHandshakes.length, 0)
  for (const text of [infos.last_error, agent.log()]) {
    assert.ok(!text.includes(PASSWORD) && !text.includes(enc(PASSWORD)), 'no proxy password in reports')
  }
  return infos
}

const connectsTo = (proxy, backend) => proxy.targets.filter((t) => t === `127.0.0.1:${backend.port}`).length

// ---------------------------------------------------------------------------
// HTTP CONNECT proxies

scenario('PM2_PROXY: an HTTP CONNECT proxy carries verifyPM2 and the WebSocket', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const proxy = await ctx.start(new ConnectProxy())
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.url })
  await assertLinked(agent, backend, proxy)
  assert.ok(connectsTo(proxy, backend) >= 2, proxy.targets.join(','))
  assert.deepEqual(proxy.targets.filter((t) => t !== `127.0.0.1:${backend.port}`), [])
  assert.match(agent.log(), new RegExp(`proxy configured proxy=http://127\\.0\\.0\\.1:${proxy.port}`))
})

scenario('PM2_PROXY: an HTTP CONNECT proxy with Basic credentials', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const proxy = await ctx.start(new ConnectProxy({ user: 'agent', pass: PASSWORD }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.urlWith('agent', PASSWORD) })
  await assertLinked(agent, backend, proxy)
  assert.ok(connectsTo(proxy, backend) >= 2)
  assert.equal(proxy.authFailures, 0)
  assert.ok(!agent.log().includes(PASSWORD) && !agent.log().includes(enc(PASSWORD)), 'no password in agent.log')
})

scenario('a wrong HTTP proxy password is reported as a 407 and retried', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const proxy = await ctx.start(new ConnectProxy({ user: 'agent', pass: 'right' }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.urlWith('agent', PASSWORD) })
  const infos = await assertFailing(agent, backend, /proxy authentication required \(407\)/)
  assert.ok(infos.last_error.includes(`http://127.0.0.1:${proxy.port}`), infos.last_error)
  assert.ok(proxy.authFailures >= 2, `407 answered ${proxy.authFailures} times`)
  assert.equal(proxy.tunnels, 0)
})

scenario('a proxy that refuses connections is reported as such', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const port = await closedPort()
  const agent = await ctx.launch(backend, { PM2_PROXY: `http://127.0.0.1:${port}` })
  const infos = await assertFailing(agent, backend, /connection refused/)
  assert.ok(infos.last_error.includes(`proxy http://127.0.0.1:${port}`), infos.last_error)
})

scenario('PM2_PROXY=https://: a CONNECT proxy reached over TLS, trusted through PM2_AGENT_CA_FILE', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const proxy = await ctx.start(new ConnectProxy({ tls: pki, user: 'agent', pass: PASSWORD }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.urlWith('agent', PASSWORD), PM2_AGENT_CA_FILE: pki.caFile })
  await assertLinked(agent, backend, proxy)
  assert.ok(connectsTo(proxy, backend) >= 2)
  assert.equal(proxy.tlsErrors.length, 0)
})

scenario('an https:// proxy whose certificate is not trusted is reported as such', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const proxy = await ctx.start(new ConnectProxy({ tls: pki }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.url })
  await assertFailing(agent, backend, /TLS to the proxy failed: .*certificate signed by an unknown authority/)
  assert.deepEqual(proxy.targets, [])
  await waitUntil(() => proxy.tlsErrors.length >= 2, 20000, 50, 'the proxy to see rejected handshakes')
})

scenario('a WebSocket that fails through the proxy after verification shows in getInfos', async (ctx) => {
  // verifyPM2 goes direct (NO_PROXY), the WebSocket endpoint (another name)
  // through a proxy that turns our password down.
  const backend = await ctx.start(new Backend({ wsHost: 'localhost' }))
  const proxy = await ctx.start(new ConnectProxy({ user: 'agent', pass: 'right' }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.urlWith('agent', PASSWORD), NO_PROXY: '127.0.0.1' })
  const { err, msg } = await agent.launched
  assert.equal(err, null)
  assert.equal(msg.km_data.active, true)
  assert.equal(backend.verifyRequests.length, 1)
  const infos = await waitUntil(async () => {
    const i = await getInfos(agent)
    return i && i.last_error && i
  }, 30000, 100, 'getInfos to report the WebSocket failure')
  assert.equal(infos.connected, false)
  assert.match(infos.last_error, /proxy authentication required \(407\)/)
  await waitUntil(() => proxy.authFailures >= 2, 30000, 100, 'the WebSocket connection to be retried')
  assert.match(agent.log(), /WebsocketTransport failed.*proxy authentication required \(407\)/)
  assert.deepEqual([...new Set(proxy.targets)], [`localhost:${backend.port}`])
  assert.equal(backend.wsHandshakes.length, 0)
  assert.ok(alive(agent.pid))
})

// ---------------------------------------------------------------------------
// SOCKS5 proxies

scenario('PM2_PROXY=socks5://: a SOCKS5 proxy without authentication, address resolved by the agent', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const proxy = await ctx.start(new SocksProxy())
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.url('socks5') })
  await assertLinked(agent, backend, proxy)
  assert.ok(proxy.requests.length >= 2)
  for (const r of proxy.requests) assert.deepEqual(r, { type: 'ipv4', host: '127.0.0.1', port: backend.port })
  for (const g of proxy.greetings) assert.deepEqual(g, [0x00], 'only "no authentication" offered without credentials')
  assert.deepEqual(proxy.authAttempts, [])
})

scenario('PM2_PROXY=socks5h://user:pass@: SOCKS5 with credentials, the proxy resolves the name', async (ctx) => {
  const backend = await ctx.start(new Backend({ host: 'localhost' }))
  const proxy = await ctx.start(new SocksProxy({ user: 'agent', pass: PASSWORD }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.url('socks5h', 'agent', PASSWORD) })
  await assertLinked(agent, backend, proxy)
  assert.ok(proxy.requests.length >= 2)
  for (const r of proxy.requests) assert.deepEqual(r, { type: 'domain', host: 'localhost', port: backend.port })
  assert.ok(proxy.authAttempts.length >= 2)
  for (const a of proxy.authAttempts) assert.deepEqual(a, { user: 'agent', ok: true })
  assert.ok(!agent.log().includes(PASSWORD) && !agent.log().includes(enc(PASSWORD)), 'no password in agent.log')
})

scenario('a wrong SOCKS5 password is reported as such and retried', async (ctx) => {
  const backend = await ctx.start(new Backend({ host: 'localhost' }))
  const proxy = await ctx.start(new SocksProxy({ user: 'agent', pass: 'right' }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.url('socks5h', 'agent', PASSWORD) })
  const infos = await assertFailing(agent, backend, /SOCKS5 authentication failed \(wrong username or password\)/)
  assert.ok(infos.last_error.includes(`socks5h://127.0.0.1:${proxy.port}`), infos.last_error)
  assert.ok(proxy.authAttempts.length >= 2)
  for (const a of proxy.authAttempts) assert.deepEqual(a, { user: 'agent', ok: false })
  assert.deepEqual(proxy.requests, [])
})

scenario('a SOCKS5 proxy that wants credentials we do not have says so', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const proxy = await ctx.start(new SocksProxy({ user: 'agent', pass: 'right' }))
  const agent = await ctx.launch(backend, { PM2_PROXY: proxy.url('socks5') })
  await assertFailing(agent, backend, /SOCKS5 proxy requires authentication/)
  assert.deepEqual(proxy.authAttempts, [])
})

// ---------------------------------------------------------------------------
// The conventional variables

scenario('HTTPS_PROXY carries https/wss when PM2_PROXY is unset (HTTP_PROXY left alone)', async (ctx) => {
  const backend = await ctx.start(new Backend({ tls: pki }))
  const httpsProxy = await ctx.start(new ConnectProxy())
  const httpProxy = await ctx.start(new ConnectProxy())
  const agent = await ctx.launch(backend, {
    HTTPS_PROXY: httpsProxy.url, HTTP_PROXY: httpProxy.url, PM2_AGENT_CA_FILE: pki.caFile
  })
  await assertLinked(agent, backend, httpsProxy)
  assert.ok(connectsTo(httpsProxy, backend) >= 2)
  assert.deepEqual(httpProxy.targets, [])
})

scenario('HTTP_PROXY carries http/ws when PM2_PROXY is unset (HTTPS_PROXY left alone)', async (ctx) => {
  const backend = await ctx.start(new Backend())
  const httpsProxy = await ctx.start(new ConnectProxy())
  const httpProxy = await ctx.start(new SocksProxy())
  const agent = await ctx.launch(backend, { HTTPS_PROXY: httpsProxy.url, HTTP_PROXY: httpProxy.url('socks5') })
  await assertLinked(agent, backend, httpProxy)
  assert.deepEqual(httpsProxy.targets, [])
})

scenario('NO_PROXY=127.0.0.1 bypasses HTTPS_PROXY and HTTP_PROXY', async (ctx) => {
  const backend = await ctx.start(new Backend({ tls: pki }))
  const httpsProxy = await ctx.start(new ConnectProxy())
  const httpProxy = await ctx.start(new ConnectProxy())
  const agent = await ctx.launch(backend, {
    HTTPS_PROXY: httpsProxy.url, HTTP_PROXY: httpProxy.url, NO_PROXY: 'example.invalid,127.0.0.1', PM2_AGENT_CA_FILE: pki.caFile
  })
  await assertLinked(agent, backend, null)
  assert.deepEqual(httpsProxy.targets, [])
  assert.deepEqual(httpProxy.targets, [])
})

// ---------------------------------------------------------------------------
// TLS with a private CA

scenario('a TLS backend signed by an unknown CA is refused, reported and retried', async (ctx) => {
  const backend = await ctx.start(new Backend({ tls: pki }))
  const agent = await ctx.launch(backend, {})
  await assertFailing(agent, backend, /certificate signed by an unknown authority/)
  assert.match(agent.log(), /PM2_AGENT_CA_FILE or NODE_EXTRA_CA_CERTS/)
  // The agent reached the backend and turned its certificate down.
  await waitUntil(() => backend.tlsErrors.length >= 2, 20000, 50, 'the backend to see rejected handshakes')
})

scenario('PM2_AGENT_CA_FILE: the TLS backend is trusted (https verify + wss)', async (ctx) => {
  const backend = await ctx.start(new Backend({ tls: pki }))
  const agent = await ctx.launch(backend, { PM2_AGENT_CA_FILE: pki.caFile })
  await assertLinked(agent, backend, null)
  assert.equal(backend.tlsErrors.length, 0)
  assert.match(agent.log(), /extra CA certificates trusted/)
})

scenario('NODE_EXTRA_CA_CERTS: the TLS backend is trusted too', async (ctx) => {
  const backend = await ctx.start(new Backend({ tls: pki, host: 'localhost' }))
  const agent = await ctx.launch(backend, { NODE_EXTRA_CA_CERTS: pki.caFile })
  await assertLinked(agent, backend, null)
  assert.equal(backend.tlsErrors.length, 0)
})

scenario('TLS through a SOCKS5 proxy with the test CA', async (ctx) => {
  const backend = await ctx.start(new Backend({ tls: pki, host: 'localhost' }))
  const proxy = await ctx.start(new SocksProxy({ user: 'agent', pass: PASSWORD }))
  const agent = await ctx.launch(backend, {
    PM2_PROXY: proxy.url('socks5h', 'agent', PASSWORD), PM2_AGENT_CA_FILE: pki.caFile
  })
  await assertLinked(agent, backend, proxy)
  for (const r of proxy.requests) assert.deepEqual(r, { type: 'domain', host: 'localhost', port: backend.port })
})
