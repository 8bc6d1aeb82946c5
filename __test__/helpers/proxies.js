'use strict'
// Loopback proxies for black-box tests, recording what the agent asked of
// them:
// - ConnectProxy: an HTTP proxy that only does CONNECT (what the agent uses
//   for every target), optionally requiring Basic credentials (407 otherwise)
//   and optionally served over TLS (an `https://` proxy);
// - SocksProxy: a SOCKS5 proxy (RFC 1928) with the no-auth method or RFC 1929
//   username/password, CONNECT only, IPv4 / domain name / IPv6 addresses.
// Both refuse targets that are not loopback, and remember the local port of
// every connection they open upstream, so a test can tell whether a request
// the backend received came through them.
// - TcpRelay: a plain TCP relay that can stop forwarding without closing
//   (a peer gone without a FIN, as far as the agent can tell).
// Also: makeTestPki(), a test CA and a server certificate for 127.0.0.1 and
// localhost signed by it (openssl CLI, else a tiny Rust example with rcgen).

const net = require('net')
const http = require('http')
const https = require('https')
const fs = require('fs')
const path = require('path')
const { execFileSync } = require('child_process')

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1'])

function listen (server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.removeListener('error', reject)
      resolve(server.address().port)
    })
  })
}

/** Splits `host:port` / `[v6]:port`; null when malformed. */
function splitHostPort (authority) {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(authority || '')
  if (!m) return null
  const port = Number(m[3])
  if (port < 1 || port > 65535) return null
  return { host: m[1] || m[2], port }
}

/** Pipes two sockets together, tearing both down when either side goes. */
function splice (a, b) {
  a.pipe(b)
  b.pipe(a)
  const kill = () => { a.destroy(); b.destroy() }
  a.on('error', kill)
  b.on('error', kill)
  a.on('close', kill)
  b.on('close', kill)
}

class ConnectProxy {
  /**
   * @param {{user?: string, pass?: string, tls?: {key, cert}}} [opts]
   *   credentials to require; key and certificate to serve TLS with
   */
  constructor (opts = {}) {
    this.tls = opts.tls || null
    this.tlsErrors = [] // failed TLS handshakes (https:// proxy only)
    this.auth = opts.user !== undefined ? `${opts.user}:${opts.pass || ''}` : null
    this.targets = [] // every CONNECT authority asked for, accepted or not
    this.tunnels = 0 // tunnels established
    this.authFailures = 0 // CONNECTs refused with 407
    this.upstreamPorts = new Set() // local ports of our connections to targets
    this.sockets = new Set()
  }

  get scheme () { return this.tls ? 'https' : 'http' }
  get url () { return `${this.scheme}://127.0.0.1:${this.port}` }

  /** The proxy URL with credentials (given ones, or the required ones). */
  urlWith (user, pass) {
    return `${this.scheme}://${encodeURIComponent(user)}:${encodeURIComponent(pass)}@127.0.0.1:${this.port}`
  }

  async start () {
    const handler = (req, res) => {
      // Only CONNECT is supported (the agent tunnels plain HTTP too).
      res.writeHead(405, { Connection: 'close' })
      res.end()
    }
    this.server = this.tls
      ? https.createServer({ key: this.tls.key, cert: this.tls.cert }, handler)
      : http.createServer(handler)
    if (this.tls) this.server.on('tlsClientError', (err) => this.tlsErrors.push(err))
    this.server.on('connection', (s) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    this.server.on('connect', (req, client, head) => this._onConnect(req, client, head))
    this.port = await listen(this.server)
    return this
  }

  _onConnect (req, client, head) {
    this.sockets.add(client)
    client.on('close', () => this.sockets.delete(client))
    client.on('error', () => client.destroy())
    this.targets.push(req.url)
    const refuse = (status, extra = '') => {
      client.end(`HTTP/1.1 ${status}\r\n${extra}Content-Length: 0\r\nConnection: close\r\n\r\n`)
    }
    if (this.auth !== null) {
      const want = 'Basic ' + Buffer.from(this.auth).toString('base64')
      if (req.headers['proxy-authorization'] !== want) {
        this.authFailures++
        return refuse('407 Proxy Authentication Required', 'Proxy-Authenticate: Basic realm="test"\r\n')
      }
    }
    const target = splitHostPort(req.url)
    if (!target) return refuse('400 Bad Request')
    if (!LOOPBACK.has(target.host)) return refuse('403 Forbidden')
    const upstream = net.connect(target.port, target.host)
    this.sockets.add(upstream)
    upstream.on('close', () => this.sockets.delete(upstream))
    upstream.once('error', () => refuse('502 Bad Gateway'))
    upstream.once('connect', () => {
      upstream.removeAllListeners('error')
      this.upstreamPorts.add(upstream.localPort)
      this.tunnels++
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head && head.length) upstream.write(head)
      splice(client, upstream)
    })
  }

