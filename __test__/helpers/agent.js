'use strict'
// The agent as the black-box tests drive it: through the package's
// InteractorClient, on the PM2_HOME the test file set before requiring this.

const fs = require('fs')
const { waitUntil } = require('./pm2')

const client = () => require('../../src/InteractorClient')
const constants = () => require('../../constants')

function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

/** launchAndInteract against `backend` with `keys`; resolves with the IPC message. */
function launchAgent (backend, keys) {
  return new Promise((resolve, reject) => {
    client().launchAndInteract({}, Object.assign({ info_node: backend.url }, keys), (err, msg) => {
      if (err) return reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
      resolve(msg)
    })
  })
}

/** getInteractInfo: what `pm2 link info` shows. */
function getInfos () {
  return new Promise((resolve, reject) => {
    client().getInteractInfo(constants(), (err, infos) => (err ? reject(err) : resolve(infos)))
  })
}

/** getInfos' drops of inbound messages, as `{"<channel> <reason>": count}`. */
async function inboundDrops () {
  let infos = null
  try { infos = await getInfos() } catch (e) { /* not answering yet: no drops seen */ }
  const out = {}
  for (const d of (infos && infos.drops) || []) {
    if (d.reason.startsWith('inbound: ')) out[`${d.channel} ${d.reason}`] = d.count
  }
  return out
}

/** Waits until getInfos counts exactly `expected` inbound drops (see inboundDrops). */
async function waitForInboundDrops (expected, timeoutMs = 10000) {
  const { isDeepStrictEqual } = require('util')
  await waitUntil(async () => isDeepStrictEqual(await inboundDrops(), expected), timeoutMs, 200,
    'the inbound drops counted in getInfos').catch(async (e) => {
    throw new Error(`${e.message}: ${JSON.stringify(await inboundDrops())}`)
  })
}

/** killInteractorDaemon, then waits for the daemon process to be gone. */
async function killAgent () {
  const c = constants()
  const pid = (() => { try { return parseInt(fs.readFileSync(c.INTERACTOR_PID_PATH, 'utf8')) } catch (e) { return 0 } })()
  await new Promise((resolve) => client().killInteractorDaemon(c, () => resolve()))
  if (pid) {
    await waitUntil(() => { try { process.kill(pid, 0); return false } catch (e) { return true } }, 10000, 100, 'agent exit')
  }
}

/** Which daemon the launcher starts in this run: 'native' (PM2_AGENT_NATIVE=true) or 'node'. */
const MODE = process.env.PM2_AGENT_NATIVE === 'true' ? 'native' : 'node'

/**
 * Whether the process `pid` carries the agent's title for this mode,
 * `PM2 Agent v<version> [<mode>]: (<home>)` (its /proc/<pid>/cmdline). On
 * Node, libuv may cut the title to the space of the original argv, so only
 * the part up to the mode is required there.
 */
function hasAgentTitle (pid, home) {
  const title = require('fs').readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]
  const full = `PM2 Agent v${require('../../package.json').version} [${MODE}]: (${home})`
  return MODE === 'native' ? title === full : title.startsWith(full.slice(0, full.indexOf(':') + 1))
}

/**
 * The usual stage of an agent test on `home`: a local backend, and PM2 with
 * one idle app named `idle`. `teardown()` stops the agent, PM2 and the
 * backend, then SIGKILLs any agent process of `home` still there (one a
 * test left wedged or orphaned).
 */
async function idleStage (home) {
  const { Backend } = require('./backend')
  const { pm2, writeApp, killPm2 } = require('./pm2')
  const backend = await new Backend().start()
  await pm2(home, ['start', writeApp(home, 'idle.js', 'setInterval(() => {}, 1000)\n'), '--name', 'idle'])
  const teardown = async () => {
    await killAgent()
    await killPm2(home)
    await backend.stop()
    for (const pid of agentProcesses(home)) {
      try { process.kill(pid, 'SIGKILL') } catch (e) {}
    }
  }
  return { backend, teardown }
}

