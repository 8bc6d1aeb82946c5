#!/usr/bin/env node
'use strict'
// Benchmark: the reference JS agent (@pm2/agent 2.1.1) against ours, in both
// daemon modes (node-hosted: `node src/InteractorDaemon.js` with the addon;
// native: the `keymetrics-agent-daemon.<platform>` binary), on the same
// workload, against a real PM2 (pm2@7, private PM2_HOME) and a local PM2.io
// stand-in (__test__/helpers/backend.js).
//
//   npm run bench [-- options]   (= npm run build:dist && node bench/compare.js)
//   node bench/compare.js [--window 60] [--settle 10] [--only js,ours,native]
//                         [--native-bin path] [--apps 10,50] [--lines 50000]
//                         [--batch 10] [--pause 1] [--no-flood]
//                         [--bus 20000,60000] [--bus-seconds 10] [--no-bus]
//                         [--wire 10] [--no-wire] [--keep] [--out file]
//
// Scenarios (each agent gets a fresh PM2 + backend per scenario; JS first,
// then ours (node), then ours (native), scenario by scenario):
//   idle-<N>  N idle apps; after settling, measure the agent daemon's CPU over
//             the window and its memory at the end.
//   flood     one app writes --lines log lines (one write of --batch lines
//             every --pause ms; --pause 0 = as fast as it can), after the
//             backend enabled log streaming (startLogging); measure
//             the daemon's CPU during the flood and what reached the backend.
//   bus-<R>   no real PM2: a synthetic PM2 (child process: pm2-axon pub-emitter
//             on pub.sock, pm2-axon-rpc server on rpc.sock) publishes `log:out`
//             at R msgs/s for --bus-seconds, after startLogging; measure loss,
//             delivery latency, delivered rate, CPU per published message and
//             the publisher's memory / pub socket backlog.
//   wire-<N>  N idle apps and one that logs a line every 100 ms, log
//             streaming on; the bytes the agent sends on the WebSocket per
//             minute (counted at the backend's socket), run twice per agent:
//             without WS_GZIP, then with WS_GZIP=true (permessage-deflate,
//             the backend's `ws` accepting it).
// See bench/README.md for what each number means.

const { spawn, fork, execFileSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const ROOT = path.join(__dirname, '..')
const { Backend } = require('../__test__/helpers/backend.js')
const { pm2, jlist, killPm2, waitUntil, writeApp } = require('../__test__/helpers/pm2.js')
const jsonpatch = require('fast-json-patch')
const axon = require('pm2-axon')

// ---------------------------------------------------------------- options

function parseArgs (argv) {
  const o = {
    window: 60,
    settle: 10,
    baseline: 5,
    only: null,
    nativeBin: null,
    apps: [10, 50],
    flood: true,
    bus: [20000, 60000],
    busSeconds: 10,
    wire: 10,
    lines: 50000,
    batch: 10,
    pause: 1,
    connectTimeout: 30,
    quiet: 3,
    keep: false,
    out: null
  }
  const num = (name, v) => {
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) die(`--${name} expects a number, got ${JSON.stringify(v)}`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    let v = null
    const eq = a.indexOf('=')
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq) }
    const next = () => (v !== null ? v : argv[++i])
    switch (a) {
      case '--window': o.window = num('window', next()); break
      case '--settle': o.settle = num('settle', next()); break
      case '--baseline': o.baseline = num('baseline', next()); break
      case '--only': o.only = String(next()).split(',').map((x) => x.trim()).filter(Boolean); break
      case '--native-bin': o.nativeBin = path.resolve(String(next())); break
      case '--apps': o.apps = String(next()).split(',').filter(Boolean).map((x) => num('apps', x)); break
      case '--lines': o.lines = num('lines', next()); break
      case '--batch': o.batch = num('batch', next()); break
      case '--pause': o.pause = num('pause', next()); break
      case '--connect-timeout': o.connectTimeout = num('connect-timeout', next()); break
      case '--quiet': o.quiet = num('quiet', next()); break
      case '--no-flood': o.flood = false; break
      case '--bus': o.bus = String(next()).split(',').filter(Boolean).map((x) => num('bus', x)); break
      case '--bus-seconds': o.busSeconds = num('bus-seconds', next()); break
      case '--no-bus': o.bus = []; break
      case '--wire': o.wire = num('wire', next()); break
      case '--no-wire': o.wire = 0; break
      case '--keep': o.keep = true; break
      case '--out': o.out = next(); break
      case '-h': case '--help':
      {
        const lines = fs.readFileSync(__filename, 'utf8').split('\n').slice(2) // the header comment
        const n = lines.findIndex((l) => !l.startsWith('//'))
        console.log(lines.slice(0, n).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'))
      }
        process.exit(0)
        break
      default: die(`unknown option ${a} (see --help)`)
    }
  }
  if (o.only && (!o.only.length || o.only.some((a) => !AGENTS[a]))) die(`--only expects a list of ${Object.keys(AGENTS).join(', ')}`)
  if (o.window <= 0) die('--window must be > 0')
  if (o.lines > 999999) die('--lines must be < 1000000')
  if (o.bus.some((r) => r <= 0)) die('--bus rates must be > 0')
  if (o.busSeconds <= 0) die('--bus-seconds must be > 0')
  if (o.bus.some((r) => r * o.busSeconds > 50e6)) die('--bus rate × --bus-seconds must be ≤ 50,000,000 messages')
  return o
}

function die (msg) {
  console.error(`bench: ${msg}`)
  process.exit(2)
}

const AGENTS = {
  js: {
    label: 'JS agent',
    script: path.join(ROOT, 'node_modules', 'pm2-agent-2', 'src', 'InteractorDaemon.js'),
    version: safeVersion(path.join(ROOT, 'node_modules', 'pm2-agent-2', 'package.json'))
  },
  ours: {
    label: 'ours (node)',
    script: path.join(ROOT, 'src', 'InteractorDaemon.js'),
    version: safeVersion(path.join(ROOT, 'package.json'))
  },
  native: {
    label: 'ours (native)',
    script: null, // the binary itself, run with no argument: see resolveNativeBin()
    native: true,
    version: safeVersion(path.join(ROOT, 'package.json'))
  }
}
const OURS = ['ours', 'native'] // our daemon modes, each compared with 'js'

function safeVersion (file) {
  try { return JSON.parse(fs.readFileSync(file, 'utf8')).version } catch (e) { return null }
}

const PM2_VERSION = safeVersion(path.join(ROOT, 'node_modules', 'pm2', 'package.json')) || '0.0.0'
const MACHINE = { name: 'bench-machine', pub: 'benchpublickey0', secret: 'benchsecretkey00' }

let CLK_TCK = 100
try { CLK_TCK = parseInt(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }), 10) || 100 } catch (e) {}

// ---------------------------------------------------------------- /proc

/** utime+stime of the whole process (all threads, dead ones included), s. */
function statCpu (pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  // f[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(f[11]) + Number(f[12])) / CLK_TCK
}

/** Sum of the live threads' run time from schedstat (ns precision), s. */
function schedCpu (pid) {
  let ns = 0
  let ok = false
  let tasks = []
  try { tasks = fs.readdirSync(`/proc/${pid}/task`) } catch (e) { return null }
  for (const t of tasks) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0])
      ok = true
    } catch (e) {}
  }
  return ok ? ns / 1e9 : null
}

function cpuSample (pid) {
  return { t: performance.now(), stat: statCpu(pid), sched: schedCpu(pid) }
}

/** Per-thread run time (schedstat, s) keyed by `tid:comm`. */
function threadCpu (pid) {
  const out = {}
  let tasks = []
  try { tasks = fs.readdirSync(`/proc/${pid}/task`) } catch (e) { return out }
  for (const t of tasks) {
    try {
      const comm = fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim()
      out[`${t}:${comm}`] = Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]) / 1e9
    } catch (e) {}
  }
  return out
}

/** CPU ms per thread name between two threadCpu() snapshots, busiest first. */
function threadDelta (a, b) {
  const byName = {}
  for (const [k, v] of Object.entries(b)) {
    const name = k.slice(k.indexOf(':') + 1)
    byName[name] = (byName[name] || 0) + (v - (a[k] || 0)) * 1000
  }
  return Object.fromEntries(Object.entries(byName)
    .filter(([, v]) => v >= 0.05)
    .sort((x, y) => y[1] - x[1])
    .map(([k, v]) => [k, round(v, 2)]))
}

function kvFile (file) {
  const out = {}
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+)\s*kB/.exec(line) || /^(\w+):\s+(\d+)\s*$/.exec(line)
    if (m) out[m[1]] = Number(m[2])
  }
  return out
}

/** Memory of the process, in kB. */
function memory (pid) {
  const r = kvFile(`/proc/${pid}/smaps_rollup`)
  const st = kvFile(`/proc/${pid}/status`)
  return {
    uss_kb: (r.Private_Clean || 0) + (r.Private_Dirty || 0),
    private_dirty_kb: r.Private_Dirty,
    private_clean_kb: r.Private_Clean, // file pages only this process maps (e.g. the .node addon)
    anon_kb: r.Anonymous,
    rss_kb: r.Rss,
    pss_kb: r.Pss,
    hwm_kb: st.VmHWM,
    threads: st.Threads
  }
}

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function log (...args) {
  const t = new Date().toISOString().slice(11, 19)
  console.log(`[${t}]`, ...args)
}

