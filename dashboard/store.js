'use strict'
// What the local dashboard keeps of the packets the agent sent it: pure
// state, no I/O (dashboard/backend.js feeds it, the page reads snapshots).
//
// Every collection is bounded by LIMITS, whatever the agent sends; what is
// evicted or refused is counted in `dropped` (shown on the page):
//  - processes: the rows of the last status (`status` / `status:patch`), at
//    most `processes`; each with a CPU/memory history of `historyPoints`
//    points (one per status, ≈ 1 s);
//  - apps (by name): log tail, exceptions, custom events, PM2 process events
//    and the last aggregated transactions, at most `apps` names (the least
//    recently updated one evicted first), each list bounded and each text cut;
//  - replies: the trigger packets the dashboard sent and the agent's answers;
//  - traffic: per channel (at most `channels`), counters and the newest
//    packets as raw JSON, as the inspector's `GET /api/traffic` says (README,
//    "The local dashboard"): 10 packets and 256 KiB per channel, a packet
//    over 64 KiB kept truncated, 10 minutes of per-minute bytes.

const LIMITS = Object.freeze({
  processes: 64,
  historyPoints: 300,
  apps: 64,
  logLines: 200,
  logLineChars: 2000,
  exceptions: 20,
  exceptionChars: 8000,
  lastLogs: 10,
  events: 50,
  eventChars: 2000,
  processEvents: 20,
  transactionRoutes: 20,
  replies: 50,
  replyChars: 2000,
  actions: 32,
  monitors: 32,
  statusBytes: 8 * 1024 * 1024,
  channels: 128,
  channelChars: 200,
  trafficLast: 10,
  trafficLastBytes: 256 * 1024,
  trafficPacketBytes: 64 * 1024,
  trafficMinutes: 10
})

const MINUTE = 60000

/** Pushes `item` on `list`, dropping the oldest beyond `max`; returns how many were dropped. */
function pushBounded (list, item, max) {
  list.push(item)
  let n = 0
  while (list.length > max) {
    list.shift()
    n++
  }
  return n
}

/** `s` as a string of at most `max` chars (a cut one ends with an ellipsis). */
function cut (s, max) {
  if (s === undefined || s === null) return ''
  s = typeof s === 'string' ? s : safeJson(s)
  return s.length > max ? `${s.slice(0, max - 1)}…` : s
}

function safeJson (v) {
  try {
    const s = JSON.stringify(v)
    return s === undefined ? String(v) : s
  } catch (e) {
    return String(v)
  }
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0)
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

/**
 * The first `max` bytes of the UTF-8 text `buf`, cut at a character
 * boundary.
 */
function utf8Prefix (buf, max) {
  if (buf.length <= max) return buf.toString('utf8')
  let end = max
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--
  return buf.subarray(0, end).toString('utf8')
}

// ---------------------------------------------------------------------------
// RFC 6902, the subset fast-json-patch's compare() emits (add, remove,
// replace), for `status:patch` (WS_JSON_PATCH agents). Throws on a path that
// does not resolve; the caller then asks for a full status.

function unescapePointer (seg) { return seg.replace(/~1/g, '/').replace(/~0/g, '~') }

function applyPatch (doc, ops) {
  if (!Array.isArray(ops)) throw new Error('patch is not an array')
  for (const op of ops) {
    if (!isObj(op) || typeof op.path !== 'string') throw new Error('bad patch operation')
    if (op.path === '') {
      if (op.op === 'replace' || op.op === 'add') { doc = op.value; continue }
      throw new Error(`unsupported root op ${op.op}`)
    }
    const segs = op.path.split('/').slice(1).map(unescapePointer)
    let parent = doc
    for (let i = 0; i < segs.length - 1; i++) {
      if (parent === null || typeof parent !== 'object' || !(segs[i] in parent)) throw new Error(`path ${op.path} not found`)
      parent = parent[segs[i]]
    }
    if (parent === null || typeof parent !== 'object') throw new Error(`path ${op.path} not found`)
    const key = segs[segs.length - 1]
    if (Array.isArray(parent)) {
      const idx = key === '-' ? parent.length : Number(key)
      if (!Number.isInteger(idx) || idx < 0 || idx > parent.length) throw new Error(`bad index in ${op.path}`)
      if (op.op === 'add') parent.splice(idx, 0, op.value)
      else if (op.op === 'remove') parent.splice(idx, 1)
      else if (op.op === 'replace') parent[idx] = op.value
      else throw new Error(`unsupported op ${op.op}`)
    } else {
      if (op.op === 'add' || op.op === 'replace') parent[key] = op.value
      else if (op.op === 'remove') delete parent[key]
      else throw new Error(`unsupported op ${op.op}`)
    }
  }
  return doc
}