/** The pids of /proc entries whose command line passes `pred` (Linux). */
function scanProc (pred) {
  const out = []
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try {
      if (pred(+p, fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'))) out.push(+p)
    } catch (e) {}
  }
  return out
}

/** The environment of process `pid` (Linux, our own processes only), or {}. */
function environOf (pid) {
  try {
    const env = {}
    for (const kv of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
      const at = kv.indexOf('=')
      if (at > 0) env[kv.slice(0, at)] = kv.slice(at + 1)
    }
    return env
  } catch (e) {
    return {}
  }
}

/**
 * The agent processes (either host) running on `home`: an agent title
 * (`PM2 Agent v…`) and PM2_HOME=`home` in their environment (the title may
 * be cut short on Node, so the home is read from the environment).
 */
function agentProcesses (home) {
  return scanProc((pid, cmdline) => cmdline.startsWith('PM2 Agent v') && environOf(pid).PM2_HOME === home).sort((a, b) => a - b)
}

/** The PM2 daemons (God) running on `home`. */
function godProcesses (home) {
  return scanProc((pid, cmdline) => /^PM2 v\S+: God Daemon/.test(cmdline) && environOf(pid).PM2_HOME === home)
}

/**
 * Processes with a descriptor open on `file`, as [{pid, fd, flags}] (flags:
 * the octal `flags:` of /proc/<pid>/fdinfo/<fd>; O_CLOEXEC is 02000000).
 */
function processesHolding (file) {
  const out = []
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue
    let fds
    try { fds = fs.readdirSync(`/proc/${p}/fd`) } catch (e) { continue }
    for (const fd of fds) {
      try {
        if (fs.readlinkSync(`/proc/${p}/fd/${fd}`) !== file) continue
        const info = fs.readFileSync(`/proc/${p}/fdinfo/${fd}`, 'utf8')
        const flags = parseInt((/flags:\s*(\d+)/.exec(info) || [])[1] || '0', 8)
        out.push({ pid: +p, fd: +fd, flags })
      } catch (e) {}
    }
  }
  return out
}

/**
 * Whether process `pid` runs: it exists and is not a zombie (a daemon
 * orphaned by its launcher is reaped by whatever is PID 1, maybe late; a
 * zombie still answers `kill(pid, 0)`).
 */
function alive (pid) {
  try {
    return !/^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch (e) {
    return false
  }
}

/** The RSS of process `pid` in bytes (VmRSS of /proc/<pid>/status), or 0. */
function rssOf (pid) {
  try {
    const m = /VmRSS:\s*(\d+)\s*kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? parseInt(m[1]) * 1024 : 0
  } catch (e) {
    return 0
  }
}

function agentLog () {
  try { return fs.readFileSync(constants().INTERACTOR_LOG_FILE_PATH, 'utf8') } catch (e) { return '' }
}

module.exports = {
  sleep,
  launchAgent,
  getInfos,
  inboundDrops,
  waitForInboundDrops,
  killAgent,
  agentLog,
  idleStage,
  MODE,
  hasAgentTitle,
  agentProcesses,
  godProcesses,
  processesHolding,
  environOf,
  rssOf,
  alive
}

/**
 * `n` launcher processes at once (__test__/fixtures/launcher.js: each one
 * `launchAndInteract` on `home` with `keys`, like n `pm2 link` commands);
 * resolves with their answers, [{err, msg}], in launch order.
 */
function launchConcurrently (n, home, backend, keys, extraEnv) {
  const { spawn } = require('child_process')
  const path = require('path')
  const script = path.join(__dirname, '..', 'fixtures', 'launcher.js')
  const env = Object.assign({}, process.env, extraEnv || {}, {
    PM2_HOME: home,
    PM2_SILENT: 'true',
    LAUNCHER_KEYS: JSON.stringify(Object.assign({ info_node: backend.url }, keys))
  })
  return Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const child = spawn(process.execPath, [script], { env, stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.on('close', (code) => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()))
      } catch (e) {
        resolve({ err: `launcher exited ${code} without an answer: ${JSON.stringify(out)}`, msg: null })
      }
    })
  })))
}

module.exports.launchConcurrently = launchConcurrently