  async stop () {
    for (const s of this.sockets) s.destroy()
    if (this.server) await new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** Reads exactly `n` bytes from a paused-mode socket reader. */
class Reader {
  constructor (socket) {
    this.socket = socket
    this.buf = Buffer.alloc(0)
    this.waiter = null
    this.ended = false
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d])
      this._wake()
    })
    socket.on('end', () => { this.ended = true; this._wake() })
    socket.on('close', () => { this.ended = true; this._wake() })
  }

  _wake () {
    if (this.waiter) { const w = this.waiter; this.waiter = null; w() }
  }

  async take (n) {
    while (this.buf.length < n) {
      if (this.ended) throw new Error('client went away')
      await new Promise((resolve) => { this.waiter = resolve })
    }
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }

  /** Whatever arrived beyond the handshake, and stop buffering. */
  detach () {
    this.socket.removeAllListeners('data')
    this.socket.removeAllListeners('end')
    const rest = this.buf
    this.buf = Buffer.alloc(0)
    return rest
  }
}

class SocksProxy {
  /** @param {{user?: string, pass?: string}} [opts] credentials to require */
  constructor (opts = {}) {
    this.user = opts.user
    this.pass = opts.pass
    this.greetings = [] // methods offered by each client, e.g. [0, 2]
    this.authAttempts = [] // {user, ok}
    this.requests = [] // {type: 'ipv4'|'domain'|'ipv6', host, port}
    this.tunnels = 0
    this.upstreamPorts = new Set()
    this.sockets = new Set()
  }

  get needsAuth () { return this.user !== undefined }

  url (scheme = 'socks5', user, pass) {
    const creds = user !== undefined ? `${encodeURIComponent(user)}:${encodeURIComponent(pass)}@` : ''
    return `${scheme}://${creds}127.0.0.1:${this.port}`
  }

  async start () {
    this.server = net.createServer((s) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
      s.on('error', () => s.destroy())
      this._handle(s).catch(() => s.destroy())
    })
    this.port = await listen(this.server)
    return this
  }

  async _handle (s) {
    const r = new Reader(s)
    const [ver, nMethods] = await r.take(2)
    if (ver !== 5) return s.destroy()
    const methods = [...await r.take(nMethods)]
    this.greetings.push(methods)
    const want = this.needsAuth ? 0x02 : 0x00
    if (!methods.includes(want)) {
      s.end(Buffer.from([5, 0xff]))
      return
    }
    s.write(Buffer.from([5, want]))
    if (this.needsAuth) {
      const [authVer, ulen] = await r.take(2)
      const user = (await r.take(ulen)).toString()
      const [plen] = await r.take(1)
      const pass = (await r.take(plen)).toString()
      const ok = authVer === 1 && user === this.user && pass === this.pass
      this.authAttempts.push({ user, ok })
      if (!ok) {
        s.end(Buffer.from([1, 1]))
        return
      }
      s.write(Buffer.from([1, 0]))
    }
    const [v, cmd, , atyp] = await r.take(4)
    const reply = (code) => Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
    if (v !== 5) return s.destroy()
    let type, host
    if (atyp === 1) {
      type = 'ipv4'
      host = [...await r.take(4)].join('.')
    } else if (atyp === 3) {
      type = 'domain'
      const [len] = await r.take(1)
      host = (await r.take(len)).toString()
    } else if (atyp === 4) {
      type = 'ipv6'
      const b = await r.take(16)
      const groups = []
      for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16))
      host = groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')
    } else {
      s.end(reply(8)) // address type not supported
      return
    }
    const port = (await r.take(2)).readUInt16BE(0)
    this.requests.push({ type, host, port })
    if (cmd !== 1) { s.end(reply(7)); return } // command not supported
    if (!LOOPBACK.has(host)) { s.end(reply(2)); return } // not allowed
    const upstream = net.connect(port, host)
    this.sockets.add(upstream)
    upstream.on('close', () => this.sockets.delete(upstream))
    upstream.once('error', () => s.end(reply(5))) // connection refused
    upstream.once('connect', () => {
      upstream.removeAllListeners('error')
      this.upstreamPorts.add(upstream.localPort)
      this.tunnels++
      const rest = r.detach()
      s.write(reply(0))
      if (rest.length) upstream.write(rest)
      splice(s, upstream)
    })
  }

  async stop () {
    for (const s of this.sockets) s.destroy()
    if (this.server) await new Promise((resolve) => this.server.close(() => resolve()))
  }
}

