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
    this.wss = new WebSocket.Server({ noServer: true })
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
      this.wsHandshakes.push({
        url: req.url,
        headers: req.headers,
        remotePort: req.socket.remotePort,
        encrypted: Boolean(req.socket.encrypted)
      })
      this.wss.handleUpgrade(req, socket, head, (ws) => this._onWs(ws, req))
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
      this.server.closeAllConnections && this.server.closeAllConnections()
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
