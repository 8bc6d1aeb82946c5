'use strict'
// Black-box: PM2.io outages and floods lose nothing silently. A real PM2 app
// emits numbered custom events; the local PM2.io stand-in refuses WebSocket
// connections for a while (verifyPM2 keeps answering), or reads slowly.
// While nothing carries the traffic the agent spools it on disk under
// PM2_HOME and replays it in order once connected again.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { tmpHome, pm2, writeApp, killPm2, waitUntil } = require('./helpers/pm2')
const { sleep, launchAgent, getInfos, killAgent, agentLog } = require('./helpers/agent')

const home = tmpHome('ka-outage-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
for (const k of ['WS_JSON_PATCH', 'AGENT_TRANSPORT_WEBSOCKET', 'AGENT_TRANSPORT_AXON', 'PM2_AGENT_SPOOL_BYTES']) delete process.env[k]

const KEYS = { secret_key: 'outage-secret', public_key: 'outage-pub', machine_name: 'outage-machine', pm2_version: '7.0.4' }
// The outage of the issue: 90 s.
const OUTAGE_MS = 90000
let backend

const seqsOf = (packets, name = 'seq') => packets
  .filter((p) => p.channel === 'human:event' && p.payload.name === name)
  .map((p) => p.payload.data.seq)

/** Missing values between the smallest and the largest, and duplicates. */
function gaps (seqs) {
  const seen = new Set()
  const dups = []
  for (const s of seqs) { if (seen.has(s)) dups.push(s); seen.add(s) }
  const lo = Math.min(...seqs)
  const hi = Math.max(...seqs)
  const missing = []
  for (let i = lo; i <= hi; i++) if (!seen.has(i)) missing.push(i)
  return { lo, hi, missing, dups }
}

/** The agent process's pid. */
const agentPid = () => parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8'))

test.before(async () => {
  const eventer = writeApp(home, 'eventer.js',
    "let seq = 0\nsetInterval(() => process.send({ type: 'human:event', data: { __name: 'seq', seq: seq++ } }), 200)\n")
  await pm2(home, ['start', eventer, '--name', 'eventer'])
  backend = await new Backend().start()
})

test.after(async () => {
  await killAgent()
  await killPm2(home)
  if (backend) await backend.stop()
  fs.rmSync(home, { recursive: true, force: true })
})

test('(a) a 90 s outage: every event arrives exactly once, in order; back within 10 s of the backend', async () => {
  await launchAgent(backend, KEYS)
  await waitUntil(() => seqsOf(backend.received).length > 10, 20000, 100, 'events before the outage')
  backend.outage(true)
  await sleep(OUTAGE_MS)
  const infos = await getInfos()
  assert.equal(infos.connected, false)
  assert.ok(infos.transport.routes[0].spool.records > 0, JSON.stringify(infos.transport.routes[0].spool))
  const lastBefore = Math.max(...seqsOf(backend.received))
  const handshakes = backend.wsHandshakes.length
  const back = Date.now()
  backend.outage(false)
  await waitUntil(() => backend.wsHandshakes.length > handshakes, 15000, 50, 'the agent back')
  const after = Date.now() - back
  assert.ok(after <= 10000, `reconnected ${after} ms after the backend's return`)
  // Everything emitted during the outage (≈ 450 events) and after.
  await waitUntil(() => Math.max(...seqsOf(backend.received)) > lastBefore + 450 + 10, 30000, 100, 'the replay and new events')
  const g = gaps(seqsOf(backend.received))
  assert.deepEqual(g.missing, [], `events ${g.lo}..${g.hi}`)
  assert.deepEqual(g.dups, [], 'no event twice')
  // In order: the sequence as received only goes up.
  const seqs = seqsOf(backend.received)
  assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'in order')
  await waitUntil(async () => (await getInfos()).transport.routes[0].spool.records === 0, 10000, 100, 'the spool emptied')
})

