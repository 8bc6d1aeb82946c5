'use strict'
// A local stand-in for PM2.io, for black-box tests: `POST /api/node/verifyPM2`
// over HTTP and the WebSocket interaction endpoint on the same port. It
// records what the agent sends and can push commands to it. (PM2.io itself
// cannot be reached from tests; everything else the agent talks to is real.)
//
// Options: `tls: {key, cert}` serves HTTPS and WSS instead of HTTP and WS;
// `host` is the name the URLs use (default 127.0.0.1; the server always
// listens on 127.0.0.1 only); `wsHost` overrides it in the advertised
// WebSocket endpoint. Every recorded request carries the remote port of its
// TCP connection (to tell a proxied request from a direct one).
// `perMessageDeflate`: the `ws` server option (e.g. `{ threshold: 0 }` to
// compress every message it sends), off by default like PM2.io's default
// `ws` server; each handshake records the extension the agent offered and
// what was agreed. `inspectFrames: true` reads the agent's raw frames beside
// `ws` and counts its data messages with RSV1 set (compressed) or clear
// (`frames`), and likewise the messages `ws` sends it (`sentFrames`).
// `wireBytes` counts every byte the agents sent on WebSocket connections
// (frames as they travel, the upgrade requests included).

const http = require('http')
const https = require('https')
const { EventEmitter } = require('events')
const WebSocket = require('ws')
const jsonpatch = require('fast-json-patch')

/**
 * Resolves with the first packet of `backend.received` (already received or
 * arriving later, announced by a 'packet' event) matching `pred`.
 */
function waitForPacket (backend, pred, timeoutMs = 20000, what = 'packet') {
  const found = backend.received.find(pred)
  if (found) return Promise.resolve(found)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      backend.removeListener('packet', onPacket)
      reject(new Error(`timed out waiting for ${what}; got channels: ${[...new Set(backend.received.map((p) => p.channel))].join(',')}`))
    }, timeoutMs)
    const onPacket = (p) => {
      if (!pred(p)) return
      clearTimeout(timer)
      backend.removeListener('packet', onPacket)
      resolve(p)
    }
    backend.on('packet', onPacket)
  })
}

/**
 * A byte-stream reader of WebSocket frames (either direction) counting data
 * messages by RSV1 into `counts` ({compressed, plain}); the first frame of a
 * message tells (RFC 7692 §6.1). Fed the raw socket's chunks beside `ws`,
 * which gets the same ones (`head` too: `ws` unshifts it).
 */
function frameCounter (counts) {
  let buf = Buffer.alloc(0)
  let skip = 0 // payload bytes of the current frame still to pass
  return (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk
    for (;;) {
      if (skip) {
        const n = Math.min(skip, buf.length)
        skip -= n
        buf = buf.subarray(n)
        if (skip) return
      }
      if (buf.length < 2) return
      let len = buf[1] & 0x7f
      let off = 2
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4 }
      if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10 }
      if (buf[1] & 0x80) off += 4
      if (buf.length < off) return
      const opcode = buf[0] & 0x0f
      if (opcode === 1 || opcode === 2) counts[buf[0] & 0x40 ? 'compressed' : 'plain']++
      skip = len
      buf = buf.subarray(off)
    }
  }
}

class Backend extends EventEmitter {
  constructor (opts = {}) {
    super()
    this.verifyRequests = []
    this.wsHandshakes = []
    this.received = []
    this.sockets = new Set()
    this.statuses = []
    this._lastStatus = null
    this.port = opts.port || 0
    this.tls = opts.tls || null
    this.host = opts.host || '127.0.0.1'
    this.wsHost = opts.wsHost || this.host
    this.perMessageDeflate = opts.perMessageDeflate || false
    this.inspectFrames = Boolean(opts.inspectFrames)
    // Data messages from / to the agent by RSV1 (inspectFrames).
    this.frames = { compressed: 0, plain: 0 }
    this.sentFrames = { compressed: 0, plain: 0 }
    this._closedBytes = 0 // bytes read on WebSocket connections now closed
    this._wsSockets = new Set()
    // TLS handshakes that failed (e.g. the agent rejecting our certificate).
    this.tlsErrors = []
    // (body, req) => answer object; default: active with our ws endpoint.
    this.verify = opts.verify || (() => this.activeAnswer())
    // (req, res, body) => void: when set, answers verifyPM2 itself (raw
    // bytes, huge bodies, silence…) instead of `verify`.
    this.rawVerify = null
    // When true, WebSocket upgrades are accepted at TCP level and never
    // answered (a silent peer); the held sockets are in `silentSockets`.
    this.silentUpgrade = false
    this.silentSockets = new Set()
  }

  get url () { return `${this.tls ? 'https' : 'http'}://${this.host}:${this.port}` }
  get wsUrl () { return `${this.tls ? 'wss' : 'ws'}://${this.wsHost}:${this.port}/interaction` }

  activeAnswer (extra = {}) {
    return Object.assign({
      active: true,
      pending: false,
      disabled: false,
      endpoints: { web: 'http://127.0.0.1/web', ws: this.wsUrl }
    }, extra)
  }

