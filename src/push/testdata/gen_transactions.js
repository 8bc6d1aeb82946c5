'use strict'
// Generates transactions_units.json and transactions_scenario.json: the values
// the JS agent's TransactionAggregator (@pm2/agent 2.1.1, node_modules/pm2-agent-2)
// computes for fixed inputs, kept as data for the Rust tests in
// src/push/transactions/. Run once from the repository root:
//
//   node src/push/testdata/gen_transactions.js
//
// Determinism: Math.random is a mulberry32 generator (src/push/transactions/histogram.rs
// has the same one), Date.now and the timers are a fake clock advanced by hand.
//
// The bugs the port fixes deliberately (docs/js-agent-behaviour.md §6.10) are patched into the
// JS source before it is evaluated, each patch asserted to apply, so the fixtures
// show what the JS computes once fixed; `matchPath` cases also record what the
// unpatched JS returns (`original`), so every behaviour change is visible in the data.

const fs = require('fs')
const path = require('path')
const Module = require('module')

process.env.TZ = 'UTC'
delete process.env.PM2_DEBUG
process.env.NODE_ENV = 'production'

const ROOT = path.resolve(__dirname, '../../..')
const AGENT = path.dirname(require.resolve('pm2-agent-2/package.json', { paths: [ROOT] }))
const AGG_PATH = path.join(AGENT, 'src/push/TransactionAggregator.js')