function tail (file, n = 40) {
  try {
    const lines = fs.readFileSync(file, 'utf8').split('\n')
    return lines.slice(-n).join('\n')
  } catch (e) { return `(no log: ${e.message})` }
}

const cleanups = new Set()
let interrupted = false

async function runCleanups () {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn)
    try { await fn() } catch (e) { console.error('cleanup:', e.message) }
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    if (interrupted) return
    interrupted = true
    console.error(`\nbench: ${sig}, cleaning up...`)
    await runCleanups()
    process.exit(130)
  })
}

/**
 * The local PM2.io stand-in, recording only what the benchmark needs: it
 * counts status ticks and log lines instead of keeping every packet.
 */
class BenchBackend extends Backend {
  constructor (opts) {
    super(opts)
    this.ticks = 0 // status + status:patch packets
    this.channels = {}
    this.statusDoc = null
    this.procCount = -1
    this.expectProcs = -1 // first status listing this many processes: firstFullStatusAt
    this.connectedAt = 0 // performance.now() of the first WebSocket connection
    this.firstFullStatusAt = 0
    this.patchErrors = 0
    this.logPackets = 0
    this.logLinesTotal = 0
    this.lastLogAt = 0
    this.seen = null // Uint8Array of flood line numbers received
    this.seenUnique = 0
    this.bus = null // bus scenario: see trackBus()
  }

  /**
   * Bus scenario: expect lines `seq=<n> t=<publish epoch ms>` with n < total;
   * record the first arrival of each (latency = arrival − t).
   */
  trackBus (total) {
    this.bus = {
      total,
      seen: new Uint8Array(total),
      lat: new Float64Array(total), // ms, by seq (first arrival)
      unique: 0,
      lines: 0, // with duplicates
      outOfRange: 0,
      packets: 0,
      firstAt: 0, // epoch ms of the first / last line received
      lastAt: 0
    }
    this.logPackets = 0
  }

  trackLines (n) {
    this.seen = new Uint8Array(n)
    this.seenUnique = 0
    this.logPackets = 0
    this.logLinesTotal = 0
  }

  _onWs (ws) {
    if (!this.connectedAt) this.connectedAt = performance.now()
    this.sockets.add(ws)
    this.emit('connection', ws)
    ws.on('message', (raw) => {
      const str = raw.toString()
      // Fast path for the log floods: no JSON.parse of every `logs` packet
      // (the bench process shares the CPUs with the agent).
      if (str.startsWith('{"channel":"logs"')) {
        this.channels.logs = (this.channels.logs || 0) + 1
        return this._onLogs(str)
      }
      let msg
      try { msg = JSON.parse(str) } catch (e) { return }
      const channel = msg && typeof msg.channel === 'string' ? msg.channel : '?'
      this.channels[channel] = (this.channels[channel] || 0) + 1
      if (channel === 'logs') return this._onLogs(str)
      if (msg.channel === 'status') {
        this.ticks++
        this.statusDoc = msg.payload
        this._countProcs()
      } else if (msg.channel === 'status:patch') {
        this.ticks++
        if (this.statusDoc) {
          try {
            jsonpatch.applyPatch(this.statusDoc, msg.payload, false, true)
            this._countProcs()
          } catch (e) { this.patchErrors++ }
        }
      } else {
        this.received.push(msg)
      }
      this.emit('packet', msg)
    })
    ws.on('close', () => this.sockets.delete(ws))
  }

  _countProcs () {
    const d = this.statusDoc
    const procs = d && d.data && d.data.process
    this.procCount = Array.isArray(procs) ? procs.length : -1
    if (!this.firstFullStatusAt && this.procCount === this.expectProcs) this.firstFullStatusAt = performance.now()
  }

  _onLogs (str) {
    this.logPackets++
    this.lastLogAt = performance.now()
    if (this.bus) return this._onBusLogs(str)
    // Payload-shape agnostic: count the numbered flood lines in the packet.
    const re = /flood-(\d{6})/g
    let m
    while ((m = re.exec(str))) {
      this.logLinesTotal++
      const i = Number(m[1])
      if (this.seen && i < this.seen.length && !this.seen[i]) {
        this.seen[i] = 1
        this.seenUnique++
      }
    }
  }

  _onBusLogs (str) {
    const b = this.bus
    const now = performance.timeOrigin + performance.now()
    b.packets++
    const re = /seq=(\d+) t=(\d+(?:\.\d+)?)/g
    let m
    let any = false
    while ((m = re.exec(str))) {
      any = true
      b.lines++
      const i = Number(m[1])
      if (i >= b.total) { b.outOfRange++; continue }
      if (b.seen[i]) continue
      b.seen[i] = 1
      b.unique++
      b.lat[i] = now - Number(m[2])
    }
    if (any) {
      if (!b.firstAt) b.firstAt = now
      b.lastAt = now
    }
  }
}

const IDLE_APP = 'setInterval(() => {}, 1000)\n'

const FLOOD_APP = `'use strict'
// Idles until SIGUSR2, then writes FLOOD_LINES numbered lines to stdout in
// batches of FLOOD_BATCH lines, one write() per batch, with FLOOD_PAUSE ms
// between batches (0: setImmediate, i.e. as fast as it can), then idles.
const N = Number(process.env.FLOOD_LINES) || 50000
const BATCH = Number(process.env.FLOOD_BATCH) || 10
const PAUSE = Number(process.env.FLOOD_PAUSE) || 0
const pad = ' lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod'
let started = false
process.on('SIGUSR2', () => {
  if (started) return
  started = true
  let i = 0
  const step = () => {
    const end = Math.min(i + BATCH, N)
    let chunk = ''
    for (; i < end; i++) chunk += 'flood-' + String(i).padStart(6, '0') + pad + '\\n'
    process.stdout.write(chunk)
    if (i < N) PAUSE > 0 ? setTimeout(step, PAUSE) : setImmediate(step)
  }
  step()
})
setInterval(() => {}, 1000)
`

// ---------------------------------------------------------------- one run

/**
 * Fresh PM2 with `apps`, a fresh backend, the agent daemon; then `measure`.
 * Everything is torn down whatever happens.
 */
async function withSetup (agentKey, apps, opts, measure, setup = {}) {
  const agent = AGENTS[agentKey]
  if (!agent.script || !fs.existsSync(agent.script)) throw new Error(`${agent.script} not found`)
  // Short path under /tmp: unix socket paths are limited to ~107 bytes.
  const home = fs.mkdtempSync('/tmp/kab-')
  const localCleanups = []
  const addCleanup = (fn) => { cleanups.add(fn); localCleanups.push(fn) }
  addCleanup(async () => {
    if (opts.keep) return log(`kept ${home}`)
    fs.rmSync(home, { recursive: true, force: true })
  })
  const logFile = path.join(home, 'agent-bench.log')
  let fake = null
  try {
    let list = []
    if (setup.fakePm2) {
      // A synthetic PM2 (bus + RPC only, no apps actually run).
      fake = await startFakePm2(home, apps.map((a) => a.name))
      addCleanup(() => fake.stop())
      list = fake.list
    } else {
      // PM2 and the apps.
      addCleanup(() => killPm2(home))
      const appsDir = path.join(home, 'apps')
      fs.mkdirSync(appsDir)
      const decl = apps.map((a) => Object.assign({
        script: writeApp(appsDir, `${a.name}.js`, a.body),
        cwd: appsDir,
        out_file: '/dev/null',
        error_file: '/dev/null',
        autorestart: true
      }, a.extra || {}))
      const eco = path.join(appsDir, 'apps.json')
      fs.writeFileSync(eco, JSON.stringify({ apps: decl }, null, 2))
      await pm2(home, ['start', eco])
      await waitUntil(async () => {
        list = await jlist(home)
        return list.length === apps.length && list.every((p) => p.pm2_env.status === 'online' && p.pid)
      }, 60000, 500, `${apps.length} apps online in PM2`)
    }

    // The backend.
    const backend = new BenchBackend(setup.backend || {})
    backend.expectProcs = apps.length
    await backend.start()
    addCleanup(() => backend.stop())

    // The agent daemon, same env for both agents (as `pm2 link` sets it).
    const env = {}
    for (const [k, v] of Object.entries(process.env)) {
      if (/^(PM2_|KM_|KEYMETRICS_|AGENT_|WS_)/.test(k)) continue
      if (k === 'DEBUG' || k === 'NODE_ENV' || k === 'NODE_OPTIONS') continue
      env[k] = v
    }
    Object.assign(env, {
      PM2_HOME: home,
      PM2_MACHINE_NAME: MACHINE.name,
      PM2_PUBLIC_KEY: MACHINE.pub,
      PM2_SECRET_KEY: MACHINE.secret,
      KEYMETRICS_NODE: backend.url,
      PM2_VERSION,
      WS_JSON_PATCH: 'true'
    }, setup.env || {})
    const out = fs.openSync(logFile, 'a')
    // Node-hosted daemons run as `node <script>`; the native one is the binary
    // itself (no arguments). Either way `child.pid` is the daemon measured (a
    // wrapper script must `exec` the daemon to keep that pid).
    const tSpawn = performance.now()
    const child = agent.native
      ? spawn(agent.script, [], { env, cwd: home, stdio: ['ignore', out, out] })
      : spawn(process.execPath, [agent.script], { env, cwd: home, stdio: ['ignore', out, out] })
    fs.closeSync(out)
    let exited = null
    const exitP = new Promise((resolve) => {
      child.once('exit', (code, sig) => { exited = { code, sig }; resolve(exited) })
      // A spawn failure (e.g. the binary is not executable) emits no 'exit'.
      child.once('error', (e) => { if (!exited) { exited = { code: null, sig: `spawn error: ${e.message}` }; resolve(exited) } })
    })
    addCleanup(async () => {
      if (exited) return
      child.kill('SIGTERM')
      const t = await Promise.race([exitP, sleep(5000).then(() => 'timeout')])
      if (t === 'timeout') { child.kill('SIGKILL'); await exitP }
    })
    const pid = child.pid
    const alive = () => {
      if (exited) throw new Error(`the ${agent.label} daemon exited (code ${exited.code}, signal ${exited.sig})`)
      if (fake && fake.exited) throw new Error(`the synthetic PM2 exited (${JSON.stringify(fake.exited)}); see ${fake.logFile}`)
    }

    // Connected, with a status listing every app.
    const connectMs = opts.connectTimeout * 1000
    const res = await Promise.race([
      backend.waitConnected(connectMs).then(() => 'ok', (e) => e),
      exitP.then(() => 'exited')
    ])
    if (res !== 'ok') {
      const why = res === 'exited'
        ? `exited (code ${exited.code}, signal ${exited.sig}) before connecting`
        : backend.verifyRequests.length === 0
          ? `never called POST ${backend.url}/api/node/verifyPM2 within ${opts.connectTimeout}s`
          : `called verifyPM2 (${backend.verifyRequests.length}x) but never connected over WebSocket to ${backend.wsUrl} within ${opts.connectTimeout}s`
      throw new Error(`${agent.label} daemon ${why}`)
    }
    const connectedAfter = backend.connectedAt - tSpawn
    log(`  ${agent.label}: connected after ${Math.round(connectedAfter)} ms (pid ${pid})`)
    try {
      await waitUntil(() => { alive(); return backend.procCount === apps.length }, 20000, 100, 'status')
    } catch (e) {
      alive()
      throw new Error(`${agent.label} daemon connected but no status listing ${apps.length} apps arrived within 20s ` +
        `(channels received: ${JSON.stringify(backend.channels)}; last process count ${backend.procCount})`)
    }
    // Spawn → first status at the backend listing every app (timestamped by
    // the backend when it parsed it, not by the 100 ms poll above).
    const startup = {
      connected_after_ms: round(connectedAfter, 1),
      first_status_ms: round(backend.firstFullStatusAt - tSpawn, 1)
    }
    log(`  ${agent.label}: status with ${apps.length} apps received ${Math.round(startup.first_status_ms)} ms after spawn; settling ${opts.settle}s`)
    const r = await measure({ agent, home, pid, backend, list, alive, logFile, fake })
    return Object.assign(startup, r)
  } catch (e) {
    e.logTail = tail(logFile)
    throw e
  } finally {
    for (const fn of localCleanups.reverse()) {
      cleanups.delete(fn)
      try { await fn() } catch (e) { console.error('cleanup:', e.message) }
    }
  }
}

