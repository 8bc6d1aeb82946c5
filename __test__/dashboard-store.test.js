'use strict'
// dashboard/store.js: what `npm start`'s dashboard keeps of the agent's
// packets. Every buffer is bounded whatever the agent sends, and what is
// evicted is counted; the traffic view follows the inspector contract.

const test = require('node:test')
const assert = require('node:assert/strict')
const { Store, LIMITS, applyPatch, utf8Prefix } = require('../dashboard/store')

const proc = (name, pmId = 0) => ({ pm_id: pmId, name, server: 'm1', rev: null })
const packet = (channel, payload) => JSON.stringify({ payload, channel })
const status = (procs, server = { hostname: 'h', total_mem: 1 }) =>
  packet('status', { data: { process: procs, server }, server_name: 'm1', internal_ip: '10.0.0.1' })
const row = (pmId, name, extra = {}) => Object.assign({
  pm_id: pmId, name, status: 'online', restart_time: 0, pid: 100 + pmId, cpu: 1, memory: 1000, exec_mode: 'fork_mode', axm_actions: []
}, extra)

/** A store on a clock the test moves. */
function clocked (limits, start = 1_000_000) {
  const clock = { t: start }
  const store = new Store({ now: () => clock.t, limits })
  return { store, clock }
}

test('the limits are the documented ones', () => {
  assert.equal(LIMITS.trafficLast, 10)
  assert.equal(LIMITS.trafficLastBytes, 256 * 1024)
  assert.equal(LIMITS.trafficPacketBytes, 64 * 1024)
  assert.equal(LIMITS.trafficMinutes, 10)
})

test('status: rows, machine figures, CPU/memory history bounded per process', () => {
  const { store, clock } = clocked({ historyPoints: 5 })
  for (let i = 0; i < 12; i++) {
    clock.t += 1000
    store.ingest(status([row(0, 'a', { cpu: i, memory: 1000 + i, restart_time: 2 })]))
  }
  const snap = store.snapshot()
  assert.equal(snap.server.hostname, 'h')
  assert.equal(snap.server_name, 'm1')
  assert.equal(snap.processes.length, 1)
  const p = snap.processes[0]
  assert.equal(p.restart_time, 2)
  assert.equal(p.history.length, 5)
  assert.deepEqual(p.history.map((h) => h[1]), [7, 8, 9, 10, 11])
  assert.equal(snap.dropped.historyPoints, 7)
})

test('status: at most `processes` rows; a process gone from the status goes with its history', () => {
  const { store } = clocked({ processes: 3 })
  store.ingest(status([0, 1, 2, 3, 4].map((i) => row(i, `p${i}`))))
  assert.equal(store.processes.size, 3)
  assert.equal(store.dropped.processes, 2)
  store.ingest(status([row(1, 'p1')]))
  assert.deepEqual([...store.processes.keys()], ['1'])
})

test('status:patch is applied on the last full status; without one, or when it does not apply, a resend is asked', () => {
  const { store } = clocked()
  assert.deepEqual(store.ingest(packet('status:patch', [])), { resend: true })
  store.ingest(status([row(0, 'a')]))
  assert.deepEqual(store.ingest(packet('status:patch', [{ op: 'replace', path: '/data/process/0/restart_time', value: 5 }])), {})
  assert.equal(store.snapshot().processes[0].restart_time, 5)
  assert.deepEqual(store.ingest(packet('status:patch', [{ op: 'replace', path: '/nope/x', value: 1 }])), { resend: true })
  assert.equal(store.dropped.patches, 2)
  // The baseline is gone until the next full status.
  assert.deepEqual(store.ingest(packet('status:patch', [])), { resend: true })
})

