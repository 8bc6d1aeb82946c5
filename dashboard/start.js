#!/usr/bin/env node
'use strict'
// `npm start`: see the agent work without a PM2.io account (README, "The
// local dashboard").
//
//  1. starts the local backend (dashboard/backend.js) on 127.0.0.1;
//  2. the PM2 of PM2_HOME (default ~/.pm2): used when it runs; otherwise
//     started with node_modules' pm2, with the demo app (dashboard/demo-app.js);
//     `--demo` adds the demo app to a PM2 that already runs;
//  3. links it with this package's agent (src/InteractorClient.js
//     launchAndInteract) to the local backend, with keys made for this run.
//     It does not take over a real link: when an agent already runs for
//     PM2_HOME it refuses (and says how to stop that agent); the PM2_HOME's
//     agent.json5 (which launchAndInteract rewrites) is backed up to
//     agent.json5.npm-start-backup and put back at exit. The agent runs
//     without its watchdog (PM2_AGENT_WATCHDOG=false), which would rewrite
//     PM2's dump.pm2;
//  4. prints the page's URL with its token.
// Ctrl-C / SIGTERM / SIGHUP: stops the agent it launched, puts agent.json5
// back, then `pm2 kill` if it started PM2, else `pm2 delete` of the demo app
// if it added it. Nothing else.
//
// Settings (env): PM2_HOME; KM_DASHBOARD_PORT (default: any free port);
// KM_DEMO_THROW_MS (the demo app throws this long after each start, default 60000).

const { execFile } = require('child_process')
const crypto = require('crypto')
const fs = require('fs')
const net = require('net')
const os = require('os')
const path = require('path')

const constants = require('../constants')
const { DashboardBackend } = require('./backend')

const DEMO_NAME = 'km-dashboard-demo'
const DEMO_APP = path.join(__dirname, 'demo-app.js')
const BACKUP_SUFFIX = '.npm-start-backup'
const STOP_TIMEOUT_MS = 60000
// Variables that would make launchAndInteract use other keys or another
// backend than ours (env wins over its arguments), or reach PM2 and its apps.
const AGENT_ENV = /^(PM2_(PUBLIC|SECRET)_KEY|KEYMETRICS_(PUBLIC|SECRET|NODE)|PM2_AGENT_ONLINE|PM2_INTERACTOR_PROCESSING)$/

const say = (...a) => console.log('[npm start]', ...a)

function usage () {
  console.log(`usage: npm start [-- --demo]

Starts a local PM2.io-compatible backend on 127.0.0.1, links the PM2 of
PM2_HOME (${constants.resolvePM2Home()}) to it with this agent, and prints the URL of the
dashboard. When no PM2 runs there, starts one with a demo app; --demo adds
the demo app to a PM2 that already runs. Ctrl-C stops what it started.`)
}

function pm2Bin () {
  try {
    return require.resolve('pm2/bin/pm2')
  } catch (e) {
    return null
  }
}

/** The environment for PM2's CLI: ours without the agent's settings. */
function pm2Env (home) {
  const env = Object.assign({}, process.env)
  for (const k of Object.keys(env)) if (AGENT_ENV.test(k)) delete env[k]
  // PM2 must not launch an agent of its own from agent.json5.
  return Object.assign(env, { PM2_HOME: home, PM2_NO_INTERACTION: 'true', PM2_DISABLE_VERSION_CHECK: 'true' })
}

function pm2 (home, args) {
  const bin = pm2Bin()
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [bin, ...args], { env: pm2Env(home), timeout: 60000 }, (err, stdout, stderr) => {
      if (err) {
        err.message = `pm2 ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`
        return reject(err)
      }
      resolve(stdout)
    })
  })
}

/** Whether something accepts on the unix socket `file` (a running PM2: rpc.sock). */
function socketAccepts (file) {
  return new Promise((resolve) => {
    const s = net.connect(file)
    const done = (ok) => { s.destroy(); resolve(ok) }
    s.setTimeout(2000, () => done(false))
    s.once('connect', () => done(true))
    s.once('error', () => done(false))
  })
}

function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