  async start () {
    const handler = (req, res) => this._onHttp(req, res)
    this.server = this.tls
      ? https.createServer({ key: this.tls.key, cert: this.tls.cert }, handler)
      : http.createServer(handler)
    if (this.tls) this.server.on('tlsClientError', (err) => this.tlsErrors.push(err))
    this.wss = new WebSocket.Server({ noServer: true, perMessageDeflate: this.perMessageDeflate })
    this.server.on('upgrade', (req, socket, head) => {
      if (this.silentUpgrade) {
        this.silentSockets.add(socket)
        socket.on('error', () => {})
        socket.on('close', () => this.silentSockets.delete(socket))
        return
      }
      if (this.refuseWs) {
        this.refusedUpgrades = (this.refusedUpgrades || 0) + 1
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n')
        return
      }
      const handshake = {
        url: req.url,
        headers: req.headers,
        remotePort: req.socket.remotePort,
        encrypted: Boolean(req.socket.encrypted),
        extensions: null // what was agreed (`ws`'s `extensions`), once open
      }
      this.wsHandshakes.push(handshake)
      this._wsSockets.add(socket)
      socket.once('close', () => {
        this._wsSockets.delete(socket)
        this._closedBytes += socket.bytesRead
      })
      if (this.inspectFrames) socket.on('data', frameCounter(this.frames))
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        handshake.extensions = ws.extensions
        if (this.inspectFrames) {
          // The 101 is written: from here on `ws` writes frames only.
          const count = frameCounter(this.sentFrames)
          const write = socket.write
          socket.write = function (chunk, ...rest) {
            count(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)
            return write.call(this, chunk, ...rest)
          }
        }
        this._onWs(ws, req)
      })
    })
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
    return this
  }

  _onHttp (req, res) {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (d) => { body += d })
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/api/node/verifyPM2') {
        let parsed = null
        try { parsed = JSON.parse(body) } catch (e) {}
        this.verifyRequests.push({
          headers: req.headers,
          raw: body,
          body: parsed,
          remotePort: req.socket.remotePort,
          encrypted: Boolean(req.socket.encrypted)
        })
        this.emit('verify', parsed)
        if (this.rawVerify) return this.rawVerify(req, res, parsed)
        const answer = this.verify(parsed, req)
        res.writeHead(200, { 'Content-Type': 'application/json' })
        return res.end(JSON.stringify(answer))
      }
      res.writeHead(404)
      res.end('{}')
    })
  }

  _onWs (ws) {
    this.sockets.add(ws)
    this.emit('connection', ws)
    ws.on('message', (raw) => {
      let msg
      try { msg = JSON.parse(raw.toString()) } catch (e) { return }
      if (msg.channel === 'status') {
        this._lastStatus = msg.payload
        this.statuses.push(msg.payload)
      } else if (msg.channel === 'status:patch') {
        if (this._lastStatus) {
          this._lastStatus = jsonpatch.applyPatch(jsonpatch.deepClone(this._lastStatus), msg.payload, true).newDocument
          this.statuses.push(this._lastStatus)
        }
      }
      this.received.push(msg)
      this.emit('packet', msg)
    })
    ws.on('close', () => this.sockets.delete(ws))
  }

  /** Bytes the agents sent on WebSocket connections so far (see the header). */
  get wireBytes () {
    let n = this._closedBytes
    for (const s of this._wsSockets) n += s.bytesRead
    return n
  }

  /** Sends `{channel, payload}` to every connected agent. */
  send (channel, payload) {
    const data = JSON.stringify({ channel, payload })
    for (const ws of this.sockets) ws.send(data)
    return this.sockets.size
  }

  /** Resolves with the first packet (already received or future) matching. */
  waitFor (pred, timeoutMs, what) { return waitForPacket(this, pred, timeoutMs, what) }

  /** The latest full status (patches applied). */
  get lastStatus () { return this._lastStatus }

  waitConnected (timeoutMs = 20000) {
    if (this.sockets.size) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('agent never connected over WebSocket')), timeoutMs)
      this.once('connection', () => { clearTimeout(timer); resolve() })
    })
  }

  /**
   * A WebSocket outage (`on`): every connection dropped and every upgrade
   * answered 503, while verifyPM2 keeps answering (so an agent can be
   * relaunched meanwhile). `false` ends it.
   */
  outage (on) {
    this.refuseWs = on
    if (on) {
      for (const ws of this.sockets) ws.terminate()
      this.sockets.clear()
    }
  }

  /**
   * A backend that reads slowly: every connection's socket is paused for
   * `pauseMs` out of every `everyMs` (what the agent writes meanwhile waits
   * in kernel buffers and then in its own queue).
   */
  slowReader (pauseMs, everyMs) {
    clearInterval(this._slow)
    if (!pauseMs) return
    this._slow = setInterval(() => {
      for (const ws of this.sockets) {
        const sock = ws._socket
        if (!sock) continue
        sock.pause()
        setTimeout(() => sock.resume(), pauseMs)
      }
    }, everyMs)
  }

  /** Goes away: drops every connection and stops listening. */
  async stop () {
    clearInterval(this._slow)
    for (const s of this.silentSockets) s.destroy()
    this.silentSockets.clear()
    for (const ws of this.sockets) ws.terminate()
    this.sockets.clear()
    if (this.server) {
      this.server.closeAllConnections?.()
      await new Promise((resolve) => this.server.close(() => resolve()))
    }
    if (this.wss) this.wss.close()
  }

  /** Comes back on the same port. */
  async restart () {
    await this.start()
  }
}

module.exports = { Backend, waitForPacket }
