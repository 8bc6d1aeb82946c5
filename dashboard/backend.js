'use strict'
// The local PM2.io-compatible backend of `npm start` (README, "The local
// dashboard"): one HTTP server on 127.0.0.1 that
//  - answers the agent's `POST /api/node/verifyPM2` and takes its WebSocket
//    at `/interaction`, the same wire as PM2.io (docs/protocols.md §7, §8),
//    for the one pair of keys it was given (anything else is refused);
//  - serves the page (web/dashboard.html), its API and the inspector
//    (web/inspector.html, `GET /api/traffic`) to whoever has the token:
//    `?token=<32 hex>` on every request, compared in constant time; a missing
//    or bad token → 403 "forbidden", and nothing else is served.
// What the agent sends goes into a Store (dashboard/store.js: every buffer
// bounded); the page's buttons become `trigger:*` packets sent as PM2.io
// sends them.

const crypto = require('crypto')
const fs = require('fs')
const http = require('http')
const path = require('path')
const WebSocket = require('ws')
const { Store } = require('./store')

const WEB_DIR = path.join(__dirname, '..', 'web')
const MAX_BODY = 64 * 1024
const MAX_AGENTS = 4
const MAX_CONNECTIONS = 64
// Profiling dumps (heap snapshots) are the largest packets an agent sends:
// up to 64 MiB of file text (docs/protocols.md §9.1).
const MAX_PAYLOAD = 80 * 1024 * 1024
const PM2_METHODS = new Set(['restart', 'reload', 'startLogging', 'stopLogging'])
const RESEND_EVERY_MS = 5000

/** Constant-time equality of two strings (of any lengths). */
function safeEqual (a, b) {
  const ha = crypto.createHash('sha256').update(String(a)).digest()
  const hb = crypto.createHash('sha256').update(String(b)).digest()
  return crypto.timingSafeEqual(ha, hb) && typeof a === 'string' && typeof b === 'string'
}

const newToken = () => crypto.randomBytes(16).toString('hex')

const SECURITY_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY'
}
// The pages are self-contained: inline script and style, no other origin.
const PAGE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; " +
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

class DashboardBackend {
  /**
   * @param {{keys: {public_key: string, secret_key: string}, token?: string, port?: number, log?: (msg: string) => void, store?: Store, webDir?: string}} opts
   */
  constructor (opts) {
    if (!opts || !opts.keys || !opts.keys.public_key || !opts.keys.secret_key) throw new Error('DashboardBackend needs keys')
    this.keys = opts.keys
    this.token = opts.token || newToken()
    this.port = opts.port || 0
    this.log = opts.log || (() => {})
    this.store = opts.store || new Store()
    this.webDir = opts.webDir || WEB_DIR
    this.agents = new Set() // open WebSockets of agents
    this.agentInfo = null // headers of the last agent handshake
    this.refused = { verify: 0, upgrades: 0, requests: 0 }
    this._lastResend = 0
  }

  get url () { return `http://127.0.0.1:${this.port}` }
  get pageUrl () { return `${this.url}/?token=${this.token}` }

