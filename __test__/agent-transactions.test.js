'use strict'
// Black-box: a real PM2 app sends traces over IPC (`process.send({type: 'axm:trace', …})`,
// the shape @pm2/io's tracing sent), PM2 puts them on its bus, and the agent (launched as
// PM2 launches it) aggregates them into `axm:transaction` packets at the local PM2.io
// stand-in. TRACE_FLUSH_INTERVAL is 1 s here (PM2_TRACE_FLUSH_INTERVAL), the learning
// period after a restart 6 s (PM2_AGGREGATION_DURATION).

const test = require('node:test')
const assert = require('node:assert/strict')
const { Backend } = require('./helpers/backend')
const { tmpHome, pm2, writeApp, killPm2 } = require('./helpers/pm2')

const home = tmpHome('ka-tx-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_TRACE_FLUSH_INTERVAL = '1000'
process.env.PM2_AGGREGATION_DURATION = '6'
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')

const KEYS = { secret_key: 'secret-tx', public_key: 'pub-tx', machine_name: 'tx-machine' }
let backend
let app

function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

function launch () {
  return new Promise((resolve, reject) => {
    InteractorClient.launchAndInteract({}, Object.assign({ info_node: backend.url }, KEYS), (err, msg) => {
      if (err) return reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
      resolve(msg)
    })
  })
}

// Fixed durations, so the percentiles do not depend on timing: /users/<id> takes 20 ms
// with a 5 ms mongo query, /health 2 ms; a span with equal start and end is dropped.
const APP = `
let n = 0
const iso = (ms) => new Date(ms).toISOString()
function send (path, total, children) {
  const t = Date.now()
  const spans = [{
    name: path, kind: 'RPC_SERVER', spanId: String(++n), parentSpanId: '0',
    labels: { 'http/method': 'GET', 'http/path': path, 'http/status_code': '200' },
    startTime: iso(t - total), endTime: iso(t)
  }]
  for (const [name, dur, labels] of children) {
    spans.push({ name, kind: 'RPC_CLIENT', spanId: String(++n), parentSpanId: spans[0].spanId,
      labels, startTime: iso(t - total + 1), endTime: iso(t - total + 1 + dur) })
  }
  process.send({ type: 'axm:trace', data: { projectId: 0, traceId: 'trace' + n, spans } })
}
let i = 0
setInterval(() => {
  i++
  send('/users/' + (i % 7 + 1), 20, [
    ['mongo-find', 5, { cmd: '{"find":"users","query":{"email":"secret@example.com"}}', results: 'rows' }],
    ['noop', 0, {}]
  ])
  if (i % 3 === 0) send(i % 2 ? '/health' : '/health/', 2, [])
}, 50)
`

test.before(async () => {
  app = writeApp(home, 'traced.js', APP)
  backend = await new Backend().start()
  await pm2(home, ['start', app, '--name', 'traced'])
  await launch()
  await backend.waitConnected()
})

test.after(async () => {
  await new Promise((resolve) => InteractorClient.killInteractorDaemon(constants, () => resolve()))
  await killPm2(home)
  if (backend) await backend.stop()
})

const isTx = (name) => (p) => p.channel === 'axm:transaction' && p.payload.process && p.payload.process.name === name

test('traces are aggregated into routes with percentiles and meters', async () => {
  // The HTTP meter's first EWMA tick is 5 s after the app's first trace.
  const tx = await backend.waitFor((p) => isTx('traced')(p) && p.payload.data.meta.http_meter > 0,
    30000, 'axm:transaction with a rate')
  const { data, process: proc } = tx.payload
  assert.equal(proc.server, KEYS.machine_name)
  assert.equal(proc.rev, null)

  const paths = data.routes.map((r) => r.path).sort()
  assert.deepEqual(paths, ['/health', '/users/*'], 'ids collapse, trailing slash ignored')
  const users = data.routes.find((r) => r.path === '/users/*')
  const health = data.routes.find((r) => r.path === '/health')
  assert.deepEqual(
    { min: users.meta.min, max: users.meta.max, median: users.meta.median, p95: users.meta.p95 },
    { min: 20, max: 20, median: 20, p95: 20 })
  assert.equal(health.meta.median, 2)
  assert.ok(users.meta.meter > 0)
  assert.equal(data.meta.trace_count, users.meta.count + health.meta.count)

  // A variance is a sequence of span names: the root span is named after the concrete
  // path, so /users/1 … /users/7 are 7 variances of the route, the top 5 sent, by count.
  assert.equal(users.variances.length, 5)
  const counts = users.variances.map((v) => v.count)
  assert.deepEqual(counts, counts.slice().sort((a, b) => b - a))
  assert.ok(counts.reduce((a, b) => a + b) <= users.meta.count)
  assert.ok(users.variances.every((v) => /^\/users\/[1-7]$/.test(v.spans[0].name)))
  const v = users.variances[0]
  // The zero-length `noop` span is dropped.
  assert.equal(v.spans.length, 2)
  assert.equal(v.spans[0].kind, 'RPC_SERVER')
  assert.equal(health.variances.length, 2, '/health and /health/ spans are named differently')
  const mongo = v.spans[1]
  assert.equal(mongo.name, 'mongo-find')
  assert.deepEqual({ min: mongo.min, max: mongo.max, median: mongo.median }, { min: 5, max: 5, median: 5 })
  // Censored label values; results and span ids removed.
  assert.equal(mongo.labels.cmd, '{"find": "?","query":{"email": "?"}}')
  assert.equal(mongo.labels.results, undefined)
  assert.equal(mongo.spanId, undefined)

  assert.equal(data.meta.db_percentiles.mongo, 5)
  assert.equal(data.meta.http_percentiles.p99, 20)
  assert.ok(data.meta.http_percentiles.median >= 2 && data.meta.http_percentiles.median <= 20)
  assert.ok(data.meta.http_meter > 0)
  assert.ok(data.meta.db_meter > 0)
  // Key order as the JS agent's fclone leaves it.
  assert.deepEqual(Object.keys(data.meta), ['db_percentiles', 'http_percentiles', 'db_meter', 'http_meter', 'trace_count'])
  assert.deepEqual(Object.keys(users.meta), ['p95', 'median', 'meter', 'count', 'max', 'min'])
})

test('flushes come every TRACE_FLUSH_INTERVAL with growing counts', async () => {
  const count = () => backend.received.filter(isTx('traced')).length
  const before = count()
  await sleep(3200)
  const n = count() - before
  assert.ok(n >= 2 && n <= 4, `${n} flushes in 3.2 s`)
  const all = backend.received.filter(isTx('traced')).map((p) => p.payload.data.meta.trace_count)
  assert.ok(all[all.length - 1] > all[0], 'cumulative')
})

test('a restart resets the app and starts a learning period', async () => {
  const mark = backend.received.length
  await pm2(home, ['restart', 'traced'])
  const learning = await backend.waitFor((p) => p.channel === 'axm:transaction:learning' &&
    backend.received.indexOf(p) >= mark, 15000, 'axm:transaction:learning')
  assert.equal(learning.payload.data.learning_duration, 6)
  assert.ok(learning.payload.data.elapsed >= 5000 && learning.payload.data.elapsed < 6000, String(learning.payload.data.elapsed))
  assert.deepEqual(learning.payload.process, { name: 'traced', rev: null, server: KEYS.machine_name })
  const learningAt = backend.received.indexOf(learning)
  // No axm:transaction for the app while it learns, a fresh count after.
  const during = backend.received.slice(mark, learningAt).filter(isTx('traced'))
  assert.ok(during.length <= 1, `${during.length} flushes while learning`) // one may race the restart
  const after = await backend.waitFor((p) => isTx('traced')(p) && backend.received.indexOf(p) > learningAt, 15000, 'flush after learning')
  const before = backend.received.slice(0, mark).filter(isTx('traced')).pop()
  // Created by a trace: the normalised process, pm_id 0 kept (JS deletes only a truthy one).
  assert.deepEqual(before.payload.process, { pm_id: 0, name: 'traced', rev: null, server: KEYS.machine_name })
  // Reset by `online`: the JS reset process, and the count restarted (~27 traces/s: without
  // the reset it would have grown by the ~6 s of learning on top of the old count).
  assert.deepEqual(after.payload.process, { name: 'traced', rev: null, server: KEYS.machine_name })
  assert.ok(after.payload.data.meta.trace_count < before.payload.data.meta.trace_count + 100,
    `${after.payload.data.meta.trace_count} vs ${before.payload.data.meta.trace_count}`)
})

test('stopping the app drops its aggregation', async () => {
  await pm2(home, ['stop', 'traced'])
  await sleep(1500)
  const mark = backend.received.length
  await sleep(2500)
  const later = backend.received.slice(mark).filter(isTx('traced'))
  assert.deepEqual(later, [], 'no axm:transaction after stop')
  // Traces bring it back (no learning period: the app was unknown).
  await pm2(home, ['start', 'traced'])
  const back = await backend.waitFor((p) => isTx('traced')(p) && backend.received.indexOf(p) >= mark, 15000, 'app back')
  assert.ok(back.payload.data.meta.trace_count > 0)
})
