'use strict'
// The agent daemon. `node src/InteractorDaemon.js` runs it (the CLI spawns it
// this way); `require` gives the InteractorDaemon class with the JS agent's
// signatures. The work happens in Rust (NativeDaemon) on a background tokio
// runtime; this file only bridges Node-only facts (os.cpus(), the IPC channel
// of process.send, process.exit) to it.

const os = require('os')
const path = require('path')
const { NativeDaemon } = require('./native').load()
const pkg = require('../package.json')

// Children of the agent (the watchdog's `pm2 resurrect`) must not launch
// another agent: the InteractorClient short-circuits on this variable.
process.env.PM2_AGENT_ONLINE = 'true'

const STARTED_AT = Date.now()

function pm2Home () {
  return process.env.PM2_HOME || path.join(os.homedir(), '.pm2')
}

class InteractorDaemon {
  constructor () {
    this._exitCallbacks = []
    this._native = new NativeDaemon(Object.assign({}, process.env), {
      cpus: os.cpus(),
      totalmem: os.totalmem(),
      hostname: os.hostname(),
      nodeVersion: process.version,
      execPath: process.execPath,
      configFile: path.join(__dirname, '..', 'config.json')
    })
    this.opts = {
      MACHINE_NAME: process.env.PM2_MACHINE_NAME,
      PUBLIC_KEY: process.env.PM2_PUBLIC_KEY,
      PM2_VERSION: process.env.PM2_VERSION || '0.0.0'
    }
  }

  getSystemMetadata () {
    return this._native.systemMetadata()
  }

  sendToParent (data) {
    if (!process.connected || !process.send) return console.log('Could not send data to parent')
    try {
      process.send(data)
    } catch (e) {
      console.trace('Parent process disconnected')
    }
  }

  start (cb) {
    this._native.start((json) => {
      let ev
      try { ev = JSON.parse(json) } catch (e) { return }
      if (ev.type === 'ipc') return this.sendToParent(ev.data)
      if (ev.type === 'started') {
        if (typeof cb === 'function') setTimeout(cb, 20)
        return
      }
      if (ev.type === 'rescue') return this._rescue(ev.reason)
      if (ev.type === 'exit') {
        const cbs = this._exitCallbacks.splice(0)
        for (const fn of cbs) {
          try { fn() } catch (e) { console.error(e) }
        }
        // Let the IPC message and the kill reply flush before leaving.
        setTimeout(() => process.exit(ev.code), 10)
      }
    })
  }

  // A fatal error in the Rust daemon: it already stopped its work and
  // released interactor.sock. Relaunch the agent the way the CLI does
  // (getOrSetConf from this process's env, then daemonize), then leave.
  _rescue (reason) {
    console.error('-- FATAL EXCEPTION happened --')
    console.error(new Date())
    console.error(reason)
    const rescues = parseInt(process.env.PM2_AGENT_RESCUES || '0', 10) || 0
    const livedMs = Date.now() - STARTED_AT
    const count = livedMs < 5 * 60 * 1000 ? rescues + 1 : 1
    if (count > 5) {
      console.error('[PM2 Agent] Failed to rescue agent : it crashed 5 times in a row, giving up')
      return process.exit(1)
    }
    process.env.PM2_AGENT_RESCUES = String(count)
    // Injected faults (a testing aid) fire once, not in the relaunched agent.
    delete process.env.PM2_AGENT_FAULT_INJECTION
    console.log('Re-initiating Agent')
    const InteractorClient = require('./InteractorClient')
    const cst = require('../constants').forHome(pm2Home())
    InteractorClient.getOrSetConf(cst, null, (err, infos) => {
      if (err || !infos) {
        console.error('[PM2 Agent] Failed to rescue agent :', err)
        return process.exit(1)
      }
      console.log('[PM2 Agent] Using (Public key: %s) (Info node: %s)', infos.public_key, infos.info_node)
      const timer = setTimeout(() => {
        console.error('Daemonization of failsafe agent did not worked')
        process.exit(1)
      }, 15000)
      InteractorClient.daemonize(cst, infos, (err) => {
        clearTimeout(timer)
        process.exit(err ? 1 : 0)
      })
    })
  }

  exit (err, cb) {
    if (typeof err === 'function') { cb = err; err = null }
    if (typeof cb === 'function') this._exitCallbacks.push(cb)
    this._native.exit(err ? String(err.message || err) : null)
  }
}

module.exports = InteractorDaemon

if (require.main === module) {
  // `[node]` tells this host from the native daemon (`[native]`) in `ps`.
  process.title = `PM2 Agent v${pkg.version} [node]: (${pm2Home()})`
  let daemon
  try {
    daemon = new InteractorDaemon()
  } catch (e) {
    console.error(e.message)
    process.exit(1)
  }
  // PM2 stops the agent with `kill` over interactor.sock; a plain signal
  // gets the same clean shutdown instead of leaving stale files.
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => daemon.exit(null))
  daemon.start()
}