  async start () {
    this.server = http.createServer((req, res) => this._onRequest(req, res))
    this.server.maxConnections = MAX_CONNECTIONS
    this.wss = new WebSocket.Server({ noServer: true, maxPayload: MAX_PAYLOAD, perMessageDeflate: true })
    this.server.on('upgrade', (req, socket, head) => this._onUpgrade(req, socket, head))
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, '127.0.0.1', () => {
        this.server.removeListener('error', reject)
        resolve()
      })
    })
    this.port = this.server.address().port
    return this
  }

  async stop () {
    for (const ws of this.agents) ws.terminate()
    this.agents.clear()
    if (this.wss) this.wss.close()
    if (this.server) {
      this.server.closeAllConnections()
      await new Promise((resolve) => this.server.close(() => resolve()))
    }
  }

  // -- the agent's side ------------------------------------------------------

  _keysMatch (pub, secret) {
    // Both compared, whatever the first gives (constant time).
    const a = safeEqual(pub, this.keys.public_key)
    const b = safeEqual(secret, this.keys.secret_key)
    return a && b
  }

  _verify (req, res) {
    readBody(req, (err, body) => {
      if (err) return send(res, 413, 'text/plain', 'too large')
      let parsed = null
      try { parsed = JSON.parse(body) } catch (e) {}
      if (!parsed || !this._keysMatch(parsed.public_id, parsed.private_id)) {
        this.refused.verify++
        return send(res, 200, 'application/json', JSON.stringify({
          active: false, pending: false, disabled: false, error: true, msg: 'unknown keys: this local dashboard only accepts the keys npm start generated'
        }))
      }
      send(res, 200, 'application/json', JSON.stringify({
        active: true,
        pending: false,
        disabled: false,
        endpoints: { web: this.url, ws: `ws://127.0.0.1:${this.port}/interaction` }
      }))
    })
  }

  _onUpgrade (req, socket, head) {
    socket.on('error', () => {})
    const url = new URL(req.url, 'http://127.0.0.1')
    const ok = url.pathname === '/interaction' && isLoopback(req.socket.remoteAddress) &&
      this._keysMatch(req.headers['x-km-public'], req.headers['x-km-secret'])
    if (!ok || this.agents.size >= MAX_AGENTS) {
      this.refused.upgrades++
      socket.end(`HTTP/1.1 ${ok ? '503 Service Unavailable' : '403 Forbidden'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
      return
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.agents.add(ws)
      this.agentInfo = {
        connected_at: Date.now(),
        user_agent: cut(req.headers['user-agent']),
        server: cut(req.headers['x-km-server']),
        pm2_version: cut(req.headers['x-pm2-version']),
        protocol_version: cut(req.headers['x-protocol-version'])
      }
      this.log(`agent connected (${this.agentInfo.user_agent || 'unknown agent'})`)
      ws.on('message', (data, isBinary) => {
        const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
        const r = this.store.ingest(buf)
        if (r.resend && Date.now() - this._lastResend > RESEND_EVERY_MS) {
          this._lastResend = Date.now()
          ws.send(JSON.stringify({ channel: 'status:resend', payload: {} }))
        }
      })
      ws.on('error', () => {})
      ws.on('close', () => {
        this.agents.delete(ws)
        this.log('agent disconnected')
      })
    })
  }

  /** Sends `{channel, payload}` to every connected agent; returns how many. */
  sendToAgents (channel, payload) {
    const text = JSON.stringify({ channel, payload })
    let n = 0
    for (const ws of this.agents) {
      if (ws.readyState !== WebSocket.OPEN) continue
      ws.send(text)
      n++
    }
    this.store.addReply('sent', channel, payload)
    return n
  }

  // -- the page's side -------------------------------------------------------

  _onRequest (req, res) {
    let url
    try {
      url = new URL(req.url, 'http://127.0.0.1')
    } catch (e) {
      return send(res, 400, 'text/plain', 'bad request')
    }
    if (req.method === 'POST' && url.pathname === '/api/node/verifyPM2') return this._verify(req, res)
    if (!isLoopback(req.socket.remoteAddress) || !this._hostOk(req.headers.host) || !safeEqual(url.searchParams.get('token'), this.token)) {
      this.refused.requests++
      req.resume()
      return send(res, 403, 'text/plain', 'forbidden')
    }
    const route = ROUTES[url.pathname]
    if (!route) return send(res, 404, 'text/plain', 'not found')
    if (req.method !== route.method) {
      req.resume()
      return send(res, 405, 'text/plain', 'method not allowed', { Allow: route.method })
    }
    return route.handle.call(this, req, res, url)
  }

  /** The Host header names this server (no DNS rebinding). */
  _hostOk (host) {
    return host === `127.0.0.1:${this.port}` || host === `localhost:${this.port}`
  }

  _page (file, res) {
    fs.readFile(path.join(this.webDir, file), (err, body) => {
      if (err) {
        return send(res, 404, 'text/plain',
          `${file} is not installed (expected at ${path.join('web', file)} in the keymetrics-agent package)`)
      }
      send(res, 200, 'text/html; charset=utf-8', body, { 'Content-Security-Policy': PAGE_CSP })
    })
  }

  _state (req, res) {
    const snap = this.store.snapshot({
      agents: this.agents.size,
      agent: this.agentInfo,
      refused: this.refused
    })
    send(res, 200, 'application/json', JSON.stringify(snap))
  }

  _action (req, res) {
    if (!/^application\/json\b/.test(req.headers['content-type'] || '')) {
      req.resume()
      return send(res, 415, 'text/plain', 'application/json expected')
    }
    readBody(req, (err, body) => {
      if (err) return send(res, 413, 'text/plain', 'too large')
      let a = null
      try { a = JSON.parse(body) } catch (e) {}
      const packet = a && this._packetFor(a)
      if (!packet || packet.error) {
        return send(res, 400, 'application/json', JSON.stringify({ error: (packet && packet.error) || 'bad action' }))
      }
      if (!this.agents.size) return send(res, 503, 'application/json', JSON.stringify({ error: 'no agent connected' }))
      const agents = this.sendToAgents(packet.channel, packet.payload)
      send(res, 200, 'application/json', JSON.stringify({ sent: true, agents, channel: packet.channel, payload: packet.payload }))
    })
  }

  /**
   * The packet PM2.io sends for a page action:
   *  - `{type: 'pm2', method, app}`: `trigger:pm2:action {method_name, parameters}`
   *    (restart/reload `{name: app}`; start/stopLogging `{}`);
   *  - `{type: 'custom', pm_id, action}`: `trigger:action {process_id, action_name}`,
   *    only for an action the process declared (`axm_actions` in its status).
   */
  _packetFor (a) {
    if (a.type === 'pm2') {
      if (!PM2_METHODS.has(a.method)) return { error: `unknown PM2 action (allowed: ${[...PM2_METHODS].join(', ')})` }
      if (a.method === 'startLogging' || a.method === 'stopLogging') {
        return { channel: 'trigger:pm2:action', payload: { method_name: a.method, parameters: {} } }
      }
      const known = [...this.store.processes.values()].some((p) => p.name === a.app)
      if (typeof a.app !== 'string' || !known) return { error: 'unknown app' }
      return { channel: 'trigger:pm2:action', payload: { method_name: a.method, parameters: { name: a.app } } }
    }
    if (a.type === 'custom') {
      const row = this.store.processes.get(String(a.pm_id))
      if (!row || typeof a.pm_id !== 'number') return { error: 'unknown process' }
      if (!row.actions.includes(a.action)) return { error: 'the process declares no such action' }
      return { channel: 'trigger:action', payload: { process_id: a.pm_id, action_name: a.action } }
    }
    return { error: 'unknown action type' }
  }
}

const ROUTES = {
  '/': { method: 'GET', handle (req, res) { this._page('dashboard.html', res) } },
  '/inspector': { method: 'GET', handle (req, res) { this._page('inspector.html', res) } },
  '/api/state': { method: 'GET', handle (req, res) { this._state(req, res) } },
  '/api/traffic': { method: 'GET', handle (req, res) { send(res, 200, 'application/json', this.store.trafficJson()) } },
  '/api/action': { method: 'POST', handle (req, res) { this._action(req, res) } }
}

function isLoopback (addr) {
  return addr === '127.0.0.1' || addr === '::ffff:127.0.0.1' || addr === '::1'
}

function cut (v) { return typeof v === 'string' ? v.slice(0, 200) : null }

function send (res, code, type, body, extra) {
  res.writeHead(code, Object.assign({ 'Content-Type': type }, SECURITY_HEADERS, extra || {}))
  res.end(body)
}

/** The request body as a string, at most MAX_BODY bytes (else err). */
function readBody (req, cb) {
  const chunks = []
  let size = 0
  let done = false
  req.on('data', (d) => {
    if (done) return
    size += d.length
    if (size > MAX_BODY) {
      done = true
      req.resume()
      return cb(new Error('body too large'))
    }
    chunks.push(d)
  })
  req.on('end', () => {
    if (done) return
    done = true
    cb(null, Buffer.concat(chunks).toString('utf8'))
  })
  req.on('error', () => {
    if (done) return
    done = true
    cb(new Error('request error'))
  })
}

module.exports = { DashboardBackend, safeEqual, newToken }