// ---- deterministic Math.random -------------------------------------------------------
function mulberry32 (seed) {
  let a = seed >>> 0
  return function () {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
let random = mulberry32(1)
Math.random = () => random()

// ---- fake clock and timers ------------------------------------------------------------
const T0 = 1700000000000
let NOW = T0
Date.now = () => NOW
let timers = []
let seq = 0
function timer (fn, ms, repeat) {
  const t = { fn, ms: Number(ms) || 0, due: NOW + (Number(ms) || 0), repeat, seq: seq++ }
  t.unref = () => t
  t.ref = () => t
  timers.push(t)
  return t
}
global.setInterval = (fn, ms) => timer(fn, ms, true)
global.setTimeout = (fn, ms) => timer(fn, ms, false)
global.clearInterval = global.clearTimeout = (t) => { timers = timers.filter((x) => x !== t) }
// Runs every timer due up to `to` in (due, creation) order, like Node would.
function advance (to) {
  for (;;) {
    let next = null
    for (const t of timers) {
      if (t.due <= to && (!next || t.due < next.due || (t.due === next.due && t.seq < next.seq))) next = t
    }
    if (!next) break
    NOW = next.due
    if (next.repeat) {
      next.due += next.ms
      next.seq = seq++
    } else {
      timers = timers.filter((x) => x !== next)
    }
    next.fn()
  }
  NOW = to
}

// ---- the JS code under test -------------------------------------------------------------
const cst = require(path.join(AGENT, 'constants.js'))
const Utility = require(path.join(AGENT, 'src/Utility.js'))
const Histogram = require(path.join(AGENT, 'src/utils/probes/Histogram.js'))

function load (source) {
  const m = new Module(AGG_PATH, module)
  m.filename = AGG_PATH
  m.paths = Module._nodeModulePaths(path.dirname(AGG_PATH))
  m._compile(source, AGG_PATH)
  return m.exports
}

const ORIGINAL_SRC = fs.readFileSync(AGG_PATH, 'utf8')
let fixedSrc = ORIGINAL_SRC
function patch (why, from, to) {
  if (!fixedSrc.includes(from)) throw new Error('patch does not apply (' + why + '): ' + from)
  fixedSrc = fixedSrc.split(from).join(to)
}
patch('matchPath returned the route array for one-segment paths',
  'return routes[path[0]] ? routes[path[0]] : null',
  'return routes[path[0]] ? path[0] : null')
patch('compareList looped `i < one` (an array) and never compared spans',
  'for (let i = 0, len = one; i < len; i++) {',
  'for (let i = 0, len = one.length; i < len; i++) {')
patch('compareList read `.length` of missing labels',
  'if (one[i].labels.length !== two[i].labels.length) return false',
  'if (one[i].labels && one[i].labels.length !== two[i].labels.length) return false')
patch('outlier detection tested an undeclared global',
  "typeof pushInteractor !== 'undefined'",
  "typeof this.pushInteractor !== 'undefined'")
patch('variances were sorted by an undefined `count`',
  'return b.count - a.count',
  'return b.histogram.getCount() - a.histogram.getCount()')
patch('AGGREGATION_DURATION is seconds, setTimeout wants ms',
  '}, cst.AGGREGATION_DURATION)',
  '}, cst.AGGREGATION_DURATION * 1000)')
patch('a trailing slash made a new route that overwrote the previous one each time',
  "    let matched = this.matchPath(path, process.routes)",
  "    while (path.length > 1 && path[path.length - 1] === '/') path = path.substr(0, path.length - 1)\n" +
  "    let matched = this.matchPath(path, process.routes)")
patch('matchPath merged on the last differing segment without checking the others',
  `    for (let i = 0, len = keys.length; i < len; i++) {
      let route = keys[i]
      let segments = route.split('/')

      if (segments.length !== path.length) continue

      for (let j = path.length - 1; j >= 0; j--) {
        // different segment, try to find if new route or not
        if (path[j] !== segments[j]) {
          // if the aggregator already have matched that segment with a wildcard and the next segment is the same
          if (this.isIdentifier(path[j]) && segments[j] === '*' && path[j - 1] === segments[j - 1]) {
            return segments.join('/')
          // case a let in url match, so we continue because they must be other let in url
          } else if (path[j - 1] !== undefined && path[j - 1] === segments[j - 1] && this.isIdentifier(path[j]) && this.isIdentifier(segments[j])) {
            segments[j] = '*'
            // update routes in cache
            routes[segments.join('/')] = routes[route]
            delete routes[keys[i]]
            return segments.join('/')
          } else {
            break
          }
        }

        // if finish to iterate over segment of path, we must be on the same route
        if (j === 0) return segments.join('/')
      }
    }`,
  `    for (let i = 0, len = keys.length; i < len; i++) {
      let route = keys[i]
      let segments = route.split('/')
      if (segments.length !== path.length) continue
      let rename = false
      let j = path.length - 1
      for (; j >= 0; j--) {
        if (path[j] === segments[j]) continue
        if (this.isIdentifier(path[j]) && segments[j] === '*' && path[j - 1] === segments[j - 1]) continue
        if (path[j - 1] !== undefined && path[j - 1] === segments[j - 1] && this.isIdentifier(path[j]) && this.isIdentifier(segments[j])) {
          segments[j] = '*'
          rename = true
          continue
        }
        break
      }
      if (j >= 0) continue
      if (!rename) return route
      let key = segments.join('/')
      if (routes[key] === undefined) {
        routes[key] = routes[route]
        delete routes[route]
      }
      return key
    }
    return null`)

const FixedAggregator = load(fixedSrc)
const OriginalAggregator = load(ORIGINAL_SRC)

// Source files the stack parser "reads" (the Rust tests serve the same).
const FILES = {
  '/app/server.js': [
    "'use strict'",
    "const express = require('express')",
    'const app = express()',
    '',
    "app.get('/users/:id', async (req, res) => {",
    '\tconst user = await db.users.findOne({ id: req.params.id })',
    '  res.json(user)',
    '})',
    '',
    'app.listen(3000)'
  ].join('\n')
}
function stackParser () {
  const cache = new Utility.Cache({ miss: (key) => FILES[key] !== undefined ? FILES[key].split(/\r?\n/) : undefined })
  return new Utility.StackTraceParser({ cache, context: cst.CONTEXT_ON_ERROR })
}

const clone = (v) => JSON.parse(JSON.stringify(v))

function newAggregator (Aggregator, sent) {
  const busHandlers = []
  const agg = new Aggregator({
    _stackParser: stackParser(),
    _ipm2: { bus: { on: (event, fn) => busHandlers.push(fn) } },
    opts: { MACHINE_NAME: 'srv' },
    transport: { send: (channel, payload) => sent.push({ at: NOW - T0, channel, payload: clone(payload) }) }
  })
  clearInterval(agg._worker) // flushes are explicit steps
  agg.busEvent = (packet) => busHandlers.forEach((fn) => fn(packet))
  return agg
}

// ---- unit fixtures ----------------------------------------------------------------------
function pick (rnd, list) { return list[Math.floor(rnd() * list.length)] }
function randomString (rnd, alphabet, maxLen) {
  const n = Math.floor(rnd() * (maxLen + 1))
  let s = ''
  for (let i = 0; i < n; i++) s += pick(rnd, alphabet)
  return s
}

const units = { censor: [], identifier: [], dates: [], match_path: [], histograms: [], ewma: [] }

{
  const agg = newAggregator(FixedAggregator, [])
  const censor = (s) => {
    const span = { labels: { x: s } }
    agg.censorSpans([span])
    return span.labels.x
  }
  const fixed = [
    '{"find":"devdb6.tokens","limit":-1,"skip":0,"query":{"type":"access_token","token":"u00i7l2f5e81"},"slaveOk":false,"batchSize":1}',
    'SELECT * FROM users WHERE mail = ?',
    '{"a":[1,2,3],"b":[{"c":1}],"d":"x\\"y","e":\'q\'}',
    '{"k":\\"escaped\\",\\"n\\":1}',
    '{"k":"unterminated',
    '{"k":"line\nbreak","z":2}',
    '{"k":[1,[2]],"l":[]}',
    '{"k":[1,2',
    '{"k":{"a":1}}',
    '"":', '":', '":"', '":\'', '":\\"', '":[', '":[]', '":[{]', '":{',
    '{"emoji":"😀","next":"é"}',
    '{"a":"b\\', '{"a":"b\\\nc"}', '{"a":"x\u2028y"}'
  ]
  for (const s of fixed) units.censor.push([s, censor(s)])
  const rnd = mulberry32(77)
  const alphabet = ['"', '"', ':', ':', '\\', "'", ',', '{', '}', '[', ']', 'a', 'b', '1', ' ', '\n', 'é']
  for (let i = 0; i < 400; i++) {
    const s = randomString(rnd, alphabet, 24)
    units.censor.push([s, censor(s)])
  }

  const ids = [
    'v1', '123', '65f4ez656', '123e4567-e89b-12d3-a456-426655440000', '123e4567e89b12d3a456426655440000',
    'toto-toto-tooa', 'toto@toto.fr', 'fontawesome-webfont.eot', 'life_is_just_fantasy', 'OR-IS_THIS-REAL_LIFE',
    'bucket', 'admin', 'auth', 'users', 'version', '', '*', '-', '.', '@', '_', 'a-', '-a', 'é-', 'abc', 'ABC', '٣',
    'deadbeef', 'DEADBEEF-DEAD-4EAD-BEEF-DEADBEEFDEAD', 'a b', '..', 'a..', '%20', 'x%2Dy'
  ]
  for (const s of ids) units.identifier.push([s, agg.isIdentifier(s)])
  const rnd2 = mulberry32(78)
  const idAlphabet = ['a', 'z', 'A', 'Z', '0', '9', '@', '-', '_', '.', '*', ' ', 'é', '%']
  for (let i = 0; i < 300; i++) {
    const s = randomString(rnd2, idAlphabet, 6)
    units.identifier.push([s, agg.isIdentifier(s)])
  }

  const dates = [
    '2016-11-11T14:03:18.449Z', '2016-11-11T14:03:18Z', '2016-11-11T14:03Z', '2016-11-11', '2016-11', '2016',
    '2016-11-11T14:03:18.4Z', '2016-11-11T14:03:18.44Z', '2016-11-11T14:03:18.123456Z', '2016-11-11T14:03:18.449+02:00',
    '2016-11-11T14:03:18.449-05:30', '2016-11-11T14:03:18', '2016-11-11T14:03:18.5', '+002016-11-11T14:03:18Z',
    '-000001-01-01T00:00:00Z', '1970-01-01T00:00:00.000Z', '2016-02-30T00:00:00Z', '2016-13-01', '2016-11-11T24:00:00Z',
    '2016-11-11T24:00:01Z', '2016-11-11T23:60:00Z', 'garbage', '', '2016-11-11T14:03:18.449z',
    '2016-11-11T14:03:18.Z', '20161111', '2016-1-1', '2016-11-11T14:03:18+0200'
  ]
  for (const d of dates) {
    const ms = new Date(d).getTime()
    units.dates.push([d, Number.isNaN(ms) ? null : ms])
  }
  for (const n of [0, 1, 1700000000000, 1.9, -1.9, 8.64e15, 8.64e15 + 1, -8.64e15]) {
    const ms = new Date(n).getTime()
    units.dates.push([n, Number.isNaN(ms) ? null : ms])
  }
  units.dates.push([null, new Date(null).getTime()])
  units.dates.push([true, new Date(true).getTime()])
}

{
  const rnd = mulberry32(99)
  const segs = ['users', 'users', '123', '456', '789', 'abc', 'v1', 'v2', 'a-b', 'x.y', 'admin', '', 'bucket',
    'e@x', '*', '550e8400-e29b-41d4-a716-446655440000', 'profile']
  const randomPath = () => {
    const n = 1 + Math.floor(rnd() * 4)
    const parts = []
    for (let i = 0; i < n; i++) parts.push(pick(rnd, segs))
    let p = parts.join('/')
    if (rnd() < 0.1) p = '/'
    while (p.length > 1 && p[p.length - 1] === '/') p = p.substr(0, p.length - 1)
    return p
  }
  const run = (Aggregator, paths) => {
    const agg = newAggregator(Aggregator, [])
    const routes = {}
    return paths.map((p) => {
      let matched = agg.matchPath(p, routes)
      if (typeof matched !== 'string' || matched === '') {
        routes[p] = {}
        matched = null
      }
      return { path: p, matched, routes: Object.keys(routes) }
    })
  }
  const fixedCases = [
    ['bucket/6465577', 'bucket/67754', 'toto/67754', 'bucket/87998'],
    ['users', 'users', 'users/1', 'users/2', 'users/1'],
    ['a/b/1', 'c/b/2', 'a/b/3'],
    ['a/1/2', 'a/3/4', 'a/*/c', 'a/5/c', 'a/6/c'],
    ['/', '/', '1', '1', '2']
  ]
  const seqs = fixedCases.slice()
  for (let i = 0; i < 60; i++) {
    const n = 2 + Math.floor(rnd() * 8)
    const paths = []
    for (let k = 0; k < n; k++) paths.push(randomPath())
    seqs.push(paths)
  }
  for (const paths of seqs) {
    const steps = run(FixedAggregator, paths)
    const original = run(OriginalAggregator, paths)
    units.match_path.push({
      steps,
      original_differs: JSON.stringify(steps) !== JSON.stringify(original),
      original
    })
  }
}

{
  const histCase = (seed, n, stepFn) => {
    random = mulberry32(seed)
    NOW = T0
    const h = new Histogram({ measurement: 'median' })
    const values = mulberry32(seed + 1000)
    const updates = []
    const checkpoints = []
    for (let i = 0; i < n; i++) {
      NOW = T0 + stepFn(i)
      const v = Math.round(values() * 1000) - 20
      h.update(v)
      updates.push([v, NOW - T0])
      if ([0, 1, 2, 9, 99, 1027, 1028, 1500, n - 1].includes(i)) {
        const p = h.percentiles([0.5, 0.75, 0.95, 0.99, 0.999])
        checkpoints.push({ after: i + 1, min: h.getMin(), max: h.getMax(), count: h.getCount(), p50: p[0.5], p75: p[0.75], p95: p[0.95], p99: p[0.99], p999: p[0.999] })
      }
    }
    units.histograms.push({ seed, updates, checkpoints })
  }
  histCase(1, 12, (i) => i * 10)
  histCase(2, 1600, (i) => i * 7)
  // crosses the hourly rescale twice, with a long idle gap
  histCase(3, 2500, (i) => (i < 1200 ? i * 2500 : 1200 * 2500 + 5 * 3600 * 1000 + (i - 1200) * 1000))
  random = mulberry32(1)
}

{
  const ewmaCase = (ops) => {
    timers = []
    NOW = T0
    const e = new Utility.EWMA()
    const out = []
    for (const [at, op, n] of ops) {
      advance(T0 + at)
      if (op === 'update') e.update(n)
      else out.push([at, e.rate(1000), Math.round(e.rate(1000) * 100) / 100])
    }
    units.ewma.push({ ops, rates: out })
  }
  ewmaCase([[0, 'rate'], [1000, 'update'], [4999, 'rate'], [5000, 'rate'], [5001, 'update', 3], [9999, 'rate'], [10000, 'rate'], [61000, 'rate']])
  const ops = []
  const rnd = mulberry32(5)
  let t = 0
  for (let i = 0; i < 400; i++) {
    t += Math.floor(rnd() * 900)
    ops.push(rnd() < 0.85 ? [t, 'update', rnd() < 0.2 ? 2 : undefined] : [t, 'rate'])
  }
  ops.push([t + 30000, 'rate'], [t + 3600000, 'rate'])
  ewmaCase(ops.map((o) => o.filter((x) => x !== undefined)))
}

// ---- full scenario ----------------------------------------------------------------------
function scenario () {
  timers = []
  NOW = T0
  random = mulberry32(2024)
  cst.AGGREGATION_DURATION = 12 // seconds (the fixed learning period really lasts this)
  const sent = []
  const agg = newAggregator(FixedAggregator, sent)
  const steps = []
  const vals = mulberry32(31337)
  const iso = (ms) => new Date(ms).toISOString()
  const stack = JSON.stringify({
    stack_frame: [
      { file_name: 'events.js', line_number: 10, column_number: 10, method_name: '<anonymous>' },
      { file_name: '/app/node_modules/express/lib/router.js', line_number: 5, column_number: 2, method_name: 'next' },
      { file_name: '/app/server.js', line_number: 6, column_number: 3, method_name: 'handler' }
    ]
  })
  let spanId = 0
  const procs = {
    api: { pm_id: 1, name: 'api', rev: null, server: 'srv' },
    worker: { pm_id: 0, name: 'worker', rev: 'r1', server: 'srv' },
    nopath: { pm_id: 3, name: 'nopath', rev: null, server: 'srv' }
  }
  // kinds of children: which spans a request makes
  const shapes = {
    plain: [],
    mongo: [['mongo-cursor', 'RPC_CLIENT', { db: 'prod.users', cmd: '{"find":"prod.users","query":{"id":"42"},"limit":1}', results: '{...}' }]],
    sql: [['redis-get', 'RPC_CLIENT', { command: 'get', arguments: '["session:1"]' }],
      ['mysql-query', 'RPC_CLIENT', { sql: 'SELECT * FROM t WHERE a = ?', values: '[1]', result: 'x', stacktrace: stack }]],
    http: [['http-request', 'RPC_CLIENT', { 'http/method': 'GET', 'http/status_code': '200', 'http/url': 'http://x/y' }],
      ['pg-query', 'RPC_CLIENT', { sql: 'select 1' }]]
  }
  const trace = (app, route, shape, slow) => {
    const end = NOW
    const children = shapes[shape]
    const durs = children.map(() => 1 + Math.floor(vals() * 40) * (slow || 1))
    const total = durs.reduce((a, b) => a + b, 0) + 5 + Math.floor(vals() * 50) * (slow || 1)
    const rootId = ++spanId
    const spans = [{
      name: route,
      parentSpanId: '0',
      spanId: rootId,
      kind: 'RPC_SERVER',
      labels: {
        'http/method': 'GET',
        'http/path': route,
        'http/url': 'http://localhost' + route + '?q={"a":"b"}',
        'http/status_code': '200',
        stacktrace: stack
      },
      startTime: iso(end - total),
      endTime: iso(end)
    }]
    let t = end - total + 2
    children.forEach(([name, kind, labels], i) => {
      spans.push({ name, parentSpanId: rootId, spanId: ++spanId, kind, labels: Object.assign({}, labels), startTime: iso(t), endTime: iso(t + durs[i]) })
      t += durs[i]
    })
    return { data: { projectId: 0, traceId: 'trace-' + spanId, spans }, process: Object.assign({}, procs[app]) }
  }
  const at = (ms) => { advance(T0 + ms) }
  const doTrace = (ms, packet) => {
    at(ms)
    steps.push({ at: ms, op: 'trace', packet: clone(packet) })
    agg.aggregate(clone(packet))
  }
  const doEvent = (ms, packet) => {
    at(ms)
    steps.push({ at: ms, op: 'event', packet: clone(packet) })
    agg.busEvent(clone(packet))
  }
  const doFlush = (ms) => {
    at(ms)
    steps.push({ at: ms, op: 'flush' })
    const normalized = agg.prepareAggregationforShipping()
    Object.keys(normalized).forEach((key) => sent.push({ at: ms, channel: 'axm:transaction', payload: clone(normalized[key]) }))
  }

  const routes = ['/users/123', '/users/456', '/users/789/profile', '/users', '/', '/health/', '/health',
    '/api/v1/items', '/api/v2/items', '/static/fontawesome-webfont.eot', '/orders/550e8400-e29b-41d4-a716-446655440000',
    '/users/123/']
  const shapeNames = Object.keys(shapes)
  let ms = 1000
  for (let i = 0; i < 48; i++) {
    ms += 150 + Math.floor(vals() * 300)
    NOW = T0 + ms
    doTrace(ms, trace('api', routes[i % routes.length], shapeNames[Math.floor(i / 3) % shapeNames.length]))
    if (i % 5 === 0) {
      NOW = T0 + ms
      doTrace(ms, trace('worker', '/jobs/' + (i + 1), i % 10 === 0 ? 'mongo' : 'plain'))
    }
  }
  // a span with equal start/end is dropped; a trace without http/path only creates the app
  NOW = T0 + 20000
  const t1 = trace('api', '/users/123', 'mongo')
  t1.data.spans[1].endTime = t1.data.spans[1].startTime
  doTrace(20000, t1)
  doTrace(20001, { data: { spans: [{ name: 'x', kind: 'RPC_SERVER', labels: {} }] }, process: procs.nopath })
  doFlush(30000)
  // outlier: a much slower request on an established variance
  for (let i = 0; i < 6; i++) {
    NOW = T0 + 31000 + i * 100
    doTrace(31000 + i * 100, trace('api', '/users/123', 'mongo'))
  }
  NOW = T0 + 32000
  doTrace(32000, trace('api', '/users/321', 'mongo', 20))
  doEvent(33000, { event: 'online', process: { name: 'ghost', pm_id: 9 } })
  doEvent(40000, { event: 'online', process: { name: 'api', pm_id: 1, versioning: { revision: 'abc123' } } })
  for (let i = 0; i < 4; i++) {
    NOW = T0 + 41000 + i * 1000
    doTrace(41000 + i * 1000, trace('api', '/users/' + (100 + i), i === 3 ? 'plain' : 'mongo', i === 3 ? 30 : 1))
  }
  doFlush(45000)
  NOW = T0 + 50500
  doTrace(50500, trace('worker', '/jobs/77', 'plain'))
  doFlush(60000)
  doEvent(61000, { event: 'stop', process: { name: 'worker', pm_id: 0 } })
  doFlush(90000)
  // two hours later: the meters have decayed, the reservoirs rescale
  for (let i = 0; i < 5; i++) {
    NOW = T0 + 7200000 + i * 500
    doTrace(7200000 + i * 500, trace('api', '/users/' + (200 + i), 'sql'))
  }
  doFlush(7230000)
  return { t0_note: 'times are ms after the aggregator was created', learning_duration_s: 12, server: 'srv', files: FILES, steps, expected: sent }
}

const scen = scenario()
fs.writeFileSync(path.join(__dirname, 'transactions_units.json'), JSON.stringify(units) + '\n')
fs.writeFileSync(path.join(__dirname, 'transactions_scenario.json'), JSON.stringify(scen, null, 1) + '\n')
const channels = {}
for (const p of scen.expected) channels[p.channel] = (channels[p.channel] || 0) + 1
console.log('units:', Object.fromEntries(Object.entries(units).map(([k, v]) => [k, v.length])))
console.log('scenario: %d steps, sent %j', scen.steps.length, channels)
console.log('match_path sequences where the unpatched JS differs: %d', units.match_path.filter((c) => c.original_differs).length)