async function idleRun (agentKey, n, opts) {
  const apps = []
  for (let i = 0; i < n; i++) apps.push({ name: `idle-${i}`, body: IDLE_APP })
  return withSetup(agentKey, apps, opts, async ({ agent, pid, backend, alive }) => {
    await sleep(opts.settle * 1000)
    alive()
    log(`  ${agent.label}: measuring ${opts.window}s window`)
    const c0 = cpuSample(pid)
    const th0 = threadCpu(pid)
    const ticks0 = backend.ticks
    await sleep(opts.window * 1000)
    alive()
    const c1 = cpuSample(pid)
    const th1 = threadCpu(pid)
    const ticks = backend.ticks - ticks0
    const mem = memory(pid)
    const secs = (c1.t - c0.t) / 1000
    const cpu = c1.stat - c0.stat
    const cpuSched = c1.sched != null && c0.sched != null ? c1.sched - c0.sched : null
    const r = {
      apps: n,
      window_s: round(secs, 3),
      status_ticks: ticks,
      status_patch_errors: backend.patchErrors,
      cpu_s: round(cpu, 3),
      cpu_s_per_min: round(cpu / secs * 60, 4),
      cpu_us_per_tick: ticks ? round(cpu / ticks * 1e6, 1) : null,
      cpu_sched_s: cpuSched == null ? null : round(cpuSched, 6),
      cpu_sched_us_per_tick: ticks && cpuSched != null ? round(cpuSched / ticks * 1e6, 1) : null,
      cpu_ms_by_thread: threadDelta(th0, th1)
    }
    // (A native daemon does not run node: no bare-node floor to subtract.)
    Object.assign(r, mem, { uss_above_bare_node_kb: BARE && !agent.native ? mem.uss_kb - BARE.uss_kb : null })
    log(`  ${agent.label}: USS ${mb(r.uss_kb)} MB, RSS ${mb(r.rss_kb)} MB, CPU ${r.cpu_s}s (${r.cpu_s_per_min} s/min), ` +
      `${ticks} ticks, ${r.cpu_us_per_tick} µs/tick; by thread (ms): ${fmtThreads(r.cpu_ms_by_thread)}`)
    if (!ticks) throw new Error(`${agent.label} sent no status during the ${opts.window}s window`)
    return r
  })
}

/**
 * Enables log streaming, as PM2.io does when the logs page is open:
 * `trigger:pm2:action` startLogging; resolves with the agent's reply (or null).
 */
async function startLogging (backend, agent) {
  backend.send('trigger:pm2:action', { method_name: 'startLogging', parameters: {} })
  try {
    const p = await backend.waitFor((m) => m.channel === 'trigger:pm2:result' &&
      m.payload && m.payload.meta && m.payload.meta.method_name === 'startLogging', 10000, 'startLogging result')
    return p.payload.ret
  } catch (e) {
    log(`  ${agent.label}: WARNING no trigger:pm2:result for startLogging within 10s, flooding anyway`)
    return null
  }
}

/** CPU rate (s/s) of `pid` over `opts.baseline` seconds, by stat and schedstat. */
async function idleBaseline (pid, opts) {
  const b0 = cpuSample(pid)
  await sleep(opts.baseline * 1000)
  const b1 = cpuSample(pid)
  const secs = (b1.t - b0.t) / 1000
  return {
    baseRate: (b1.stat - b0.stat) / secs,
    baseRateSched: b1.sched != null && b0.sched != null ? (b1.sched - b0.sched) / secs : null
  }
}

async function floodRun (agentKey, opts) {
  const apps = [{
    name: 'flood',
    body: FLOOD_APP,
    extra: { env: { FLOOD_LINES: String(opts.lines), FLOOD_BATCH: String(opts.batch), FLOOD_PAUSE: String(opts.pause) } }
  }]
  return withSetup(agentKey, apps, opts, async ({ agent, home, pid, backend, list, alive }) => {
    const appPid = list[0].pid
    await sleep(opts.settle * 1000)
    alive()

    // Count what PM2 publishes on its bus (what an agent can possibly get).
    const bus = { chunks: 0, lines: 0, last: 0 }
    const sub = axon.socket('sub-emitter')
    sub.connect(path.join(home, 'pub.sock'))
    const busConnected = new Promise((resolve) => sub.sock.once('connect', resolve))
    const closeSub = () => { try { sub.close() } catch (e) {} }
    cleanups.add(closeSub)
    try {
      sub.on('log:*', (type, packet) => {
        if (!packet || !packet.process || packet.process.name !== 'flood') return
        bus.chunks++
        bus.last = performance.now()
        const s = typeof packet.data === 'string' ? packet.data : JSON.stringify(packet.data)
        bus.lines += (s.match(/flood-\d{6}/g) || []).length
      })
      await Promise.race([busConnected, sleep(5000)])

      backend.trackLines(opts.lines)
      const startLoggingReply = await startLogging(backend, agent)

      // Idle baseline with logging on, to subtract from the flood CPU.
      const { baseRate, baseRateSched } = await idleBaseline(pid, opts)
      alive()

      // Flood.
      log(`  ${agent.label}: flooding ${opts.lines} lines`)
      const th0 = threadCpu(pid)
      const samples = [cpuSample(pid)]
      const tSignal = samples[0].t
      process.kill(appPid, 'SIGUSR2')
      const quietMs = opts.quiet * 1000
      const hardMs = 100000 // the JS agent stops streaming 120s after startLogging
      let reason = null
      for (;;) {
        await sleep(100)
        alive()
        const s = cpuSample(pid)
        samples.push(s)
        if (backend.seenUnique >= opts.lines) { reason = 'all lines forwarded'; break }
        const lastActivity = Math.max(backend.lastLogAt, bus.last, tSignal)
        if (s.t - lastActivity >= quietMs) { reason = `no log activity for ${opts.quiet}s`; break }
        if (s.t - tSignal >= hardMs) { reason = `hard timeout ${hardMs / 1000}s`; break }
      }
      // End of the flood = the last logs packet (first sample taken after it).
      const endAt = reason === 'all lines forwarded' ? samples[samples.length - 1].t : Math.max(backend.lastLogAt, tSignal)
      const end = samples.find((s) => s.t >= endAt) || samples[samples.length - 1]
      const start = samples[0]
      const secs = (end.t - start.t) / 1000
      const cpu = end.stat - start.stat
      const cpuSched = end.sched != null && start.sched != null ? end.sched - start.sched : null
      const fwd = backend.seenUnique
      const mem = memory(pid)
      const th1 = threadCpu(pid)
      const r = {
        lines_written: opts.lines,
        bus_chunks: bus.chunks,
        bus_lines: bus.lines,
        logs_packets: backend.logPackets,
        lines_forwarded: fwd,
        lines_forwarded_with_dups: backend.logLinesTotal,
        lines_dropped: opts.lines - fwd,
        start_logging_reply: startLoggingReply,
        end_reason: reason,
        flood_s: round(secs, 3),
        cpu_s: round(cpu, 3),
        cpu_net_s: round(Math.max(0, cpu - baseRate * secs), 3),
        cpu_us_per_line: fwd ? round(cpu / fwd * 1e6, 2) : null,
        cpu_us_per_packet: backend.logPackets ? round(cpu / backend.logPackets * 1e6, 1) : null,
        cpu_sched_s: cpuSched == null ? null : round(cpuSched, 6),
        cpu_sched_us_per_line: fwd && cpuSched != null ? round(cpuSched / fwd * 1e6, 2) : null,
        baseline_cpu_s_per_min: round(baseRate * 60, 4),
        baseline_cpu_sched_s_per_min: baseRateSched == null ? null : round(baseRateSched * 60, 4),
        cpu_ms_by_thread: threadDelta(th0, th1), // to the end of the quiet period
        ...mem
      }
      log(`  ${agent.label}: ${fwd}/${opts.lines} lines forwarded in ${backend.logPackets} packets ` +
        `(PM2 bus: ${bus.chunks} chunks, ${bus.lines} lines) in ${r.flood_s}s [${reason}]; ` +
        `CPU ${r.cpu_s}s → ${r.cpu_us_per_line} µs/line; by thread (ms): ${fmtThreads(r.cpu_ms_by_thread)}`)
      if (!fwd) throw new Error(`${agent.label} forwarded no log line (channels: ${JSON.stringify(backend.channels)})`)
      return r
    } finally {
      cleanups.delete(closeSub)
      closeSub()
    }
  })
}

