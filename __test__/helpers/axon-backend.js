'use strict'
// The legacy PM2.io interaction servers, built from the same libraries the
// backend used: a pm2-axon `sub` socket bound on the push port and an
// nssocket server on the reverse port, which asks every new connection to
// authenticate (`["ask",null]`). Push frames are deciphered with the secret
// key (Node's crypto, docs/protocols.md §5) and recorded; commands are ciphered
// the same way before they are sent.

const crypto = require('crypto')
const net = require('net')
const { EventEmitter } = require('events')
const axon = require('pm2-axon')
const nssocket = require('nssocket')
const { waitForPacket } = require('./backend')

/** OpenSSL EVP_BytesToKey(MD5, no salt, 1 round): what createCipher('aes256', secret) used. */
function keyIv (secret) {
  const pw = Buffer.from(secret, 'utf8')
  let d = Buffer.alloc(0)
  let out = Buffer.alloc(0)
  while (out.length < 48) {
    d = crypto.createHash('md5').update(Buffer.concat([d, pw])).digest()
    out = Buffer.concat([out, d])
  }
  return { key: out.subarray(0, 32), iv: out.subarray(32, 48) }
}

function cipher (value, secret) {
  const { key, iv } = keyIv(secret)
  const c = crypto.createCipheriv('aes-256-cbc', key, iv)
  const text = typeof value === 'string' ? value : JSON.stringify(value)
  return c.update(text, 'utf8', 'hex') + c.final('hex')
}

/** The plaintext (string), or throws. */
function decipherText (hex, secret) {
  const { key, iv } = keyIv(secret)
  const d = crypto.createDecipheriv('aes-256-cbc', key, iv)
  return d.update(hex, 'hex', 'utf8') + d.final('utf8')
}

function decipher (hex, secret) {
  return JSON.parse(decipherText(hex, secret))
}

class AxonBackend extends EventEmitter {
  constructor (secret) {
    super()
    this.secret = secret
    this.frames = [] // { outer, raw, buffer } per ciphered push frame
    this.badFrames = [] // push frames that did not decipher
    this.statuses = []
    this.profiles = [] // the args of 2-argument (clear) push frames
    this.received = [] // { channel, payload, via: 'push' | 'reverse' }
    this.askReps = [] // { data, public_key } as received
    this.reverseConnections = 0
    this.pushConnections = 0
    this.sockets = new Set()
  }

  /** `ports` ({push, reverse}) to come back on the same endpoints after stop(). */
  async start (ports = {}) {
    this.sub = axon.socket('sub')
    await new Promise((resolve, reject) => {
      this.sub.bind(ports.push || 0, '127.0.0.1', (err) => (err ? reject(err) : resolve()))
    })
    this.pushPort = this.sub.server.address().port
    this.sub.server.on('connection', () => { this.pushConnections++ })
    this.sub.on('message', (...args) => this._onPush(args))

    this.reverse = nssocket.createServer((socket) => this._onReverse(socket))
    await new Promise((resolve, reject) => {
      this.reverse.once('error', reject)
      this.reverse.listen(ports.reverse || 0, '127.0.0.1', resolve)
    })
    this.reversePort = this.reverse.address().port
    return this
  }

  get endpoints () {
    return {
      push: `tcp://127.0.0.1:${this.pushPort}`,
      reverse: `tcp://127.0.0.1:${this.reversePort}`
    }
  }

  _onPush (args) {
    // pm2-axon 4's sub appends the peer's net.Socket to the frame's args.
    if (args.length && args[args.length - 1] instanceof net.Socket) args = args.slice(0, -1)
    if (args.length !== 1) {
      this.profiles.push(args)
      this.emit('profile', args)
      return
    }
    const raw = String(args[0])
    let outer, buffer
    try {
      outer = JSON.parse(raw)
      buffer = decipher(outer.data, this.secret)
    } catch (e) {
      this.badFrames.push(raw)
      return
    }
    this.frames.push({ outer, raw, buffer })
    if (buffer.status) this.statuses.push(buffer.status)
    for (const channel of Object.keys(buffer)) {
      if (channel === 'status' || channel === 'server_name') continue
      for (const payload of buffer[channel]) this._record({ channel, payload, via: 'push' })
    }
    this.emit('frame', buffer)
  }

  _onReverse (socket) {
    this.reverseConnections++
    this.sockets.add(socket)
    const self = this
    socket.data('*', function (data) {
      const ev = Array.isArray(this.event) ? this.event.slice(1).join('::') : String(this.event).replace(/^data::/, '')
      if (ev === 'ask:rep') {
        self.askReps.push(data)
        self.emit('ask:rep', data)
        return
      }
      self._record({ channel: ev, payload: data, via: 'reverse' })
    })
    socket.on('close', () => this.sockets.delete(socket))
    socket.on('error', () => {})
    socket.send('ask')
    this.emit('reverse', socket)
  }

  _record (packet) {
    this.received.push(packet)
    this.emit('packet', packet)
  }

  /** Sends `[channel, cipher(payload)]` to every connected agent. */
  send (channel, payload) {
    const hex = cipher(payload, this.secret)
    for (const s of this.sockets) s.send(channel, hex)
    return this.sockets.size
  }

  /** Cuts every reverse connection (as a backend restart would). */
  dropReverse () {
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
  }

  get lastStatus () { return this.statuses[this.statuses.length - 1] }

  /** Resolves with the first packet (already received or future) matching. */
  waitFor (pred, timeoutMs, what) { return waitForPacket(this, pred, timeoutMs, what) }

  async stop () {
    this.dropReverse()
    if (this.reverse) await new Promise((resolve) => this.reverse.close(() => resolve()))
    if (this.sub) this.sub.close()
  }
}

module.exports = { AxonBackend, cipher, decipher, decipherText, keyIv }