function hasOpenssl () {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' })
    return true
  } catch (e) {
    return false
  }
}

function opensslPki (dir) {
  const f = (name) => path.join(dir, name)
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  run(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2',
    '-subj', '/CN=keymetrics-agent test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  run(['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost'])
  fs.writeFileSync(f('server.ext'), [
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    ''
  ].join('\n'))
  run(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'),
    '-set_serial', '0x' + require('crypto').randomBytes(8).toString('hex'),
    '-days', '2', '-extfile', f('server.ext'), '-out', f('server.pem')])
}

function rcgenPki (dir) {
  // examples/test_pki.rs: same files, made with rcgen (a dev-dependency).
  execFileSync('cargo', ['run', '--quiet', '--release', '--example', 'test_pki', '--', dir], {
    cwd: path.join(__dirname, '..', '..'),
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 15 * 60 * 1000
  })
}

/**
 * A test CA and a server certificate for 127.0.0.1 and localhost, written
 * into `dir`. Returns the paths and the server's key and certificate.
 * @param {string} dir
 * @param {'openssl'|'rcgen'} [how] default: openssl when available
 */
function makeTestPki (dir, how) {
  how = how || (hasOpenssl() ? 'openssl' : 'rcgen')
  if (how === 'openssl') opensslPki(dir)
  else rcgenPki(dir)
  const caFile = path.join(dir, 'ca.pem')
  return {
    how,
    caFile,
    key: fs.readFileSync(path.join(dir, 'server.key')),
    cert: fs.readFileSync(path.join(dir, 'server.pem'))
  }
}

/**
 * A plain TCP relay from a loopback port to `targetPort` that can stop
 * forwarding without closing anything, as a hung peer or a middlebox that
 * black-holes a flow would. `freeze()` stops reading both sides of every
 * connection: their kernels still acknowledge what fits in the receive
 * buffers, then the TCP windows close; no FIN, no RST, and keepalive probes
 * are still answered. Connections accepted while frozen are held, not
 * forwarded. `thaw()` forwards again: frozen connections resume and held
 * ones are connected upstream.
 */
class TcpRelay {
  constructor (targetPort, targetHost = '127.0.0.1') {
    this.target = { port: targetPort, host: targetHost }
    this.frozen = false
    this.accepted = 0 // connections accepted, held ones included
    this.pairs = new Set() // { client, upstream } being forwarded
    this.held = new Set() // clients accepted while frozen
  }

  get url () { return `tcp://127.0.0.1:${this.port}` }

  async start () {
    this.server = net.createServer((client) => this._onClient(client))
    this.port = await listen(this.server)
    return this
  }

  _onClient (client) {
    this.accepted++
    client.on('error', () => client.destroy())
    if (this.frozen) {
      client.pause()
      this.held.add(client)
      client.on('close', () => this.held.delete(client))
      return
    }
    this._forward(client)
  }

  _forward (client) {
    const upstream = net.connect(this.target.port, this.target.host)
    const pair = { client, upstream }
    this.pairs.add(pair)
    upstream.on('error', () => upstream.destroy())
    const kill = () => {
      client.destroy()
      upstream.destroy()
      this.pairs.delete(pair)
    }
    client.on('close', kill)
    upstream.on('close', kill)
    client.pipe(upstream)
    upstream.pipe(client)
  }

  freeze () {
    this.frozen = true
    for (const { client, upstream } of this.pairs) {
      client.unpipe(upstream)
      upstream.unpipe(client)
      client.pause()
      upstream.pause()
    }
  }

  thaw () {
    this.frozen = false
    for (const { client, upstream } of this.pairs) {
      client.pipe(upstream)
      upstream.pipe(client)
    }
    for (const client of this.held) {
      this.held.delete(client)
      if (!client.destroyed) this._forward(client)
    }
  }

  async stop () {
    for (const { client, upstream } of this.pairs) { client.destroy(); upstream.destroy() }
    for (const client of this.held) client.destroy()
    this.pairs.clear()
    this.held.clear()
    if (this.server) await new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** A loopback port nothing listens on (bound, then released). */
async function closedPort () {
  const server = net.createServer()
  const port = await listen(server)
  await new Promise((resolve) => server.close(resolve))
  return port
}

module.exports = { ConnectProxy, SocksProxy, TcpRelay, makeTestPki, closedPort }