// ---------------------------------------------------------------- synthetic PM2

/**
 * Child-process side of the synthetic PM2 (`compare.js --fake-pm2`, forked
 * with an IPC channel): PM2's bus (pm2-axon `pub-emitter` on
 * $PM2_HOME/pub.sock, as lib/Daemon.js binds it) and PM2's RPC server
 * (`rep` + pm2-axon-rpc Server on $PM2_HOME/rpc.sock) answering with
 * $FAKE_PM2_APPS as online processes. On `{cmd: 'flood'}` it publishes
 * `log:out` packets shaped like lib/God/ForkMode.js's at a fixed rate.
 */
function fakePm2Main () {
  const rpc = require('pm2-axon-rpc')
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.removeAllListeners(sig) // the benchmark's own handlers
    process.on(sig, () => process.exit(0))
  }
  const home = process.env.PM2_HOME
  const names = JSON.parse(process.env.FAKE_PM2_APPS || '["bus-app"]')
  const startedAt = Date.now()
  const procs = names.map((name, id) => ({
    pid: process.pid,
    name,
    pm_id: id,
    monit: { memory: 30 * 1024 * 1024, cpu: 0 },
    pm2_env: {
      name,
      pm_id: id,
      status: 'online',
      exec_mode: 'fork_mode',
      exec_interpreter: 'node',
      node_args: [],
      pm_exec_path: path.join(home, `${name}.js`),
      pm_cwd: home,
      restart_time: 0,
      unstable_restarts: 0,
      created_at: startedAt,
      pm_uptime: startedAt,
      unique_id: `00000000-0000-4000-8000-${String(id).padStart(12, '0')}`,
      versioning: null,
      namespace: 'default',
      instances: 1,
      autorestart: true,
      axm_actions: [],
      axm_monitor: {},
      axm_options: {},
      axm_dynamic: {}
    }
  }))

  const calls = {} // RPC method → number of calls (what the agent needs)
  const pub = axon.socket('pub-emitter')
  const rep = axon.socket('rep')
  const server = new rpc.Server(rep)
  rep.on('message', (msg) => {
    const k = msg && msg.type === 'methods' ? '(methods)' : String(msg && msg.method)
    calls[k] = (calls[k] || 0) + 1
  })
  // pm2-axon-rpc appends the callback to the caller's args and reads the
  // parameter names from `function (…)` sources: keep the classic syntax.
  const cbOf = (args) => args[args.length - 1]
  server.expose({
    getMonitorData: function (opts, cb) { cbOf(arguments)(null, procs) },
    getSystemData: function (opts, cb) { cbOf(arguments)(null, {}) },
    getVersion: function (opts, cb) { cbOf(arguments)(null, process.env.FAKE_PM2_VERSION || '0.0.0') },
    ping: function (opts, cb) { cbOf(arguments)(null, { msg: 'pong' }) },
    msgProcess: function (cmd, cb) { cbOf(arguments)(null, 0) },
    sendDataToProcessId: function (packet, cb) { cbOf(arguments)(null, { success: true }) },
    dumpProcessList: function (cb) { cbOf(arguments)(null, { success: true }) }
  })

  // Bytes queued in the pub socket's connections (a slow subscriber).
  const backlog = () => {
    let n = 0
    for (const s of pub.sock.socks) n += s.writableLength || 0
    return n
  }
  let maxBacklog = 0
  setInterval(() => { const b = backlog(); if (b > maxBacklog) maxBacklog = b }, 20)

  function flood ({ id, rate, seconds, pm_id: pmId, name }) {
    const total = Math.round(rate * seconds)
    const perTickCap = Math.max(1, Math.ceil(rate / 1000)) * 20 // catch up at most 20 ticks (ms) at once
    const proc = { pm_id: pmId, name, rev: null, namespace: 'default' }
    const durMs = seconds * 1000
    let seq = 0
    let ticks = 0
    let capped = 0
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    const tick = () => {
      ticks++
      const now = performance.now()
      const el = now - t0
      let due = Math.min(total, Math.floor(rate * el / 1000)) - seq
      if (due > perTickCap) { due = perTickCap; capped++ }
      if (due > 0) {
        const t = (performance.timeOrigin + now).toFixed(3)
        const at = Date.now()
        for (let k = 0; k < due; k++, seq++) pub.emit('log:out', { process: proc, at, data: `seq=${seq} t=${t}\n` })
        const b = backlog()
        if (b > maxBacklog) maxBacklog = b
      }
      if (seq < total && el < durMs) return setTimeout(tick, 1)
      const t1 = performance.now()
      const cpu = process.cpuUsage(cpu0)
      process.send({
        id,
        published: seq,
        total,
        t0_epoch: performance.timeOrigin + t0,
        t1_epoch: performance.timeOrigin + t1,
        elapsed_s: (t1 - t0) / 1000,
        ticks,
        capped_ticks: capped,
        cpu_s: (cpu.user + cpu.system) / 1e6,
        backlog_bytes: backlog(),
        max_backlog_bytes: maxBacklog
      })
    }
    setTimeout(tick, 1)
  }

  process.on('message', (m) => {
    if (!m || !m.cmd) return
    if (m.cmd === 'flood') return flood(m)
    if (m.cmd === 'reset') maxBacklog = backlog()
    process.send({ id: m.id, calls, subscribers: pub.sock.socks.length, backlog_bytes: backlog(), max_backlog_bytes: maxBacklog })
  })
  process.on('disconnect', () => process.exit(0))

  let bound = 0
  const onBound = () => { if (++bound === 2) process.send({ type: 'ready' }) }
  pub.sock.once('bind', onBound)
  rep.once('bind', onBound)
  pub.bind(path.join(home, 'pub.sock'))
  rep.bind(path.join(home, 'rpc.sock'))
}

/** Parent side: forks the synthetic PM2 for `home`, resolves once it is bound. */
async function startFakePm2 (home, names) {
  const logFile = path.join(home, 'fake-pm2.log')
  const out = fs.openSync(logFile, 'a')
  const env = Object.assign({}, process.env, {
    PM2_HOME: home,
    FAKE_PM2_APPS: JSON.stringify(names),
    FAKE_PM2_VERSION: PM2_VERSION
  })
  delete env.NODE_OPTIONS
  const child = fork(__filename, ['--fake-pm2'], { env, stdio: ['ignore', out, out, 'ipc'], execArgv: [] })
  fs.closeSync(out)
  const fake = {
    pid: child.pid,
    logFile,
    exited: null,
    list: names.map((name, i) => ({ name, pm_id: i, pid: child.pid })),
    request: null,
    stop: null
  }
  const pending = new Map()
  let nextId = 1
  let onReady = null
  const exitP = new Promise((resolve) => child.once('exit', (code, sig) => {
    fake.exited = { code, sig }
    for (const p of pending.values()) p.reject(new Error(`synthetic PM2 exited (code ${code}, signal ${sig})`))
    pending.clear()
    if (onReady) onReady.reject(new Error(`synthetic PM2 exited (code ${code}, signal ${sig}) before binding; see ${logFile}`))
    resolve()
  }))
  child.on('message', (m) => {
    if (m && m.type === 'ready' && onReady) { onReady.resolve(); onReady = null; return }
    const p = m && pending.get(m.id)
    if (p) { pending.delete(m.id); clearTimeout(p.timer); p.resolve(m) }
  })
  fake.request = (cmd, args = {}, timeoutMs = 10000) => new Promise((resolve, reject) => {
    if (fake.exited) return reject(new Error('synthetic PM2 not running'))
    const id = nextId++
    const timer = setTimeout(() => { pending.delete(id); reject(new Error(`synthetic PM2: no answer to ${cmd} within ${timeoutMs / 1000}s`)) }, timeoutMs)
    pending.set(id, { resolve, reject, timer })
    child.send(Object.assign({ cmd, id }, args))
  })
  fake.stop = async () => {
    if (fake.exited) return
    child.kill('SIGTERM')
    const t = await Promise.race([exitP, sleep(3000).then(() => 'timeout')])
    if (t === 'timeout') { child.kill('SIGKILL'); await exitP }
  }
  await new Promise((resolve, reject) => {
    onReady = { resolve, reject }
    setTimeout(() => { if (onReady) { onReady = null; reject(new Error(`synthetic PM2 did not bind within 10s; see ${logFile}`)) } }, 10000)
  })
  return fake
}