test('applyPatch: add / remove / replace on objects and arrays, escaped paths', () => {
  const doc = { a: [{ n: 'x' }, { n: 'y' }], 'b/c': { '~d': 1 } }
  const out = applyPatch(doc, [
    { op: 'remove', path: '/a/1' },
    { op: 'replace', path: '/a/0/n', value: 'z' },
    { op: 'add', path: '/a/-', value: { n: 'w' } },
    { op: 'replace', path: '/b~1c/~0d', value: 2 },
    { op: 'add', path: '/e', value: true }
  ])
  assert.deepEqual(out, { a: [{ n: 'z' }, { n: 'w' }], 'b/c': { '~d': 2 }, e: true })
  assert.throws(() => applyPatch({}, [{ op: 'move', path: '/a', from: '/b' }]))
  assert.throws(() => applyPatch({}, 'no'))
})

test('logs: a bounded tail per app, long lines cut, multi-line packets split', () => {
  const { store } = clocked({ logLines: 4, logLineChars: 10 })
  store.ingest(packet('logs', { data: 'one\ntwo\n', process: proc('a'), log_type: 'out' }))
  for (let i = 0; i < 5; i++) store.ingest(packet('logs', { data: `line ${i}\n`, process: proc('a'), log_type: 'err' }))
  store.ingest(packet('logs', { data: 'x'.repeat(50), process: proc('a'), log_type: 'out' }))
  const logs = store.snapshot().apps.a.logs
  assert.equal(logs.length, 4)
  assert.deepEqual(logs.map((l) => l.text), ['line 2', 'line 3', 'line 4', `${'x'.repeat(9)}…`])
  assert.equal(store.dropped.logLines, 4)
  assert.equal(logs[0].type, 'err')
})

test('exceptions: bounded per app, with their source context, texts cut', () => {
  const { store } = clocked({ exceptions: 2, exceptionChars: 100, lastLogs: 2 })
  for (let i = 0; i < 4; i++) {
    store.ingest(packet('process:exception', {
      at: i,
      data: { message: `boom ${i}`, stack: 's'.repeat(500), callsite: 'app.js:3', context: '  a()\n>>b()\n  c()', last_logs: ['1\n', '2\n', '3\n'] },
      process: proc('a')
    }))
  }
  const ex = store.snapshot().apps.a.exceptions
  assert.deepEqual(ex.map((e) => e.message), ['boom 2', 'boom 3'])
  assert.equal(ex[1].context, '  a()\n>>b()\n  c()')
  assert.equal(ex[1].callsite, 'app.js:3')
  assert.equal(ex[1].stack.length, 100)
  assert.deepEqual(ex[1].last_logs, ['2\n', '3\n'])
  assert.equal(store.dropped.exceptions, 2)
})

test('custom and process events: bounded per app', () => {
  const { store } = clocked({ events: 3, eventChars: 20, processEvents: 2 })
  for (let i = 0; i < 5; i++) store.ingest(packet('human:event', { at: i, name: 'evt', data: { i, pad: 'p'.repeat(40) }, process: proc('a') }))
  for (const e of ['exit', 'online', 'restart']) store.ingest(packet('process:event', { event: e, manually: false, process: proc('a') }))
  const a = store.snapshot().apps.a
  assert.equal(a.events.length, 3)
  assert.equal(a.events[2].name, 'evt')
  assert.equal(a.events[2].data.length, 20)
  assert.ok(a.events[2].data.startsWith('{"i":4'))
  assert.deepEqual(a.processEvents.map((e) => e.event), ['online', 'restart'])
  assert.equal(store.dropped.events, 2)
  assert.equal(store.dropped.processEvents, 1)
})

test('apps: at most `apps` names, the least recently updated evicted', () => {
  const { store, clock } = clocked({ apps: 2 })
  for (const name of ['a', 'b']) {
    clock.t++
    store.ingest(packet('human:event', { name: 'e', data: {}, process: proc(name) }))
  }
  clock.t++
  store.ingest(packet('human:event', { name: 'e', data: {}, process: proc('a') })) // a is fresher than b
  clock.t++
  store.ingest(packet('human:event', { name: 'e', data: {}, process: proc('c') }))
  assert.deepEqual(Object.keys(store.snapshot().apps).sort(), ['a', 'c'])
  assert.equal(store.dropped.apps, 1)
})