function alive (pid) {
  try {
    process.kill(pid, 0)
    return !/^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch (e) {
    return e.code === 'EPERM' || (e.code === 'ENOENT' && process.platform !== 'linux')
  }
}

function readPid (file) {
  try {
    const pid = parseInt(fs.readFileSync(file, 'utf8'), 10)
    return pid > 0 ? pid : 0
  } catch (e) {
    return 0
  }
}

/** Whether `pid` is an agent for `home` (its title and PM2_HOME), where /proc tells. */
function isAgentOf (pid, home) {
  try {
    const title = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
    return title.startsWith('PM2 Agent v') && env.includes(`PM2_HOME=${home}`)
  } catch (e) {
    return false
  }
}

class Session {
  constructor (home) {
    this.home = home
    this.cst = constants.forHome(home)
    this.backend = null
    this.startedPm2 = false
    this.addedDemo = false
    this.agentPid = 0
    this.conf = null // {existed, data, mode} of agent.json5 before us
    this.stopping = null
  }

  async start (wantDemo) {
    const client = require('../src/InteractorClient')
    const online = await new Promise((resolve) => client.ping(this.cst, (err, on) => resolve(!err && on)))
    if (online) {
      const pid = readPid(this.cst.INTERACTOR_PID_PATH)
      throw new Error(`an agent already runs for PM2_HOME=${this.home}${pid ? ` (pid ${pid})` : ''}: npm start will not take over ` +
        'a link it did not make. Stop that agent first (`pm2 link stop`, or `pm2 unlink` to forget the link), ' +
        'or run npm start with another PM2_HOME.')
    }

    this._backupConf()

    const keys = {
      public_key: `local-${crypto.randomBytes(6).toString('hex')}`,
      secret_key: crypto.randomBytes(16).toString('hex')
    }
    const port = Number(process.env.KM_DASHBOARD_PORT) || 0
    this.backend = await new DashboardBackend({ keys, port, log: (m) => say(m) }).start()

    const pm2Runs = await socketAccepts(this.cst.DAEMON_RPC_PORT)
    if (!pm2Runs) {
      if (!pm2Bin()) throw new Error(`no PM2 runs for PM2_HOME=${this.home} and pm2 is not installed here (npm install)`)
      say(`no PM2 runs for PM2_HOME=${this.home}: starting one (node_modules/pm2) with the demo app`)
      this.startedPm2 = true
      await pm2(this.home, ['start', DEMO_APP, '--name', DEMO_NAME])
      this.addedDemo = true
    } else if (wantDemo) {
      if (!pm2Bin()) throw new Error('--demo needs pm2 installed here (npm install)')
      say(`adding the demo app (${DEMO_NAME}) to the PM2 of ${this.home}`)
      this.addedDemo = true
      await pm2(this.home, ['start', DEMO_APP, '--name', DEMO_NAME])
    } else {
      say(`using the PM2 that runs for PM2_HOME=${this.home}`)
    }

    // launchAndInteract: environment first, then its arguments, then agent.json5.
    for (const k of Object.keys(process.env)) if (AGENT_ENV.test(k)) delete process.env[k]
    process.env.KEYMETRICS_NODE = this.backend.url
    process.env.PM2_SILENT = 'true'
    // No watchdog for this demo link: it would rewrite the user's dump.pm2
    // every 5 minutes (the demo app in it) and resurrect PM2 after an outage.
    // Also, the pm2 CLI is not this script (daemonize's default guess).
    process.env.PM2_AGENT_WATCHDOG = 'false'
    process.env.PM2_BINARY_PATH = pm2Bin() || ''
    const msg = await new Promise((resolve, reject) => {
      const infos = { machine_name: os.hostname(), info_node: this.backend.url }
      // PM2's version as PM2 would pass it, when it is the one we started.
      if (this.startedPm2) infos.pm2_version = require('pm2/package.json').version
      client.launchAndInteract({ PM2_HOME: this.home }, Object.assign(infos, keys),
        (err, m) => {
          if (err) return reject(new Error(`the agent did not start: ${err.message || JSON.stringify(err)}`))
          resolve(m || {})
        })
    })
    this.agentPid = (msg && msg.pid) || readPid(this.cst.INTERACTOR_PID_PATH)
    if (!this.agentPid) this.agentPid = await this._waitPid()
  }

  async _waitPid () {
    for (let i = 0; i < 50; i++) {
      const pid = readPid(this.cst.INTERACTOR_PID_PATH)
      if (pid) return pid
      await sleep(100)
    }
    return 0
  }

  _backupConf () {
    const file = this.cst.INTERACTION_CONF
    const backup = file + BACKUP_SUFFIX
    // A backup left by an npm start that could not finish: the original first.
    if (fs.existsSync(backup)) {
      fs.copyFileSync(backup, file)
      fs.unlinkSync(backup)
      say(`put back ${file} from ${backup} (left by an earlier npm start)`)
    }
    try {
      const data = fs.readFileSync(file)
      const mode = fs.statSync(file).mode & 0o777
      fs.writeFileSync(backup, data, { mode: 0o600 })
      this.conf = { existed: true, data, mode }
      say(`backed up ${file} (restored at exit)`)
    } catch (e) {
      if (e.code !== 'ENOENT') throw e
      this.conf = { existed: false }
    }
  }

  _restoreConf () {
    if (!this.conf) return
    const file = this.cst.INTERACTION_CONF
    try {
      if (this.conf.existed) {
        fs.writeFileSync(file, this.conf.data, { mode: this.conf.mode })
        fs.chmodSync(file, this.conf.mode)
        fs.rmSync(file + BACKUP_SUFFIX, { force: true })
        say(`restored ${file}`)
      } else {
        fs.rmSync(file, { force: true })
      }
    } catch (e) {
      console.error(`[npm start] could not restore ${file}: ${e.message} (the original is in ${file}${BACKUP_SUFFIX})`)
    }
    this.conf = null
  }

  async _stopAgent () {
    const pid = this.agentPid
    if (!pid) return
    const client = require('../src/InteractorClient')
    await new Promise((resolve) => client.killInteractorDaemon(this.cst, () => resolve()))
    const deadline = Date.now() + 10000
    while (alive(pid) && Date.now() < deadline) await sleep(100)
    if (alive(pid) && isAgentOf(pid, this.home)) {
      say(`agent ${pid} still runs: SIGKILL`)
      try { process.kill(pid, 'SIGKILL') } catch (e) {}
    }
    say(`stopped the agent (pid ${pid})`)
    this.agentPid = 0
  }

  stop () {
    if (this.stopping) return this.stopping
    this.stopping = (async () => {
      let failed = false
      const step = async (what, fn) => {
        try {
          await fn()
        } catch (e) {
          failed = true
          console.error(`[npm start] ${what}: ${e.message}`)
        }
      }
      await step('stopping the agent', () => this._stopAgent())
      this._restoreConf()
      if (this.startedPm2) {
        await step('pm2 kill', async () => {
          await pm2(this.home, ['kill'])
          say(`stopped the PM2 it started (PM2_HOME=${this.home})`)
        })
      } else if (this.addedDemo) {
        await step(`pm2 delete ${DEMO_NAME}`, async () => {
          await pm2(this.home, ['delete', DEMO_NAME])
          say(`deleted the demo app from PM2 (PM2_HOME=${this.home})`)
        })
      }
      if (this.backend) await step('stopping the backend', () => this.backend.stop())
      return !failed
    })()
    return this.stopping
  }
}

async function main () {
  const args = process.argv.slice(2)
  if (args.includes('-h') || args.includes('--help')) return usage()
  const unknown = args.filter((a) => a !== '--demo')
  if (unknown.length) {
    console.error(`unknown option ${JSON.stringify(unknown[0])}`)
    usage()
    process.exitCode = 2
    return
  }
  const home = constants.resolvePM2Home()
  const session = new Session(home)
  let signals = 0
  let starting = true
  const shutdown = (code) => {
    const hard = setTimeout(() => {
      console.error('[npm start] could not stop within 60 s; exiting')
      process.exit(1)
    }, STOP_TIMEOUT_MS)
    hard.unref()
    session.stop().then((ok) => {
      say('bye')
      process.exit(ok ? code : 1)
    })
  }
  const onSignal = (sig) => {
    if (signals++) return say(`${sig}: already stopping…`)
    say(`${sig}: stopping what npm start started${starting ? ' (once it is up)' : ''}`)
    // Mid-start, the stop waits for the start to finish (so it sees what was started).
    if (!starting) shutdown(0)
  }
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => onSignal(sig))

  try {
    await session.start(args.includes('--demo'))
  } catch (e) {
    console.error(`[npm start] ${e.message}`)
    starting = false
    return shutdown(1)
  }
  starting = false
  if (signals) return shutdown(0)
  const b = session.backend
  say(`agent pid ${session.agentPid}, linked to the local backend ${b.url} with keys made for this run`)
  console.log('')
  console.log(`Dashboard: ${b.pageUrl}`)
  console.log(`Inspector: ${b.url}/inspector?token=${b.token}`)
  console.log('')
  say('Only 127.0.0.1 and whoever has the token get in. Ctrl-C stops what npm start started.')
}

main()