test('(b) the agent SIGKILLed and relaunched mid-outage replays what the first one spooled', async () => {
  const before = backend.received.length
  backend.outage(true)
  await sleep(20000)
  const pid = agentPid()
  const killedAt = Math.max(...seqsOf(backend.received)) // the last one sent live
  process.kill(pid, 'SIGKILL')
  await waitUntil(() => { try { process.kill(pid, 0); return false } catch (e) { return true } }, 10000, 50, 'agent dead')
  const relaunched = Date.now()
  await launchAgent(backend, KEYS)
  const downMs = Date.now() - relaunched
  await sleep(20000)
  backend.outage(false)
  await waitUntil(() => seqsOf(backend.received.slice(before)).length > 40 * 5, 60000, 100, 'the replay of both agents')
  await sleep(3000)
  const g = gaps(seqsOf(backend.received))
  assert.deepEqual(g.dups, [], 'no event twice')
  // Events emitted while no agent was subscribed to PM2's bus cannot be
  // recovered (PM2 does not keep them): at most one run of them, around
  // the kill, and no longer than the relaunch took (5 events/s, + margin).
  const runs = []
  for (const m of g.missing) {
    if (runs.length && runs[runs.length - 1][1] === m - 1) runs[runs.length - 1][1] = m
    else runs.push([m, m])
  }
  assert.ok(runs.length <= 1, `missing runs: ${JSON.stringify(runs)}`)
  if (runs.length) {
    assert.ok(runs[0][0] > killedAt, `the gap ${JSON.stringify(runs[0])} comes after the kill (last live ${killedAt})`)
    assert.ok(runs[0][1] - runs[0][0] + 1 <= Math.ceil((downMs + 3000) / 200), `gap ${JSON.stringify(runs[0])} vs relaunch ${downMs} ms`)
  }
})

test('(c) a 64 KiB spool: the oldest are dropped, counted in getInfos, summarised in ≤ 2 log lines', async () => {
  await killAgent()
  const big = writeApp(home, 'big.js',
    "let seq = 0\nsetInterval(() => process.send({ type: 'human:event', data: { __name: 'big', seq: seq++, pad: 'x'.repeat(1000) } }), 50)\n")
  await pm2(home, ['start', big, '--name', 'big'])
  process.env.PM2_AGENT_SPOOL_BYTES = String(64 * 1024)
  try {
    const logBefore = agentLog().length
    await launchAgent(backend, KEYS)
    await waitUntil(() => seqsOf(backend.received, 'big').length > 5, 20000, 100, 'big events')
    backend.outage(true)
    await sleep(15000) // ≈ 300 KB of events for a 64 KiB spool
    const infos = await getInfos()
    const spool = infos.transport.routes[0].spool
    assert.ok(spool.bytes <= 64 * 1024 + 64 * 1024, `spool ${spool.bytes} bytes`)
    // (A dropped record's channel is not read back from disk: `spool`.)
    const full = infos.drops.filter((d) => d.reason.includes('spool full'))
    assert.ok(full.some((d) => d.channel === 'spool' && d.count > 50), JSON.stringify(infos.drops))
    const lines = agentLog().slice(logBefore).split('\n').filter((l) => l.includes('spool full'))
    assert.ok(lines.length >= 1 && lines.length <= 2, lines.join('\n'))
    backend.outage(false)
    // The newest survive: the last big events emitted during the outage arrive.
    const lastLive = Math.max(...seqsOf(backend.received, 'big'))
    await waitUntil(() => Math.max(...seqsOf(backend.received, 'big')) > lastLive + 250, 30000, 100, 'the newest big events')
  } finally {
    backend.outage(false)
    delete process.env.PM2_AGENT_SPOOL_BYTES
    await pm2(home, ['delete', 'big'])
  }
})

test('(d) a 2 000 lines/s flood for 30 s to a slow backend: agent.log stays short, RSS bounded, status every second', async () => {
  const flood = writeApp(home, 'flood.js',
    "let i = 0\nsetInterval(() => { for (let k = 0; k < 20; k++) console.log('flood line ' + (i++) + ' ' + 'y'.repeat(80)) }, 10)\n")
  await pm2(home, ['start', flood, '--name', 'flood'])
  try {
    await backend.waitConnected()
    backend.send('trigger:pm2:action', { method_name: 'startLogging', parameters: {} })
    await waitUntil(() => backend.received.some((p) => p.channel === 'logs'), 20000, 100, 'logs streaming')
    const logBefore = agentLog().split('\n').length
    backend.slowReader(400, 1000)
    const statusesBefore = backend.statuses.length
    const t0 = Date.now()
    let maxRss = 0
    const pid = agentPid()
    while (Date.now() - t0 < 30000) {
      const rss = parseInt(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) * 1024
      maxRss = Math.max(maxRss, rss)
      await sleep(500)
    }
    backend.slowReader(0)
    const grew = agentLog().split('\n').length - logBefore
    assert.ok(grew < 50, `agent.log grew by ${grew} lines`)
    // Bound stated in the README: the queues (8 MiB) on top of an idle
    // agent hosted in Node (≈ 50 MB).
    assert.ok(maxRss < 120 * 1024 * 1024, `RSS ${maxRss}`)
    const statuses = backend.statuses.length - statusesBefore
    assert.ok(statuses >= 20, `${statuses} statuses in 30 s`)
  } finally {
    await pm2(home, ['delete', 'flood'])
  }
})