/** Percentile `p` (0–100) of a sorted array. */
function percentile (sorted, p) {
  if (!sorted.length) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)]
}

async function busRun (agentKey, rate, opts) {
  // Two processes: the one that logs, and an idle one (both listed as online).
  const apps = [{ name: 'bus-app' }, { name: 'bus-idle' }]
  return withSetup(agentKey, apps, opts, async ({ agent, pid, backend, alive, fake }) => {
    await sleep(opts.settle * 1000)
    alive()
    const total = Math.round(rate * opts.busSeconds)
    backend.trackBus(total)
    const startLoggingReply = await startLogging(backend, agent)

    // Idle baseline with logging on, to subtract from the flood CPU.
    const { baseRate, baseRateSched } = await idleBaseline(pid, opts)
    alive()

    const pre = await fake.request('reset')
    const pubBefore = memory(fake.pid)
    log(`  ${agent.label}: publishing ${total} log:out at ${rate}/s for ${opts.busSeconds}s ` +
      `(bus subscribers: ${pre.subscribers})`)
    const th0 = threadCpu(pid)
    const samples = [cpuSample(pid)]
    const tStart = samples[0].t
    const benchCpu0 = process.cpuUsage() // this process: mostly the backend receiving
    let done = null
    let doneAt = 0
    let failed = null
    fake.request('flood', { rate, seconds: opts.busSeconds, pm_id: 0, name: 'bus-app' }, (opts.busSeconds + 120) * 1000)
      .then((m) => { done = m; doneAt = performance.now() }, (e) => { failed = e })
    const quietMs = opts.quiet * 1000
    const hardMs = Math.max(100, opts.busSeconds + 30) * 1000 // the JS agent stops streaming 120s after startLogging
    let pubPeakRss = 0
    let reason = null
    for (;;) {
      await sleep(100)
      alive()
      if (failed) throw failed
      const s = cpuSample(pid)
      samples.push(s)
      try { pubPeakRss = Math.max(pubPeakRss, kvFile(`/proc/${fake.pid}/status`).VmRSS || 0) } catch (e) {}
      if (done) {
        if (backend.bus.unique >= done.published) { reason = 'all published lines delivered'; break }
        if (s.t - Math.max(backend.lastLogAt, doneAt) >= quietMs) { reason = `nothing new for ${opts.quiet}s`; break }
      }
      if (s.t - tStart >= hardMs) { reason = `hard timeout ${hardMs / 1000}s`; break }
    }
    const endAt = reason === 'all published lines delivered' ? samples[samples.length - 1].t : Math.max(backend.lastLogAt, doneAt || tStart)
    const end = samples.find((s) => s.t >= endAt) || samples[samples.length - 1]
    const start = samples[0]
    const secs = (end.t - start.t) / 1000
    const cpu = end.stat - start.stat
    const cpuSched = end.sched != null && start.sched != null ? end.sched - start.sched : null
    const cpuNet = Math.max(0, cpu - baseRate * secs)
    const cpuSchedNet = cpuSched == null || baseRateSched == null ? null : Math.max(0, cpuSched - baseRateSched * secs)
    const th1 = threadCpu(pid)
    const benchCpu = process.cpuUsage(benchCpu0)
    const benchSecs = (performance.now() - tStart) / 1000
    const mem = memory(pid)
    const pubAfter = memory(fake.pid)
    const post = await fake.request('stats')
    if (!done) done = { published: 0, total, elapsed_s: null, t0_epoch: null }

    const b = backend.bus
    const lats = []
    for (let i = 0; i < b.total; i++) if (b.seen[i]) lats.push(b.lat[i])
    lats.sort((x, y) => x - y)
    const published = done.published
    const deliverSecs = b.lastAt && done.t0_epoch ? (b.lastAt - done.t0_epoch) / 1000 : null
    const r = {
      rate_target: rate,
      publish_s: round(done.elapsed_s, 3),
      published,
      publish_rate: done.elapsed_s ? Math.round(published / done.elapsed_s) : null,
      publish_capped_ticks: done.capped_ticks, // ticks where the publisher was > 20 ms behind
      received_unique: b.unique,
      received_lines_with_dups: b.lines,
      received_out_of_range: b.outOfRange,
      logs_packets: b.packets,
      lost: published - b.unique,
      loss_pct: published ? round((published - b.unique) / published * 100, 3) : null,
      latency_p50_ms: round(percentile(lats, 50), 2),
      latency_p99_ms: round(percentile(lats, 99), 2),
      latency_max_ms: round(lats.length ? lats[lats.length - 1] : null, 2),
      delivered_per_s: deliverSecs ? Math.round(b.unique / deliverSecs) : null,
      delivery_s: round(deliverSecs, 3), // first publish → last line received
      start_logging_reply: startLoggingReply,
      end_reason: reason,
      flood_s: round(secs, 3),
      cpu_s: round(cpu, 3),
      cpu_net_s: round(cpuNet, 3),
      cpu_us_per_msg: published ? round(cpuNet / published * 1e6, 2) : null,
      cpu_us_per_msg_raw: published ? round(cpu / published * 1e6, 2) : null,
      cpu_sched_us_per_msg: published && cpuSchedNet != null ? round(cpuSchedNet / published * 1e6, 2) : null,
      baseline_cpu_s_per_min: round(baseRate * 60, 4),
      baseline_cpu_sched_s_per_min: baseRateSched == null ? null : round(baseRateSched * 60, 4),
      cpu_ms_by_thread: threadDelta(th0, th1), // to the end of the quiet period
      ...mem,
      pub_rss_before_kb: pubBefore.rss_kb,
      pub_peak_rss_kb: Math.max(pubPeakRss, pubAfter.rss_kb || 0),
      pub_hwm_kb: pubAfter.hwm_kb,
      pub_rss_after_kb: pubAfter.rss_kb,
      pub_max_backlog_kb: round(Math.max(done.max_backlog_bytes || 0, post.max_backlog_bytes || 0) / 1024, 1),
      pub_backlog_at_publish_end_kb: done.backlog_bytes == null ? null : round(done.backlog_bytes / 1024, 1),
      pub_cpu_s: round(done.cpu_s, 3),
      // The benchmark process (backend + sampling) over the whole flood and
      // quiet period: near 100 % means the backend itself was the bottleneck.
      backend_cpu_s: round((benchCpu.user + benchCpu.system) / 1e6, 3),
      backend_cpu_pct: round((benchCpu.user + benchCpu.system) / 1e4 / benchSecs, 1),
      pm2_rpc_calls: post.calls
    }
    log(`  ${agent.label}: published ${published} in ${r.publish_s}s (${r.publish_rate}/s), received ${b.unique} unique ` +
      `(loss ${r.loss_pct}%) in ${b.packets} packets, ${r.delivered_per_s}/s, latency p50 ${r.latency_p50_ms} ms ` +
      `p99 ${r.latency_p99_ms} ms [${reason}]; CPU ${r.cpu_s}s (net ${r.cpu_net_s}s) → ${r.cpu_us_per_msg} µs/msg; ` +
      `publisher peak RSS ${mb(r.pub_peak_rss_kb)} MB, max backlog ${mb(r.pub_max_backlog_kb)} MB, CPU ${r.pub_cpu_s}s; ` +
      `backend CPU ${r.backend_cpu_s}s (${r.backend_cpu_pct} %); ` +
      `by thread (ms): ${fmtThreads(r.cpu_ms_by_thread)}; PM2 RPC calls: ${JSON.stringify(post.calls)}`)
    if (!b.unique) throw new Error(`${agent.label} forwarded no bus line (channels: ${JSON.stringify(backend.channels)})`)
    return r
  }, { fakePm2: true })
}

// ---------------------------------------------------------------- wire

const WIRE_LOGGER = "let i = 0\nsetInterval(() => console.log('wire-' + (i++) + ' GET /api/items 200 12ms'), 100)\n"

/**
 * One half of a wire run: the bytes the agent sent on its WebSocket over
 * the window (`wireBytes`: what the backend's socket read), with or without
 * WS_GZIP. The backend's `ws` accepts permessage-deflate in both halves; it
 * only applies when the agent offers it.
 */