test('transactions: the last aggregate per app, routes bounded', () => {
  const { store } = clocked({ transactionRoutes: 2 })
  const routes = [1, 2, 3].map((i) => ({ path: `/r${i}`, meta: { p95: 9, median: 4, meter: 0.5, count: i, max: 10, min: 1 }, variances: [{}, {}] }))
  store.ingest(packet('axm:transaction', { data: { routes, meta: { trace_count: 6 } }, process: proc('a') }))
  const tx = store.snapshot().apps.a.transaction
  assert.equal(tx.routes_total, 3)
  assert.deepEqual(tx.routes.map((r) => r.path), ['/r1', '/r2'])
  assert.deepEqual(Object.assign({}, tx.routes[1], { meta: undefined }),
    { path: '/r2', count: 2, median: 4, p95: 9, min: 1, max: 10, meter: 0.5, variances: 2, meta: undefined })
  assert.equal(tx.meta, '{"trace_count":6}')
  store.ingest(packet('axm:transaction:learning', { data: { learning_duration: 600000, elapsed: 5000 }, process: proc('a') }))
  assert.deepEqual(Object.assign({}, store.snapshot().apps.a.learning, { at: 0 }), { at: 0, learning_duration: 600000, elapsed: 5000 })
})

test('replies: the trigger packets sent and received, bounded', () => {
  const { store } = clocked({ replies: 3 })
  store.addReply('sent', 'trigger:pm2:action', { method_name: 'restart', parameters: { name: 'a' } })
  for (let i = 0; i < 3; i++) store.ingest(packet('trigger:pm2:result', { ret: { err: null }, meta: { method_name: 'restart', i } }))
  store.ingest(packet('axm:reply', { data: { return: 1 }, process: proc('a') }))
  const r = store.snapshot().replies
  assert.equal(r.length, 3)
  assert.deepEqual(r.map((x) => x.channel), ['trigger:pm2:result', 'trigger:pm2:result', 'axm:reply'])
  assert.equal(store.dropped.replies, 2)
})

test('malformed messages are counted, not kept as state', () => {
  const { store } = clocked()
  store.ingest('not json')
  store.ingest('{"payload":1}')
  assert.equal(store.dropped.malformed, 2)
  const t = JSON.parse(store.trafficJson())
  assert.equal(t.channels[0].channel, '(malformed)')
  assert.equal(t.channels[0].packets, 2)
  assert.deepEqual(t.channels[0].last.map((l) => l.data), ['{"payload":1}', 'not json'])
})

test('traffic: counters per channel (UTF-8 bytes of the JSON text), sorted, the newest packets first', () => {
  const { store, clock } = clocked()
  const a = packet('human:event', { name: 'é', data: {}, process: proc('a') })
  const b = packet('logs', { data: 'x\n', process: proc('a') })
  store.ingest(a)
  clock.t += 10
  store.ingest(b)
  clock.t += 10
  store.ingest(b)
  const t = JSON.parse(store.trafficJson())
  assert.equal(t.source, 'dashboard')
  assert.equal(t.started_at, 1_000_000)
  assert.equal(t.now, 1_000_020)
  assert.deepEqual(t.channels.map((c) => c.channel), ['human:event', 'logs'])
  const ev = t.channels[0]
  assert.equal(ev.bytes, Buffer.byteLength(a))
  assert.equal(ev.bytes, a.length + 1) // é is 2 bytes
  assert.deepEqual(ev.last, [{ at: 1_000_000, bytes: Buffer.byteLength(a), data: JSON.parse(a) }])
  const logs = t.channels[1]
  assert.equal(logs.packets, 2)
  assert.equal(logs.bytes, 2 * b.length)
  assert.deepEqual(logs.last.map((l) => l.at), [1_000_020, 1_000_010])
})