// ---------------------------------------------------------------------------

class Store {
  /**
   * @param {{now?: () => number, limits?: Partial<typeof LIMITS>}} [opts]
   */
  constructor (opts = {}) {
    this.limits = Object.assign({}, LIMITS, opts.limits || {})
    this.clock = opts.now || Date.now
    this.startedAt = this.clock()
    this.status = null // the last full status (patches applied)
    this.server = null
    this.serverName = null
    this.internalIp = null
    this.statusAt = 0
    this.processes = new Map() // pm_id → row
    this.apps = new Map() // name → per-app data
    this.replies = []
    this.channels = new Map() // channel → traffic stats
    this.dropped = {
      processes: 0,
      historyPoints: 0,
      apps: 0,
      logLines: 0,
      exceptions: 0,
      events: 0,
      processEvents: 0,
      replies: 0,
      channels: 0,
      statuses: 0,
      patches: 0,
      malformed: 0
    }
  }

  /**
   * One text message from the agent (the JSON as it arrived). Returns
   * `{resend: true}` when a patch could not be applied (the caller then sends
   * `status:resend`).
   * @param {string|Buffer} raw
   */
  ingest (raw) {
    const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw), 'utf8')
    const now = this.clock()
    let msg
    try {
      msg = JSON.parse(buf.toString('utf8'))
    } catch (e) {
      msg = null
    }
    if (!isObj(msg) || typeof msg.channel !== 'string') {
      this.dropped.malformed++
      this._traffic('(malformed)', buf, now, false)
      return {}
    }
    this._traffic(msg.channel, buf, now)
    return this._handle(msg.channel, msg.payload, now, buf.length)
  }

  _handle (channel, payload, now, size) {
    switch (channel) {
      case 'status':
        if (size > this.limits.statusBytes || !isObj(payload)) {
          this.dropped.statuses++
          return {}
        }
        this.status = payload
        this._onStatus(now)
        return {}
      case 'status:patch':
        if (!this.status) {
          this.dropped.patches++
          return { resend: true }
        }
        try {
          this.status = applyPatch(this.status, payload)
        } catch (e) {
          this.dropped.patches++
          this.status = null
          return { resend: true }
        }
        this._onStatus(now)
        return {}
      case 'logs':
        return this._onLog(payload, now)
      case 'process:exception':
        return this._onException(payload, now)
      case 'human:event':
        return this._onEvent(payload, now)
      case 'process:event':
        return this._onProcessEvent(payload, now)
      case 'axm:transaction':
        return this._onTransaction(payload, now)
      case 'axm:transaction:learning': {
        const app = this._app(payload, now)
        const d = isObj(payload.data) ? payload.data : {}
        if (app) app.learning = { at: num(payload.at) || now, learning_duration: num(d.learning_duration), elapsed: num(d.elapsed) }
        return {}
      }
      default:
        if (channel.startsWith('trigger:') || channel === 'axm:reply' || channel.startsWith('axm:scoped_action')) {
          this.addReply('received', channel, payload, now)
        }
        return {}
    }
  }

  _onStatus (now) {
    const st = this.status
    const data = isObj(st.data) ? st.data : {}
    this.server = isObj(data.server) ? data.server : null
    this.serverName = typeof st.server_name === 'string' ? cut(st.server_name, 200) : null
    this.internalIp = typeof st.internal_ip === 'string' ? cut(st.internal_ip, 100) : null
    this.statusAt = now
    const seen = new Set()
    const procs = Array.isArray(data.process) ? data.process : []
    for (const p of procs) {
      if (!isObj(p) || (typeof p.pm_id !== 'number' && typeof p.pm_id !== 'string')) continue
      const id = String(p.pm_id)
      let row = this.processes.get(id)
      if (!row) {
        if (this.processes.size >= this.limits.processes) {
          this.dropped.processes++
          continue
        }
        row = { pm_id: p.pm_id, history: [] }
        this.processes.set(id, row)
      }
      seen.add(id)
      row.name = cut(p.name, 200)
      row.status = cut(p.status, 50)
      row.restart_time = num(p.restart_time)
      row.pid = num(p.pid)
      row.pm_uptime = num(p.pm_uptime)
      row.exec_mode = cut(p.exec_mode, 50)
      row.cpu = num(p.cpu)
      row.memory = num(p.memory)
      row.actions = (Array.isArray(p.axm_actions) ? p.axm_actions : [])
        .filter((a) => isObj(a) && typeof a.action_name === 'string')
        .slice(0, this.limits.actions)
        .map((a) => cut(a.action_name, 200))
      row.monitors = isObj(p.axm_monitor)
        ? Object.keys(p.axm_monitor).slice(0, this.limits.monitors).map((k) => {
          const m = p.axm_monitor[k]
          return { name: cut(k, 200), value: cut(isObj(m) ? m.value : m, 200), unit: cut(isObj(m) ? m.unit : '', 50) }
        })
        : []
      this.dropped.historyPoints += pushBounded(row.history, [now, row.cpu, row.memory], this.limits.historyPoints)
    }
    // A process gone from the status (deleted) goes with its history.
    for (const id of this.processes.keys()) if (!seen.has(id)) this.processes.delete(id)
  }

  /** The per-app record of a packet's `process.name`, created (evicting the stalest) if needed. */
  _app (payload, now) {
    const proc = isObj(payload) && isObj(payload.process) ? payload.process : null
    if (!proc || (typeof proc.name !== 'string' && typeof proc.name !== 'number')) return null
    const name = cut(String(proc.name), 200)
    let app = this.apps.get(name)
    if (!app) {
      if (this.apps.size >= this.limits.apps) {
        let stalest = null
        for (const [k, v] of this.apps) if (!stalest || v.updated < stalest[1].updated) stalest = [k, v]
        this.apps.delete(stalest[0])
        this.dropped.apps++
      }
      app = { name, updated: now, logs: [], exceptions: [], events: [], processEvents: [], transaction: null, learning: null }
      this.apps.set(name, app)
    }
    app.updated = now
    return app
  }

  _onLog (p, now) {
    const app = this._app(p, now)
    if (!app) return {}
    const text = typeof p.data === 'string' ? p.data.replace(/\r?\n$/, '') : safeJson(p.data)
    for (const line of text.split('\n')) {
      this.dropped.logLines += pushBounded(app.logs, {
        at: num(p.at) || now,
        type: cut(p.log_type, 20),
        pm_id: isObj(p.process) ? p.process.pm_id : null,
        text: cut(line, this.limits.logLineChars)
      }, this.limits.logLines)
    }
    return {}
  }

  _onException (p, now) {
    const app = this._app(p, now)
    if (!app) return {}
    const d = isObj(p.data) ? p.data : {}
    const max = this.limits.exceptionChars
    const lastLogs = Array.isArray(d.last_logs) ? d.last_logs : Array.isArray(p.last_logs) ? p.last_logs : []
    this.dropped.exceptions += pushBounded(app.exceptions, {
      at: num(p.at) || now,
      pm_id: isObj(p.process) ? p.process.pm_id : null,
      message: cut(d.message !== undefined ? d.message : p.message, 1000),
      stack: cut(d.stack !== undefined ? d.stack : p.stack, max),
      callsite: cut(d.callsite !== undefined ? d.callsite : p.callsite, 1000),
      context: cut(d.context !== undefined ? d.context : p.context, max),
      last_logs: lastLogs.slice(-this.limits.lastLogs).map((l) => cut(typeof l === 'string' ? l : safeJson(l), this.limits.logLineChars))
    }, this.limits.exceptions)
    return {}
  }

  _onEvent (p, now) {
    const app = this._app(p, now)
    if (!app) return {}
    this.dropped.events += pushBounded(app.events, {
      at: num(p.at) || now,
      name: cut(p.name, 200),
      data: cut(p.data, this.limits.eventChars)
    }, this.limits.events)
    return {}
  }

  _onProcessEvent (p, now) {
    const app = this._app(p, now)
    if (!app) return {}
    this.dropped.processEvents += pushBounded(app.processEvents, {
      at: num(p.at) || now,
      event: cut(p.event, 100),
      manually: Boolean(p.manually)
    }, this.limits.processEvents)
    return {}
  }

  _onTransaction (p, now) {
    const app = this._app(p, now)
    if (!app) return {}
    const d = isObj(p.data) ? p.data : {}
    const routes = Array.isArray(d.routes) ? d.routes : []
    app.transaction = {
      at: num(p.at) || now,
      meta: cut(d.meta, this.limits.eventChars),
      routes_total: routes.length,
      routes: routes.slice(0, this.limits.transactionRoutes).map((r) => {
        const m = isObj(r) && isObj(r.meta) ? r.meta : {}
        return {
          path: cut(isObj(r) ? r.path : r, 300),
          count: num(m.count),
          median: num(m.median),
          p95: num(m.p95),
          min: num(m.min),
          max: num(m.max),
          meter: num(m.meter),
          variances: isObj(r) && Array.isArray(r.variances) ? r.variances.length : 0,
          meta: cut(isObj(r) ? r.meta : null, this.limits.eventChars)
        }
      })
    }
    return {}
  }

  /** A trigger packet sent to, or an answer received from, the agent. */
  addReply (direction, channel, payload, now = this.clock()) {
    this.dropped.replies += pushBounded(this.replies, {
      at: now,
      direction,
      channel: cut(channel, this.limits.channelChars),
      payload: cut(payload, this.limits.replyChars)
    }, this.limits.replies)
  }

  // -- traffic (the inspector contract) -------------------------------------

  /** `json`: whether `buf` is JSON text (a malformed packet is kept as a string). */
  _traffic (channel, buf, now, json = true) {
    channel = channel.length > this.limits.channelChars ? `${channel.slice(0, this.limits.channelChars)}…` : channel
    let c = this.channels.get(channel)
    if (!c) {
      if (this.channels.size >= this.limits.channels) {
        this.dropped.channels++
        return
      }
      c = { packets: 0, bytes: 0, minutes: [], seconds: [], last: [], lastBytes: 0 }
      this.channels.set(channel, c)
    }
    const bytes = buf.length
    c.packets++
    c.bytes += bytes
    // Per-minute buckets since the start, the last `trafficMinutes` kept.
    const minute = Math.floor((now - this.startedAt) / MINUTE)
    const lastMin = c.minutes[c.minutes.length - 1]
    if (lastMin && lastMin[0] === minute) lastMin[1] += bytes
    else pushBounded(c.minutes, [minute, bytes], this.limits.trafficMinutes)
    // Per-second buckets for the sliding 60 s window.
    const second = Math.floor(now / 1000)
    const lastSec = c.seconds[c.seconds.length - 1]
    if (lastSec && lastSec[0] === second) lastSec[1] += bytes
    else c.seconds.push([second, bytes])
    while (c.seconds.length && c.seconds[0][0] <= second - 60) c.seconds.shift()
    // The newest packets, raw: at most trafficLast and trafficLastBytes.
    const max = this.limits.trafficPacketBytes
    const entry = bytes > max
      ? { at: now, bytes, truncated: true, text: utf8Prefix(buf, max) }
      : { at: now, bytes, truncated: false, json, text: buf.toString('utf8') }
    entry.kept = Math.min(bytes, max)
    c.last.unshift(entry)
    c.lastBytes += entry.kept
    while (c.last.length > this.limits.trafficLast || (c.lastBytes > this.limits.trafficLastBytes && c.last.length > 1)) {
      c.lastBytes -= c.last.pop().kept
    }
  }

  /** GET /api/traffic (the inspector contract), as a JSON string. */
  trafficJson () {
    const now = this.clock()
    const current = Math.floor((now - this.startedAt) / MINUTE)
    const second = Math.floor(now / 1000)
    const first = Math.max(0, current - this.limits.trafficMinutes + 1)
    const names = [...this.channels.keys()].sort()
    const parts = names.map((name) => {
      const c = this.channels.get(name)
      const perMinute = []
      for (let m = first; m <= current; m++) {
        const b = c.minutes.find((x) => x[0] === m)
        perMinute.push(b ? b[1] : 0)
      }
      let lastMinute = 0
      for (const [s, b] of c.seconds) if (s > second - 60) lastMinute += b
      const last = c.last.map((e) => e.truncated
        ? JSON.stringify({ at: e.at, bytes: e.bytes, truncated: true, data: e.text })
        : e.json ? `{"at":${e.at},"bytes":${e.bytes},"data":${e.text}}` : JSON.stringify({ at: e.at, bytes: e.bytes, data: e.text }))
      return `{"channel":${JSON.stringify(name)},"packets":${c.packets},"bytes":${c.bytes},` +
        `"bytes_last_minute":${lastMinute},"per_minute":${JSON.stringify(perMinute)},"last":[${last.join(',')}]}`
    })
    return `{"source":"dashboard","started_at":${this.startedAt},"now":${now},"channels":[${parts.join(',')}]}`
  }

  /** What the page shows (GET /api/state). */
  snapshot (extra = {}) {
    const apps = {}
    for (const [name, a] of this.apps) {
      apps[name] = {
        logs: a.logs,
        exceptions: a.exceptions,
        events: a.events,
        processEvents: a.processEvents,
        transaction: a.transaction,
        learning: a.learning
      }
    }
    return Object.assign({
      now: this.clock(),
      started_at: this.startedAt,
      status_at: this.statusAt,
      server_name: this.serverName,
      internal_ip: this.internalIp,
      server: this.server,
      processes: [...this.processes.values()],
      apps,
      replies: this.replies,
      dropped: this.dropped,
      limits: this.limits
    }, extra)
  }
}

module.exports = { Store, LIMITS, applyPatch, utf8Prefix }