async function wireHalf (agentKey, n, opts, gzip) {
  const apps = [{ name: 'wire-logger', body: WIRE_LOGGER }]
  for (let i = 0; i < n; i++) apps.push({ name: `idle-${i}`, body: IDLE_APP })
  const setup = {
    backend: { perMessageDeflate: true, inspectFrames: true },
    env: gzip ? { WS_GZIP: 'true' } : {}
  }
  return withSetup(agentKey, apps, opts, async ({ agent, pid, backend, alive }) => {
    await startLogging(backend, agent)
    await sleep(opts.settle * 1000)
    alive()
    const hs = backend.wsHandshakes[backend.wsHandshakes.length - 1]
    const messages = () => backend.frames.compressed + backend.frames.plain
    const t0 = performance.now()
    const b0 = backend.wireBytes
    const m0 = messages()
    const c0 = backend.frames.compressed
    const ticks0 = backend.ticks
    const logs0 = backend.channels.logs || 0
    const cpu0 = cpuSample(pid)
    await sleep(opts.window * 1000)
    alive()
    const cpu1 = cpuSample(pid)
    const secs = (performance.now() - t0) / 1000
    const perMin = (x) => round(x / secs * 60, 0)
    const msgs = messages() - m0
    const r = {
      bytes_per_min: perMin(backend.wireBytes - b0),
      messages_per_min: perMin(msgs),
      status_ticks_per_min: perMin(backend.ticks - ticks0),
      logs_packets_per_min: perMin((backend.channels.logs || 0) - logs0),
      compressed_pct: msgs ? round((backend.frames.compressed - c0) / msgs * 100, 1) : null,
      cpu_s_per_min: round((cpu1.stat - cpu0.stat) / secs * 60, 4),
      cpu_sched_s_per_min: cpu1.sched != null && cpu0.sched != null ? round((cpu1.sched - cpu0.sched) / secs * 60, 4) : null,
      uss_kb: memory(pid).uss_kb,
      negotiated: hs && hs.extensions ? hs.extensions : 'none',
      window_s: round(secs, 3)
    }
    log(`  ${agent.label}${gzip ? ' WS_GZIP=true' : ''}: ${r.bytes_per_min} bytes/min on the WebSocket, ` +
      `${r.messages_per_min} messages/min (${r.compressed_pct} % compressed; extension: ${r.negotiated}); ` +
      `CPU ${r.cpu_s_per_min} s/min`)
    if (!msgs) throw new Error(`${agent.label} sent nothing during the ${opts.window}s window`)
    return r
  }, setup)
}

/** wire-N: the same workload without, then with WS_GZIP (see the header). */
async function wireRun (agentKey, n, opts) {
  const plain = await wireHalf(agentKey, n, opts, false)
  const gzip = await wireHalf(agentKey, n, opts, true)
  return {
    apps: n,
    ws_bytes_per_min: plain.bytes_per_min,
    ws_bytes_per_min_gzip: gzip.bytes_per_min,
    gzip_ratio: plain.bytes_per_min ? round(gzip.bytes_per_min / plain.bytes_per_min, 3) : null,
    ws_messages_per_min: plain.messages_per_min,
    ws_messages_per_min_gzip: gzip.messages_per_min,
    gzip_compressed_pct: gzip.compressed_pct,
    cpu_s_per_min: plain.cpu_s_per_min,
    cpu_s_per_min_gzip: gzip.cpu_s_per_min,
    cpu_sched_s_per_min: plain.cpu_sched_s_per_min,
    cpu_sched_s_per_min_gzip: gzip.cpu_sched_s_per_min,
    uss_kb: plain.uss_kb,
    uss_kb_gzip: gzip.uss_kb,
    gzip_negotiated: gzip.negotiated,
    plain,
    gzip
  }
}

// ---------------------------------------------------------------- report

let BARE = null
const fmtThreads = (o) => Object.entries(o).slice(0, 5).map(([k, v]) => `${k} ${Math.round(v)}`).join(', ')
const round = (x, d) => (x == null || !Number.isFinite(x) ? null : Number(x.toFixed(d)))
const mb = (kb) => (kb == null ? null : (kb / 1024).toFixed(1))

// Targets: a ratio to the JS agent's figure, or an absolute maximum.
const RATIO = (r, text) => ({ ratio: r, text })
const MAX = (max, text) => ({ max, text })
const BOTH = (t) => ({ ours: t, native: t })

function buildRows (results) {
  const rows = []
  const get = (scn, agent, key) => {
    const r = results.scenarios[scn] && results.scenarios[scn][agent]
    if (!r) return undefined
    if (r.error) return 'ERR'
    return r[key]
  }
  /**
   * One row: the figure of each agent, and for each of our modes its ratio to
   * JS and its target (`targets.ours` / `targets.native`) with a verdict.
   */
  const add = (scn, label, key, fmt, targets = {}, noRatio = false) => {
    if (!results.scenarios[scn]) return
    const js = get(scn, 'js', key)
    const row = { scenario: scn, metric: label, key, js: js === undefined ? null : js }
    for (const m of OURS) {
      const v = get(scn, m, key)
      const sfx = m === 'ours' ? '' : `_${m}`
      let ratio = null
      if (!noRatio && typeof js === 'number' && typeof v === 'number' && js > 0) ratio = v / js
      const t = targets[m] || null
      let verdict = ''
      if (t && t.ratio != null && ratio != null) verdict = ratio <= t.ratio ? 'PASS' : 'FAIL'
      if (t && t.max != null && typeof v === 'number') verdict = v <= t.max ? 'PASS' : 'FAIL'
      if (t && v === 'ERR') verdict = 'FAIL'
      row[m] = v === undefined ? null : v
      row[`ratio${sfx}`] = round(ratio, 3)
      row[`target${sfx}`] = t ? t.text : null
      row[`verdict${sfx}`] = verdict
    }
    row._fmt = fmt
    rows.push(row)
  }
  const MB = (v) => (typeof v === 'number' ? (v / 1024).toFixed(1) : v)
  const R3 = RATIO(1 / 3, '≤ 1/3 JS')
  const R10 = RATIO(1 / 10, '≤ 1/10 JS')
  for (const n of results.options.apps) {
    const s = `idle-${n}`
    add(s, 'time to first status (ms)', 'first_status_ms', (v) => String(Math.round(v)), BOTH(MAX(300, '≤ 300 ms')))
    add(s, 'private memory USS (MB)', 'uss_kb', MB, BOTH(R3))
    if (n === 10) {
      add(s, 'private memory USS, absolute (MB)', 'uss_kb', MB,
        { ours: MAX(8.5 * 1024, '≤ 8.5 MB'), native: MAX(4 * 1024, '≤ 4 MB') }, true)
    }
    add(s, '  of which Private_Dirty (MB)', 'private_dirty_kb', MB)
    add(s, '  of which Private_Clean (MB)', 'private_clean_kb', MB, {}, true)
    add(s, '  USS above a bare node (MB)', 'uss_above_bare_node_kb', MB)
    add(s, 'RSS (MB)', 'rss_kb', MB, n === 10 ? { native: MAX(10 * 1024, '≤ 10 MB') } : {})
    add(s, 'CPU s / min idle', 'cpu_s_per_min')
    add(s, 'status ticks in window', 'status_ticks')
    add(s, 'CPU µs / status tick', 'cpu_us_per_tick', null, BOTH(R10))
    add(s, 'CPU µs / status tick (schedstat)', 'cpu_sched_us_per_tick')
  }
  const f = 'flood'
  add(f, 'lines written', 'lines_written')
  add(f, 'lines forwarded (unique)', 'lines_forwarded')
  add(f, 'lines dropped', 'lines_dropped')
  add(f, '`logs` packets', 'logs_packets')
  add(f, 'PM2 bus chunks', 'bus_chunks')
  add(f, 'flood duration (s)', 'flood_s')
  add(f, 'CPU s during flood', 'cpu_s')
  add(f, 'CPU s during flood, minus idle', 'cpu_net_s')
  add(f, 'CPU µs / forwarded log line', 'cpu_us_per_line', null, BOTH(R10))
  add(f, 'CPU µs / forwarded log line (schedstat)', 'cpu_sched_us_per_line')
  add(f, 'CPU µs / `logs` packet', 'cpu_us_per_packet')
  add(f, 'USS after flood (MB)', 'uss_kb', MB)
  add(f, 'peak RSS VmHWM (MB)', 'hwm_kb', MB)
  if (results.options.wire) {
    const s = `wire-${results.options.wire}`
    const KB = (v) => (typeof v === 'number' ? (v / 1024).toFixed(1) : v)
    add(s, 'WebSocket KB sent / min', 'ws_bytes_per_min', KB)
    add(s, 'WebSocket KB sent / min, WS_GZIP=true', 'ws_bytes_per_min_gzip', KB)
    add(s, 'WS_GZIP=true / without', 'gzip_ratio', (v) => v.toFixed(3), {}, true)
    add(s, 'messages / min', 'ws_messages_per_min')
    add(s, 'messages / min, WS_GZIP=true', 'ws_messages_per_min_gzip')
    add(s, 'WS_GZIP=true: messages compressed (%)', 'gzip_compressed_pct', null, {}, true)
    add(s, 'WS_GZIP=true: extension agreed', 'gzip_negotiated', null, {}, true)
    add(s, 'CPU s / min (schedstat)', 'cpu_sched_s_per_min')
    add(s, 'CPU s / min, WS_GZIP=true (schedstat)', 'cpu_sched_s_per_min_gzip')
    add(s, 'private memory USS (MB)', 'uss_kb', MB)
    add(s, 'private memory USS, WS_GZIP=true (MB)', 'uss_kb_gzip', MB)
  }
  for (const rate of results.options.bus || []) {
    const s = `bus-${rate}`
    add(s, 'published msgs', 'published')
    add(s, 'achieved publish rate (msgs/s)', 'publish_rate')
    add(s, 'received (unique)', 'received_unique')
    add(s, 'loss %', 'loss_pct')
    add(s, 'delivered msgs/s', 'delivered_per_s')
    add(s, 'latency p50 (ms)', 'latency_p50_ms')
    add(s, 'latency p99 (ms)', 'latency_p99_ms')
    add(s, '`logs` packets', 'logs_packets')
    add(s, 'CPU s during flood, minus idle', 'cpu_net_s')
    add(s, 'CPU µs / published msg, minus idle', 'cpu_us_per_msg')
    add(s, 'CPU µs / published msg (schedstat)', 'cpu_sched_us_per_msg')
    add(s, 'agent peak RSS VmHWM (MB)', 'hwm_kb', MB)
    add(s, 'publisher RSS before flood (MB)', 'pub_rss_before_kb', MB)
    add(s, 'publisher peak RSS (MB)', 'pub_peak_rss_kb', MB)
    add(s, 'publisher max pub-socket backlog (MB)', 'pub_max_backlog_kb', MB)
  }
  return rows
}