test('traffic: at most 10 packets and 256 KiB kept per channel; a packet over 64 KiB kept truncated', () => {
  const { store } = clocked()
  for (let i = 0; i < 15; i++) store.ingest(packet('small', { i }))
  let t = JSON.parse(store.trafficJson())
  assert.equal(t.channels[0].packets, 15)
  assert.deepEqual(t.channels[0].last.map((l) => l.data.payload.i), [14, 13, 12, 11, 10, 9, 8, 7, 6, 5])

  // 60 KiB packets: 4 fit in 256 KiB, the 5th evicts the oldest.
  for (let i = 0; i < 6; i++) store.ingest(packet('big', { i, pad: 'x'.repeat(60 * 1024) }))
  const big = 'é'.repeat(40 * 1024) // 80 KiB of UTF-8
  store.ingest(packet('huge', { big }))
  t = JSON.parse(store.trafficJson())
  const bigCh = t.channels.find((c) => c.channel === 'big')
  assert.equal(bigCh.packets, 6)
  assert.deepEqual(bigCh.last.map((l) => l.data.payload.i), [5, 4, 3, 2])
  const kept = bigCh.last.reduce((n, l) => n + l.bytes, 0)
  assert.ok(kept <= 256 * 1024, `${kept}`)
  const huge = t.channels.find((c) => c.channel === 'huge')
  assert.equal(huge.last.length, 1)
  assert.equal(huge.last[0].truncated, true)
  assert.equal(huge.last[0].bytes, Buffer.byteLength(packet('huge', { big })))
  assert.equal(typeof huge.last[0].data, 'string')
  const keptBytes = Buffer.byteLength(huge.last[0].data)
  assert.ok(keptBytes <= 64 * 1024 && keptBytes > 64 * 1024 - 4, `${keptBytes}`)
  assert.ok(!huge.last[0].data.includes('\ufffd'), 'cut at a character boundary')
  // Kept memory of the store's own copies, not just of the answer.
  for (const c of store.channels.values()) assert.ok(c.lastBytes <= 256 * 1024 && c.last.length <= 10)
})

test('traffic: per-minute bytes (10 minutes at most, the current one last) and the sliding last minute', () => {
  const { store, clock } = clocked()
  const p = packet('status', { data: { process: [], server: {} } })
  const n = Buffer.byteLength(p)
  for (let m = 0; m < 13; m++) {
    store.ingest(p)
    clock.t += 30000
    store.ingest(p)
    clock.t += 30000
  }
  // 13 minutes × 2 packets; now at the start of minute 13, nothing in it yet.
  let c = JSON.parse(store.trafficJson()).channels[0]
  assert.equal(c.packets, 26)
  assert.equal(c.bytes, 26 * n)
  assert.equal(c.per_minute.length, 10)
  assert.deepEqual(c.per_minute, [...Array(9).fill(2 * n), 0])
  assert.equal(c.bytes_last_minute, n) // the one 30 s ago; the one 60 s ago is out
  clock.t += 61000
  c = JSON.parse(store.trafficJson()).channels[0]
  assert.equal(c.bytes_last_minute, 0)
  assert.ok(store.channels.get('status').minutes.length <= 10)
  assert.ok(store.channels.get('status').seconds.length <= 60)
})

test('traffic: at most `channels` channels, the others counted', () => {
  const { store } = clocked({ channels: 3 })
  for (let i = 0; i < 5; i++) store.ingest(packet(`ch${i}`, { i }))
  assert.equal(store.channels.size, 3)
  assert.equal(store.dropped.channels, 2)
})

test('utf8Prefix cuts at a character boundary', () => {
  assert.equal(utf8Prefix(Buffer.from('aé'), 2), 'a')
  assert.equal(utf8Prefix(Buffer.from('aé'), 3), 'aé')
})