/**
 * The table: JS agent, then for each of our modes that ran its figure, its
 * ratio to JS (when JS ran), its target and verdict.
 */
function printTable (rows, agents) {
  const cell = (v, fmt) => {
    if (v === null || v === undefined) return '-'
    if (fmt && typeof v === 'number') return fmt(v)
    return String(v)
  }
  const withJs = agents.includes('js')
  const modes = OURS.filter((m) => agents.includes(m))
  const cols = [{ head: 'scenario' }, { head: 'metric' }]
  if (withJs) cols.push({ head: AGENTS.js.label, right: true, get: (r) => cell(r.js, r._fmt) })
  for (const m of modes) {
    const sfx = m === 'ours' ? '' : `_${m}`
    cols.push({ head: AGENTS[m].label, right: true, get: (r) => cell(r[m], r._fmt) })
    if (withJs) cols.push({ head: 'ratio', right: true, get: (r) => (r[`ratio${sfx}`] == null ? '-' : r[`ratio${sfx}`].toFixed(3)) })
    cols.push({ head: 'target', get: (r) => r[`target${sfx}`] || '' })
    cols.push({ head: '', get: (r) => r[`verdict${sfx}`] || '' })
  }
  cols[0].get = (r) => r.scenario
  cols[1].get = (r) => r.metric
  const table = [cols.map((c) => c.head)]
  for (const r of rows) table.push(cols.map((c) => c.get(r)))
  const widths = cols.map((_, i) => Math.max(...table.map((row) => row[i].length)))
  const line = (row) => row.map((c, i) => (cols[i].right ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ')
  console.log('\n' + line(table[0]).trimEnd())
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'))
  let last = null
  for (const row of table.slice(1)) {
    if (last && row[0] !== last) console.log(widths.map((w) => ' '.repeat(w)).join(' | ').trimEnd())
    last = row[0]
    console.log(line(row).trimEnd())
  }
}

/** Conditions that make the comparison less trustworthy. */
function noiseWarnings (results) {
  const out = []
  const ncpu = os.cpus().length
  for (const [scn, byAgent] of Object.entries(results.scenarios)) {
    for (const [a, r] of Object.entries(byAgent)) {
      const load = r && r.loadavg_1m ? Math.max(...r.loadavg_1m) : 0
      if (load > ncpu * 0.75) out.push(`${scn}/${a}: 1-min load average reached ${load} on ${ncpu} CPUs; CPU figures are noisy, run again on a quiet machine`)
    }
    if (scn === 'flood') {
      const ok = Object.keys(byAgent).filter((a) => byAgent[a] && !byAgent[a].error && byAgent[a].bus_chunks)
      const ref = ok[0]
      for (const a of ok.slice(1)) {
        const x = byAgent[ref].bus_chunks
        const y = byAgent[a].bus_chunks
        const d = Math.abs(x - y) / Math.max(x, y)
        if (d > 0.1) out.push(`flood: PM2 chunked the output differently for ${ref} and ${a} (${x} vs ${y} bus messages), so per-line figures are less comparable (machine busy?)`)
      }
    }
    if (scn.startsWith('bus-')) {
      for (const [a, r] of Object.entries(byAgent)) {
        if (!r || r.error || !r.publish_rate) continue
        if (r.publish_rate < r.rate_target * 0.95) out.push(`${scn}/${a}: the synthetic PM2 published only ${r.publish_rate} msgs/s of ${r.rate_target} (machine busy?)`)
      }
    }
  }
  return out
}

// ---------------------------------------------------------------- what is measured

/**
 * Section headers of an ELF file: whether it still has a symbol table
 * (`.symtab`) or debug info (`.debug_*`). null fields when it is not ELF
 * (macOS, Windows) or cannot be read.
 */
function elfInfo (file) {
  const out = { format: null, has_symtab: null, has_debug_info: null, stripped: null }
  let fd = null
  try {
    fd = fs.openSync(file, 'r')
    const hdr = Buffer.alloc(64)
    fs.readSync(fd, hdr, 0, 64, 0)
    if (hdr.readUInt32BE(0) !== 0x7f454c46) return out // \x7fELF
    out.format = 'ELF'
    const is64 = hdr[4] === 2
    const le = hdr[5] === 1
    const u16 = (b, o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o))
    const u32 = (b, o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o))
    const uN = (b, o) => (is64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(b, o))
    const shoff = uN(hdr, is64 ? 0x28 : 0x20)
    const shentsize = u16(hdr, is64 ? 0x3a : 0x2e)
    const shnum = u16(hdr, is64 ? 0x3c : 0x30)
    const shstrndx = u16(hdr, is64 ? 0x3e : 0x32)
    if (!shoff || !shnum || shstrndx >= shnum) return out
    const sh = Buffer.alloc(shentsize * shnum)
    fs.readSync(fd, sh, 0, sh.length, shoff)
    const nameOff = (i) => u32(sh, i * shentsize)
    const strOff = uN(sh, shstrndx * shentsize + (is64 ? 0x18 : 0x10))
    const strSize = uN(sh, shstrndx * shentsize + (is64 ? 0x20 : 0x14))
    const strs = Buffer.alloc(strSize)
    fs.readSync(fd, strs, 0, strSize, strOff)
    const names = []
    for (let i = 0; i < shnum; i++) {
      const o = nameOff(i)
      names.push(strs.toString('latin1', o, strs.indexOf(0, o)))
    }
    out.has_symtab = names.includes('.symtab')
    out.has_debug_info = names.some((n) => n.startsWith('.debug_'))
    out.stripped = !out.has_symtab && !out.has_debug_info
  } catch (e) {
    out.error = e.message
  } finally {
    if (fd !== null) fs.closeSync(fd)
  }
  return out
}

/** The platform part of our file names, e.g. `linux-x64-gnu`, `darwin-arm64`. */
function platformSuffix () {
  let abi = ''
  if (process.platform === 'linux') {
    const report = process.report && process.report.getReport ? process.report.getReport() : null
    abi = report && report.header && report.header.glibcVersionRuntime ? '-gnu' : '-musl'
  } else if (process.platform === 'win32') abi = '-msvc'
  return `${process.platform}-${process.arch}${abi}`
}

/** The root file starting with `prefix`: the current platform's first, else the first by name. */
function rootFile (prefix, suffix = '') {
  let names = []
  try { names = fs.readdirSync(ROOT).filter((n) => n.startsWith(prefix) && n.endsWith(suffix)).sort() } catch (e) {}
  names = names.filter((n) => { try { return fs.statSync(path.join(ROOT, n)).isFile() } catch (e) { return false } })
  const mine = names.find((n) => n.includes(platformSuffix()))
  const pick = mine || names[0]
  return pick ? path.join(ROOT, pick) : null
}

/** The newest Rust source (src/**.rs, Cargo.toml, Cargo.lock, build.rs): {file, mtime_ms}. */
function newestSource () {
  let best = { file: null, mtime_ms: 0 }
  const see = (f) => {
    try {
      const m = fs.statSync(f).mtimeMs
      if (m > best.mtime_ms) best = { file: path.relative(ROOT, f), mtime_ms: m }
    } catch (e) {}
  }
  const walk = (dir) => {
    let ents = []
    try { ents = fs.readdirSync(dir, { withFileTypes: true }) } catch (e) { return }
    for (const e of ents) {
      const f = path.join(dir, e.name)
      if (e.isDirectory()) walk(f)
      else if (e.name.endsWith('.rs')) see(f)
    }
  }
  walk(path.join(ROOT, 'src'))
  for (const f of ['Cargo.toml', 'Cargo.lock', 'build.rs']) see(path.join(ROOT, f))
  return best
}

/** Size, mtime and strip state of a built file, plus what is wrong with it (`problems`). */
function buildInfo (file, what, newest) {
  if (!file) return { path: null, problems: [`no ${what} found`] }
  let st = null
  try { st = fs.statSync(file) } catch (e) { return { path: file, problems: [`${what} ${file}: ${e.message}`] } }
  const elf = elfInfo(file)
  const info = {
    path: relPath(file),
    size_bytes: st.size,
    mtime: new Date(st.mtimeMs).toISOString(),
    ...elf,
    problems: []
  }
  if (elf.stripped === false) {
    info.problems.push(`${what} ${info.path} is not the stripped dist build (${[elf.has_symtab && '.symtab', elf.has_debug_info && '.debug_*'].filter(Boolean).join(' and ')} present); run \`npm run bench\` (build:dist first)`)
  }
  if (!elf.format && process.platform === 'linux') info.problems.push(`${what} ${info.path} is not an ELF file (a wrapper script?)`)
  if (newest.file && newest.mtime_ms > st.mtimeMs + 1000) {
    info.problems.push(`${what} ${info.path} is older than ${newest.file} (${new Date(newest.mtime_ms).toISOString()}): it may not be built from this tree`)
  }
  return info
}

/** Relative to the repo root when inside it, else absolute. */
function relPath (file) {
  const rel = path.relative(ROOT, file)
  return rel.startsWith('..') || path.isAbsolute(rel) ? file : rel
}

function git (args) {
  try { return execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).replace(/\s+$/, '') } catch (e) { return null }
}

function loudWarning (lines) {
  if (!lines.length) return
  const bar = '!'.repeat(78)
  console.log(`\n${bar}\n!! WARNING: this run does not measure what ships:`)
  for (const l of lines) console.log(`!!   ${l}`)
  console.log(`${bar}\n`)
}

// ---------------------------------------------------------------- main

/** Memory of a bare `node` idling, for reference (the floor for both agents). */
async function bareNode () {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
  const kill = () => { try { child.kill('SIGKILL') } catch (e) {} }
  cleanups.add(kill)
  try {
    await sleep(2000)
    return memory(child.pid)
  } catch (e) {
    return null
  } finally {
    cleanups.delete(kill)
    kill()
  }
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  let agents = ['js', 'ours', 'native'].filter((a) => !opts.only || opts.only.includes(a))
  const startedAt = new Date()

  // What is measured: the builds of our addon and native daemon, and the tree.
  const newest = newestSource()
  const nativeBin = opts.nativeBin || rootFile('keymetrics-agent-daemon.')
  const build = {
    addon: buildInfo(rootFile('interactor.', '.node'), 'the addon', newest),
    native: null,
    newest_rust_source: newest.file ? { file: newest.file, mtime: new Date(newest.mtime_ms).toISOString() } : null
  }
  let nativeSkipped = null
  if (agents.includes('native')) {
    if (!nativeBin || !fs.existsSync(nativeBin)) {
      nativeSkipped = nativeBin
        ? `${nativeBin} not found`
        : `no keymetrics-agent-daemon.* binary at ${ROOT} (build it, or pass --native-bin <path>)`
      log(`bench: skipping ours (native): ${nativeSkipped}`)
      agents = agents.filter((a) => a !== 'native')
      if (!agents.length) die('nothing to run')
    } else {
      AGENTS.native.script = nativeBin
      build.native = buildInfo(nativeBin, 'the native daemon', newest)
    }
  }
  const buildProblems = [
    ...(agents.includes('ours') ? build.addon.problems : []),
    ...(build.native ? build.native.problems : [])
  ]
  const dirty = git(['status', '--porcelain', '--untracked-files=no'])
  const results = {
    date: startedAt.toISOString(),
    meta: {
      node: process.version,
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      cpus: os.cpus().length,
      cpu_model: (os.cpus()[0] || {}).model,
      loadavg_at_start: os.loadavg().map((x) => round(x, 2)),
      clk_tck: CLK_TCK,
      pm2_version: PM2_VERSION,
      git_head: git(['rev-parse', '--short', 'HEAD']),
      git_commit: git(['rev-parse', 'HEAD']),
      git_dirty: dirty == null ? null : dirty.length > 0, // tracked files changed since the commit
      git_dirty_files: dirty ? dirty.split('\n').map((l) => l.slice(3)) : [],
      build,
      build_problems: buildProblems,
      agents_run: agents,
      agents: Object.fromEntries(['js', 'ours', 'native'].filter((a) => !opts.only || opts.only.includes(a)).map((a) => [a,
        a === 'native' && nativeSkipped
          ? { skipped: nativeSkipped }
          : { label: AGENTS[a].label, [AGENTS[a].native ? 'binary' : 'script']: relPath(AGENTS[a].script), version: AGENTS[a].version }]))
    },
    options: opts,
    scenarios: {}
  }
  results.meta.bare_node = await bareNode()
  BARE = results.meta.bare_node
  const plan = []
  for (const n of opts.apps) plan.push({ name: `idle-${n}`, run: (a) => idleRun(a, n, opts) })
  if (opts.flood) plan.push({ name: 'flood', run: (a) => floodRun(a, opts) })
  for (const rate of opts.bus) plan.push({ name: `bus-${rate}`, run: (a) => busRun(a, rate, opts) })
  if (opts.wire) plan.push({ name: `wire-${opts.wire}`, run: (a) => wireRun(a, opts.wire, opts) })

  const perRun = (scn) => scn.startsWith('wire-')
    ? 2 * (opts.settle + 15 + opts.window)
    : opts.settle + 10 + (scn.startsWith('bus-')
      ? opts.baseline + opts.busSeconds + opts.quiet + 5
      : scn === 'flood' ? opts.baseline + 10 : opts.window)
  const total = plan.reduce((sum, p) => sum + perRun(p.name), 0) * agents.length
  log(`bench: ${agents.join(' + ')} × ${plan.map((p) => p.name).join(', ')}; window ${opts.window}s, settle ${opts.settle}s ` +
    `(~${Math.ceil(total / 60)} min)`)
  for (const k of ['addon', 'native']) {
    const b = build[k]
    if (b && b.path) log(`bench: ${k === 'addon' ? 'addon' : 'native daemon'} ${b.path}: ${b.size_bytes} bytes, ${b.mtime}, ${b.stripped ? 'stripped' : b.stripped === false ? 'NOT stripped' : 'strip state unknown'}`)
  }
  log(`bench: git ${results.meta.git_head}${results.meta.git_dirty ? ` + uncommitted changes (${results.meta.git_dirty_files.length} file(s))` : ''}`)
  loudWarning(buildProblems)
  let failures = 0
  for (const scn of plan) {
    results.scenarios[scn.name] = {}
    for (const a of agents) {
      if (interrupted) return
      log(`${scn.name}: ${AGENTS[a].label} (${AGENTS[a].version})`)
      try {
        const load0 = os.loadavg()[0]
        const r = await scn.run(a)
        r.loadavg_1m = [round(load0, 2), round(os.loadavg()[0], 2)] // at start, at end of the run
        results.scenarios[scn.name][a] = r
      } catch (e) {
        if (interrupted) return
        failures++
        console.error(`\n!! ${scn.name} / ${AGENTS[a].label}: ${e.message}`)
        if (e.logTail) console.error(`-- last lines of the daemon's output --\n${e.logTail}\n--`)
        results.scenarios[scn.name][a] = { error: e.message, log_tail: e.logTail || null }
      }
    }
  }

  const rows = buildRows(results)
  results.table = rows.map(({ _fmt, ...r }) => r)
  printTable(rows, agents)
  const warnings = noiseWarnings(results)
  if (results.meta.git_dirty) warnings.push(`the tree has uncommitted changes (${results.meta.git_dirty_files.join(', ')}): git ${results.meta.git_head} alone does not say what was measured`)
  results.warnings = [...buildProblems, ...warnings]
  if (nativeSkipped) results.warnings.push(`ours (native) skipped: ${nativeSkipped}`) // said at the start
  for (const w of warnings) console.log(`WARNING: ${w}`)
  if (BARE) console.log(`\nBare node (${process.version}, idle, nothing loaded): USS ${mb(BARE.uss_kb)} MB, RSS ${mb(BARE.rss_kb)} MB.`)
  console.log('Targets (both of our modes): private memory (USS) ≤ 1/3 of JS; CPU per status tick and per forwarded log line ≤ 1/10 of JS;\n' +
    'time to first status ≤ 300 ms; at 10 apps USS ≤ 8.5 MB (node-hosted), USS ≤ 4 MB and RSS ≤ 10 MB (native).')
  if (opts.bus.length) console.log('Bus rows: loss and latency of a synthetic PM2 bus (see bench/README.md); no target, lower is better except the rates.')
  if (opts.wire) console.log('Wire rows: bytes each agent sent on its WebSocket, same workload without and with WS_GZIP=true (permessage-deflate); no target.')
  loudWarning(buildProblems)

  const stamp = startedAt.toISOString().replace(/:/g, '-').replace(/\..*/, '')
  const outFile = opts.out || path.join(__dirname, `results-${stamp}.json`)
  fs.writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n')
  console.log(`Results written to ${path.relative(process.cwd(), outFile)}`)
  if (failures) {
    console.error(`${failures} run(s) failed (see above)`)
    process.exitCode = 1
  }
}

if (process.argv[2] === '--fake-pm2') {
  fakePm2Main() // the synthetic PM2 of the bus scenarios (a child of the benchmark)
} else {
  main().catch(async (e) => {
    console.error(e.stack || e)
    process.exitCode = 1
  }).finally(async () => {
    await runCleanups()
  })
}
