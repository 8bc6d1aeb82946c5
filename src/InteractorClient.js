/**
 * InteractorClient: the side of the agent that runs inside the PM2 CLI / API
 * process. Drop-in for @pm2/agent's src/InteractorClient.js: same static
 * methods, same callback shapes, same console strings and streams.
 *
 * Talking to a running agent goes through the native addon (`pingSocket`,
 * `rpcCall`: one pm2-axon-rpc call per connection) instead of a long-lived
 * axon req socket; `launchRPC` therefore exposes the agent's two RPC methods,
 * `kill` and `getInfos`, once something accepts on interactor.sock.
 *
 * Deliberate differences from the JS agent (see docs/js-agent-behaviour.md §6):
 *  - the secret key is never printed (shown as `****` + its last 4 chars);
 *  - agent.json5 and agent.log are created (and an existing agent.json5 is
 *    chmod-ed) with mode 0600; agent.json5 that is valid JSON is read as is,
 *    the old unquoted-key form is still accepted;
 *  - launchAndInteract does not overwrite the caller's constants: the agent
 *    constants are rebuilt for the caller's PM2_HOME and only keys the caller
 *    does not have are added to its object (so `launchAndInteract({}, …)`
 *    still fills the object, but a custom `pm2_home` is kept);
 *  - daemonize's callback fires exactly once (its 7 s timer is cleared when
 *    the child closes; a late 'close' after the answer is ignored), the IPC
 *    channel is only disconnected while connected, the pid found in
 *    agent.pid is only signalled when it looks like an agent, and the
 *    daemon's `{error: true, msg}` give-up message is reported as a failure;
 *  - launchRPC reports a failed connection with an Error, and its callers
 *    never call a method that was not set up.
 *  - the daemon's process title carries its host:
 *    `PM2 Agent v<version> [node]: (<PM2_HOME>)` or `[native]`.
 *  - one agent per PM2_HOME: the daemon takes `$PM2_HOME/agent.lock` before
 *    anything else and writes agent.pid itself once it holds it (daemonize
 *    does not). A daemon that finds the lock taken answers its launcher
 *    with the running agent's outcome (the same IPC message, that agent's
 *    pid in it) and exits 0, so concurrent launchers all get the winner's
 *    answer. daemonize still SIGTERMs a previous agent named by agent.pid,
 *    but only a foreign (JS) one: ours are left to the lock. launchOrAttach
 *    still restarts a running agent, except one of ours that took the lock
 *    less than 10 s ago with the same keys (a concurrent launch): it is
 *    attached to (its outcome handed over) instead of restarted.
 *
 * Which daemon daemonize spawns: `node src/InteractorDaemon.js` by default;
 * the native binary (`keymetrics-agent-daemon.<platform>`, see
 * ./nativeDaemon.js) when PM2_AGENT_NATIVE=true is in this process's
 * environment. A requested but missing binary fails daemonize's callback
 * with an Error naming the paths tried (no silent fallback to Node).
 *
 * Internal (tests only, not part of the API): `InteractorClient._daemonScript`
 * replaces the script daemonize spawns (default: ./InteractorDaemon.js next
 * to this file); it always runs on Node.
 */

'use strict'

const fs = require('fs')
const os = require('os')
const path = require('path')
const util = require('util')
const crypto = require('crypto')
const childProcess = require('child_process')
const constants = require('../constants')
const nativeDaemon = require('./nativeDaemon')
const pkg = require('../package.json')

const log = util.debuglog('interactor')

const PING_TIMEOUT_MS = 2000
const RPC_TIMEOUT_MS = 5000
const DAEMON_ANSWER_TIMEOUT_MS = 7000
// An agent that took agent.lock less than this ago, with the same keys, is
// attached to rather than restarted by launchOrAttach (concurrent launches).
const ATTACH_WINDOW_MS = 10000
const DEFAULT_DEBUG = 'interactor:*,-interactor:axon,-interactor:websocket,-interactor:pm2:client,-interactor:push'

const native = require('./native').load

// ---------------------------------------------------------------------------
// Output helpers (colours like chalk/ansis: only on a colour-capable stdout)

function colorEnabled () {
  const force = process.env.FORCE_COLOR
  if (force !== undefined) return force !== '0' && force !== 'false'
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false
  return Boolean(process.stdout && process.stdout.isTTY) && process.env.TERM !== 'dumb'
}
function paint (open, close) {
  return (s) => colorEnabled() ? `\u001b[${open}m${s}\u001b[${close}m` : String(s)
}
const chalk = { red: paint(31, 39), yellow: paint(33, 39), cyan: paint(36, 39) }

function quiet () {
  return Boolean(process.env.PM2_SILENT || process.env.PM2_PROGRAMMATIC)
}

function printError (msg) {
  if (quiet()) return false
  if (msg instanceof Error) return console.error(msg.message)
  return console.error.apply(console, arguments)
}

function printOut () {
  if (quiet()) return false
  return console.log.apply(console, arguments)
}

/**
 * How a secret key is shown: `****` followed by its last 4 characters
 * (only `****` when it is 4 characters or shorter).
 * @param {*} secret
 */
function maskSecret (secret) {
  if (secret === undefined || secret === null || secret === '') return secret
  const s = String(secret)
  return s.length > 4 ? '****' + s.slice(-4) : '****'
}

function noop () {}

/** A callback that runs at most once. */
function once (cb) {
  let called = false
  return function () {
    if (called) return false
    called = true
    return typeof cb === 'function' ? cb.apply(null, arguments) : false
  }
}

/**
 * The agent constants for the PM2_HOME of `cst`, with `cst`'s own values for
 * the keys it sets. Used where only a path is needed.
 */
function pathsOf (cst) {
  cst = cst || {}
  const own = constants.forHome(cst.PM2_HOME)
  return {
    PM2_HOME: cst.PM2_HOME || own.PM2_HOME,
    INTERACTOR_RPC_PORT: cst.INTERACTOR_RPC_PORT || own.INTERACTOR_RPC_PORT,
    INTERACTOR_LOG_FILE_PATH: cst.INTERACTOR_LOG_FILE_PATH || own.INTERACTOR_LOG_FILE_PATH,
    INTERACTOR_PID_PATH: cst.INTERACTOR_PID_PATH || own.INTERACTOR_PID_PATH,
    INTERACTION_CONF: cst.INTERACTION_CONF || own.INTERACTION_CONF,
    KEYMETRICS_ROOT_URL: cst.KEYMETRICS_ROOT_URL || own.KEYMETRICS_ROOT_URL,
    IS_BUN: cst.IS_BUN === true
  }
}

/** The socket address as the native layer takes it. */
function socketAddress (addr) {
  const s = String(addr)
  if (/^\d+$/.test(s) || s.includes('://') || s.startsWith('unix:') || s.startsWith('\\\\')) return s
  if (!s.includes(':') && !path.isAbsolute(s)) return path.resolve(s)
  return s
}

/**
 * On Linux, whether the process `pid` looks like an agent (its command line
 * mentions InteractorDaemon, or it carries the agent's process title:
 * `PM2 Agent v<version> [node]: (<home>)` on Node, `[native]` for the
 * native daemon, `PM2 Agent v<version>: (<home>)` for older agents).
 * Elsewhere there is no cheap way to tell: true, as the JS agent assumed.
 */
function looksLikeAgent (pid) {
  if (process.platform !== 'linux') return true
  let cmdline
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch (e) {
    return false
  }
  return cmdline.includes('InteractorDaemon') || cmdline.startsWith('PM2 Agent v')
}

const OUR_DAEMON_SCRIPT = path.join(__dirname, 'InteractorDaemon.js')

/**
 * On Linux, whether the process `pid` is one of this package's daemons
 * (Node or native host: the `[node]` / `[native]` title, or our
 * InteractorDaemon.js before Node set the title). Those take
 * `$PM2_HOME/agent.lock`, which decides between them: a launcher never
 * signals them by pid (the one it would hit may be the agent another
 * launcher just started). Elsewhere: false.
 */
function isOurAgent (pid) {
  if (process.platform !== 'linux') return false
  let cmdline
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch (e) {
    return false
  }
  return /^PM2 Agent v\S+ \[(node|native)\]/.test(cmdline) || cmdline.split('\0').includes(OUR_DAEMON_SCRIPT)
}

/** The pid agent.pid names, if any. */
function readPidFile (pidPath) {
  try {
    const pid = parseInt(fs.readFileSync(pidPath, 'utf8'), 10)
    return Number.isInteger(pid) && pid > 0 ? pid : null
  } catch (e) {
    return null
  }
}

/** SIGTERM to the previous agent `prevPid` (read from `pidPath` before the spawn), if it is a foreign (JS) agent. */
function killPreviousAgent (prevPid, pidPath, newPid) {
  if (!prevPid) return
  if (prevPid === process.pid || prevPid === newPid) return
  if (!looksLikeAgent(prevPid)) {
    log('pid %d from %s is not an agent, left alone', prevPid, pidPath)
    return
  }
  if (isOurAgent(prevPid)) {
    log('pid %d from %s is one of our agents: agent.lock decides, left alone', prevPid, pidPath)
    return
  }
  try {
    process.kill(prevPid)
  } catch (e) {}
}

/**
 * The live process `$PM2_HOME/agent.lock` names (the agent writes its pid
 * there when it takes the lock), as {pid, fresh}: `fresh` when it took the
 * lock less than ATTACH_WINDOW_MS ago. Null when there is no such file or
 * its process is gone (a stale lock file).
 */
function lockHolder (pm2Home) {
  const file = path.join(pm2Home, 'agent.lock')
  try {
    const age = Date.now() - fs.statSync(file).mtimeMs
    const pid = parseInt(fs.readFileSync(file, 'utf8'), 10)
    if (!Number.isInteger(pid) || pid <= 0) return null
    process.kill(pid, 0)
    // A zombie (a dead agent not reaped yet) holds nothing.
    if (process.platform === 'linux' && /^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))) return null
    return { pid, fresh: age <= ATTACH_WINDOW_MS }
  } catch (e) {
    return null
  }
}

/**
 * launchOrAttach found an agent online. When it is one of ours that a
 * concurrent launch started moments ago with the same keys, restarting it
 * would only undo that launch: wait (DAEMON_ANSWER_TIMEOUT_MS at most) for
 * its outcome (`launchOutcome` on interactor.sock, the IPC message it sent
 * its own launcher) and hand it over: `done(msg)`. Anything else (an older
 * agent, a JS agent, other keys, no outcome in time): `done(null)`, and the
 * caller restarts it as the JS agent does.
 */
function attachToFresh (conf, infos, holder, done) {
  if (!holder || !holder.fresh) return done(null)
  const pid = holder.pid
  const address = socketAddress(conf.INTERACTOR_RPC_PORT)
  const deadline = Date.now() + DAEMON_ANSWER_TIMEOUT_MS
  const ask = () => {
    let pending
    try {
      pending = native().rpcCall(address, 'launchOutcome', [], 1000)
    } catch (e) {
      pending = Promise.reject(e)
    }
    pending.then((res) => res, () => []).then((res) => {
      const msg = Array.isArray(res) && res[0] && typeof res[0] === 'object' ? res[0] : null
      if (msg) {
        // The agent reports its secret masked (`****` + last 4).
        const same = msg.pid === pid && msg.public_key === infos.public_key &&
          (msg.secret_key === infos.secret_key || msg.secret_key === maskSecret(infos.secret_key)) && msg.machine_name === infos.machine_name
        return done(same ? msg : null)
      }
      if (Date.now() >= deadline) return done(null)
      setTimeout(ask, 100)
    })
  }
  ask()
}

/**
 * Reads agent.json5: valid JSON, or the old form with unquoted keys.
 * Anything unreadable is an empty configuration.
 */
function readConfFile (file) {
  let content
  try {
    content = fs.readFileSync(file, 'utf8')
  } catch (e) {
    log('Interaction file does not exists')
    return {}
  }
  let parsed
  try {
    parsed = JSON.parse(content)
  } catch (e) {
    try {
      parsed = JSON.parse(content.replace(/\s(\w+):/g, '"$1":'))
    } catch (e2) {
      log('Interaction file is not readable')
      return {}
    }
  }
  return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : {}
}

/** Writes agent.json5 readable by its owner only (existing files included). */
function writeConfFile (file, content) {
  const fd = fs.openSync(file, 'w', 0o600)
  try {
    try {
      fs.fchmodSync(fd, 0o600)
    } catch (e) {}
    fs.writeSync(fd, content)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * A stand-in for the JS agent's axon req socket to interactor.sock: calls go
 * through `rpcCall` (one connection each), this only tracks open/closed.
 */
class RpcHandle extends require('events').EventEmitter {
  constructor (address) {
    super()
    this.address = address
    this.closing = false
    this.destroyed = false
  }

  close () {
    if (this.closing) return
    this.closing = true
    setImmediate(() => this.emit('close'))
  }

  destroy () {
    this.closing = true
    this.destroyed = true
  }
}

module.exports = class InteractorDaemonizer {
  /**
   * Whether an agent accepts connections on `opts.INTERACTOR_RPC_PORT`.
   * @param {Object} opts constants (INTERACTOR_RPC_PORT)
   * @param {Function} cb (err, online)
   */
  static ping (opts, cb) {
    if (typeof cb !== 'function') {
      throw new Error('Missing parameters')
    } else if (typeof opts !== 'object' || !opts || !opts.INTERACTOR_RPC_PORT) {
      return cb(new Error('Missing parameters'))
    }
    const address = socketAddress(opts.INTERACTOR_RPC_PORT)
    log('[PING INTERACTOR] Trying to connect to Interactor daemon')

    let pending
    try {
      pending = native().pingSocket(address, PING_TIMEOUT_MS)
    } catch (e) {
      pending = Promise.reject(e)
    }
    pending.then((online) => {
      if (online) {
        log('Interactor Daemon alive')
        return cb(null, true)
      }
      log('Interactor Daemon not launched')
      if (process.platform !== 'win32' && !String(address).startsWith('\\\\')) {
        // Like the JS agent: a root-owned socket the user may not connect to
        // means the agent belongs to root.
        try {
          fs.accessSync(address, fs.constants.W_OK)
        } catch (e) {
          if (e.code === 'EACCES') {
            let stats = null
            try {
              stats = fs.statSync(address)
            } catch (e2) {}
            if (stats && stats.uid === 0) {
              console.error('Permission denied, activate current user')
              return process.exit(1)
            }
          }
        }
      }
      return cb(null, false)
    }, (e) => {
      console.error('unexpected error')
      console.error(e)
      return cb(null, false)
    })
  }

  /**
   * Stop the agent through its RPC `kill`.
   * @param {Object} conf constants (INTERACTOR_RPC_PORT)
   * @param {Function} [cb] (err, {success, msg?})
   */
  static killInteractorDaemon (conf, cb) {
    process.env.PM2_INTERACTOR_PROCESSING = 'true'

    log('Killing interactor #1 ping')
    this.ping(conf, (err, online) => {
      log(`Interactor is ${!online || err ? 'offline' : 'online'}`)

      if (!online || err) {
        return cb ? err ? cb(err) : cb(new Error('Interactor not launched')) : printError('Interactor not launched')
      }

      this.launchRPC(conf, (err) => {
        if (err || !this.rpc || typeof this.rpc.kill !== 'function') {
          setTimeout(() => this.disconnectRPC(cb), 100)
          return false
        }
        this.rpc.kill((err) => {
          if (err) printError(err)
          setTimeout(() => this.disconnectRPC(cb), 100)
        })
        return false
      })
      return false
    })
  }

  /**
   * Set up `InteractorClient.rpc.kill(cb)` / `.getInfos(cb)` for the agent on
   * `conf.INTERACTOR_RPC_PORT`.
   * @param {Object} conf constants (INTERACTOR_RPC_PORT)
   * @param {Function} cb (err, {success, msg?})
   */
  static launchRPC (conf, cb) {
    cb = once(cb)
    this.rpc = {}
    const address = conf && conf.INTERACTOR_RPC_PORT ? socketAddress(conf.INTERACTOR_RPC_PORT) : null
    const handle = new RpcHandle(address)
    this.client = handle
    this.client_sock = handle

    log('Generating Interactor methods of RPC client')
    const failed = (err) => cb(err || new Error('reconnect attempt'), { success: false, msg: 'reconnect attempt' })
    if (!address) return failed(new Error('Missing parameters'))

    let pending
    try {
      pending = native().pingSocket(address, PING_TIMEOUT_MS)
    } catch (e) {
      pending = Promise.reject(e)
    }
    pending.then((online) => {
      if (!online || handle.closing) return failed()
      const rpc = {}
      for (const name of ['kill', 'getInfos']) {
        rpc[name] = function () {
          const args = Array.prototype.slice.call(arguments)
          const done = typeof args[args.length - 1] === 'function' ? args.pop() : noop
          if (handle.closing) return done(new Error('RPC closed'))
          native().rpcCall(address, name, args, RPC_TIMEOUT_MS)
            .then((res) => done.apply(null, [null].concat(Array.isArray(res) ? res : [])),
              (err) => done(err instanceof Error ? err : new Error(String(err))))
        }
      }
      this.rpc = rpc
      log('Methods of RPC client for Interaction ready.')
      return cb(null, { success: true })
    }, (err) => failed(err))
  }

  /**
   * Start or restart the agent depending on whether it is online.
   * @param {Object} conf constants
   * @param {Object} infos configuration (getOrSetConf's result)
   * @param {Function} cb (err, msg, child)
   */
  static launchOrAttach (conf, infos, cb) {
    this.ping(conf, (err, online) => {
      if (!err && online) {
        const home = pathsOf(conf).PM2_HOME
        // Which agent this is, decided now: by the time the kill is sent
        // it may be gone, and its /proc entry with it.
        const holder = lockHolder(home)
        const ours = Boolean(holder && isOurAgent(holder.pid))
        return attachToFresh(conf, infos, holder, (msg) => {
          if (msg) {
            log('Interactor just started by a concurrent launch, attached to it')
            return reportOutcome(msg, undefined, cb)
          }
          log('Interactor online, restarting it...')
          this.launchRPC(conf, (err) => {
            if (err || typeof this.rpc.kill !== 'function') return this.daemonize(conf, infos, cb)
            // One of ours is killed only if it is still the one we found
            // (`kill(pid)`): not an agent a concurrent launch just started.
            // A JS agent's `kill(cb)` would take the pid for its callback:
            // it gets no argument, unless one of ours took the lock since
            // (then there is nothing to kill: the new daemon attaches).
            if (!ours) {
              const now = lockHolder(home)
              if (now && isOurAgent(now.pid)) return this.daemonize(conf, infos, cb)
            }
            this.rpc.kill(...(ours ? [holder.pid] : []), (ignoredErr) => {
              this.daemonize(conf, infos, cb)
            })
          })
        })
      } else {
        log('Interactor offline, launching it...')
        this.daemonize(conf, infos, cb)
      }
    })
  }

  /**
   * Restart the agent (kill it, then launchAndInteract with the stored
   * configuration).
   * @param {Object} conf constants
   * @param {Function} [cb] (err, {msg: 'Daemon launched'})
   */
  static update (conf, cb) {
    this.ping(conf, (err, online) => {
      if (err || !online) {
        return cb ? cb(new Error('Interactor not launched')) : printError('Interactor not launched')
      }
      this.launchRPC(conf, (err) => {
        if (err || typeof this.rpc.kill !== 'function') {
          err = new Error('Interactor not launched')
          return cb ? cb(err) : printError(err)
        }
        this.rpc.kill((err) => {
          if (err) {
            return cb ? cb(err) : printError(err)
          }
          printOut('Interactor successfully killed')
          setTimeout(() => {
            this.launchAndInteract(conf, {}, () => {
              return cb ? cb(null, { msg: 'Daemon launched' }) : false
            })
          }, 500)
        })
      })
    })
  }

  /**
   * Resolve the configuration (env > infos > agent.json5), store it in
   * agent.json5 (mode 0600) and return it.
   * @param {Object} cst constants (INTERACTION_CONF, KEYMETRICS_ROOT_URL)
   * @param {Object} [infos] public_key, secret_key, machine_name, pm2_version, info_node…
   * @param {Function} cb (err, configuration)
   */
  static getOrSetConf (cst, infos, cb) {
    infos = infos || {}
    const paths = pathsOf(cst)
    const env = process.env
    const configuration = {
      version_management: {
        active: true
      }
    }

    const confFS = readConfFile(paths.INTERACTION_CONF)
    if (confFS.version_management) {
      configuration.version_management.active = confFS.version_management.active
    }

    // first defined wins: env, then params (CLI), then agent.json5
    configuration.public_key = env.PM2_PUBLIC_KEY || env.KEYMETRICS_PUBLIC || infos.public_key || confFS.public_key
    configuration.secret_key = env.PM2_SECRET_KEY || env.KEYMETRICS_SECRET || infos.secret_key || confFS.secret_key
    configuration.machine_name = env.PM2_MACHINE_NAME || env.INSTANCE_NAME || infos.machine_name || confFS.machine_name ||
      `${os.hostname()}-${crypto.randomBytes(2).toString('hex')}`
    configuration.pm2_version = env.PM2_VERSION || infos.pm2_version || confFS.pm2_version
    configuration.reverse_interact = confFS.reverse_interact || true
    configuration.info_node = env.KEYMETRICS_NODE || infos.info_node || confFS.info_node || paths.KEYMETRICS_ROOT_URL
    // 1.0.8 kept these two; they are carried (to the daemon's env) only when set.
    const transportWs = env.AGENT_TRANSPORT_WEBSOCKET || infos.agent_transport_websocket || confFS.agent_transport_websocket
    const transportAxon = env.AGENT_TRANSPORT_AXON || infos.agent_transport_axon || confFS.agent_transport_axon
    if (transportWs !== undefined) configuration.agent_transport_websocket = transportWs
    if (transportAxon !== undefined) configuration.agent_transport_axon = transportAxon

    if (!configuration.secret_key) {
      log('Secret key is not defined in configuration')
      return cb(new Error('secret key is not defined'))
    }
    if (!configuration.public_key) {
      log('Public key is not defined in configuration')
      return cb(new Error('public key is not defined'))
    }

    try {
      writeConfFile(paths.INTERACTION_CONF, JSON.stringify(configuration, null, 4))
    } catch (e) {
      console.error('Error when writting configuration file %s', paths.INTERACTION_CONF)
      return cb(e)
    }
    if (String(configuration.info_node).indexOf('http') === -1) { // handle old file
      configuration.info_node = `https://${configuration.info_node}`
    }
    return cb(null, configuration)
  }

  /**
   * Forget the RPC client set up by launchRPC.
   * @param {Function} cb (err, {success, msg?})
   */
  static disconnectRPC (cb) {
    log('Disconnect RPC')
    cb = once(cb)
    const sock = this.client_sock
    if (!sock || !sock.close) {
      log('RPC not launched')
      return cb(null, {
        success: false,
        msg: 'RPC connection to Interactor Daemon is not launched'
      })
    }

    if (sock.closing === true) {
      log('RPC already closed')
      return cb(null, {
        success: false,
        msg: 'RPC closed'
      })
    }

    try {
      let timer = null
      sock.once('close', () => {
        log('RPC INTERACTOR cleanly closed')
        clearTimeout(timer)
        return cb(null, { success: true })
      })
      timer = setTimeout(() => {
        if (sock.destroy) sock.destroy()
        return cb(null, { success: true })
      }, 200)
      sock.close()
    } catch (err) {
      log('Error while closing RPC INTERACTOR : %s', err.message || err)
      return cb(err)
    }
  }

  /**
   * Main entry: resolve the configuration and start (or restart) the agent.
   * @param {Object} cst constants (PM2's, or {})
   * @param {Object} [opts] public_key, secret_key, machine_name, pm2_version, info_node
   * @param {Function} cb (err, msg, child) — see the .d.ts for every shape
   */
  static launchAndInteract (cst, opts, cb) {
    if (typeof cb !== 'function') cb = noop
    // An agent (its watchdog running `pm2 resurrect`) must not start another one.
    if (process.env.PM2_AGENT_ONLINE) {
      return cb()
    }

    process.env.PM2_INTERACTOR_PROCESSING = 'true'

    if (!cst || typeof cst !== 'object') cst = {}
    const agentCst = constants.forHome(cst.PM2_HOME)
    const conf = Object.assign({}, cst, agentCst)
    // Keep the JS contract that the caller's object ends up with the agent's
    // constants, without overwriting what the caller already has.
    for (const key of Object.keys(agentCst)) {
      if (cst[key] === undefined) cst[key] = agentCst[key]
    }

    this.getOrSetConf(conf, opts, (err, infos) => {
      if (err || !infos) return cb(err || new Error('Cant retrieve configuration'))

      if (!process.env.PM2_SILENT) {
        console.log(chalk.cyan('[PM2 I/O]') + ' Using: Public key: %s | Private key: %s | Machine name: %s',
          infos.public_key, maskSecret(infos.secret_key), infos.machine_name)
      }
      return this.launchOrAttach(conf, infos, cb)
    })
  }

  /**
   * What the running agent reports about itself (RPC getInfos).
   * @param {Object} cst constants (INTERACTOR_RPC_PORT)
   * @param {Function} cb (err, infos)
   */
  static getInteractInfo (cst, cb) {
    log('Getting interaction info')
    if (process.env.PM2_NO_INTERACTION) return cb(new Error('PM2_NO_INTERACTION set'))

    this.ping(cst, (err, online) => {
      if (err || !online) return cb(new Error('Interactor is offline'))

      this.launchRPC(cst, (err) => {
        if (err || typeof this.rpc.getInfos !== 'function') return cb(new Error('Interactor is offline'))
        this.rpc.getInfos((err, infos) => {
          if (err) return cb(err)

          // Avoid general CLI to interfere with Keymetrics CLI commands
          if (process.env.PM2_INTERACTOR_PROCESSING) return cb(null, infos)

          this.disconnectRPC(() => {
            return cb(null, infos)
          })
        })
      })
    })
  }

  /**
   * Spawn the agent and wait (7 s at most) for its first IPC message.
   * @param {Object} cst constants (PM2_HOME, INTERACTOR_PID_PATH, INTERACTOR_LOG_FILE_PATH)
   * @param {Object} conf configuration (getOrSetConf's result)
   * @param {Function} cb (err, msg, child) — called once
   */
  static daemonize (cst, conf, cb) {
    cst = cst || {}
    conf = conf || {}
    cb = once(cb)
    const paths = pathsOf(cst)
    const script = this._daemonScript || path.join(__dirname, 'InteractorDaemon.js')
    // The native daemon when asked for (a test's _daemonScript wins). A
    // missing binary is an error, never a silent fallback to Node.
    let native = null
    if (!this._daemonScript && nativeDaemon.nativeRequested(process.env)) {
      const found = nativeDaemon.resolveDaemonBinary()
      if (!found.path) {
        return cb(new Error(`PM2_AGENT_NATIVE=true but the native agent daemon is missing (looked for ${found.tried.join(', ')}); ` +
          'build it with `npm run build` (or `node scripts/build-daemon.js`), or unset PM2_AGENT_NATIVE to run the agent on Node'))
      }
      native = found.path
    }
    const PM2Path = require.main && require.main.filename

    // Test runs (Travis, NODE_ENV=*test*) keep the agent's output on this
    // process's stdout/stderr; otherwise it is appended to agent.log.
    const testEnv = process.env.TRAVIS || (process.env.NODE_ENV && process.env.NODE_ENV.match(/test/))
    let logFd = null
    if (!testEnv) {
      try {
        logFd = fs.openSync(paths.INTERACTOR_LOG_FILE_PATH, 'a', 0o600)
        try {
          fs.fchmodSync(logFd, 0o600)
        } catch (e) {}
      } catch (e) {
        return cb(e)
      }
    }
    const out = testEnv ? 1 : logFd
    const err = testEnv ? 2 : logFd

    let binary = process.execPath
    if (paths.IS_BUN === true) binary = process.execPath
    else if (binary.indexOf('node') === -1) binary = 'node'
    if (process.env.NODEJS_EXECUTABLE) binary = process.env.NODEJS_EXECUTABLE

    const defaults = {
      PM2_HOME: paths.PM2_HOME,
      PM2_MACHINE_NAME: conf.machine_name,
      PM2_SECRET_KEY: conf.secret_key,
      PM2_PUBLIC_KEY: conf.public_key,
      PM2_REVERSE_INTERACT: conf.reverse_interact,
      PM2_BINARY_PATH: PM2Path,
      KEYMETRICS_NODE: conf.info_node,
      PM2_VERSION: conf.pm2_version,
      DEBUG: process.env.DEBUG || DEFAULT_DEBUG
    }
    if (conf.agent_transport_axon !== undefined) defaults.AGENT_TRANSPORT_AXON = conf.agent_transport_axon
    if (conf.agent_transport_websocket !== undefined) defaults.AGENT_TRANSPORT_WEBSOCKET = conf.agent_transport_websocket
    for (const k of Object.keys(defaults)) {
      if (defaults[k] === undefined || defaults[k] === null) delete defaults[k]
    }

    // PM2_AGENT_NATIVE=true: the daemon binary (no Node in the agent), told
    // by environment what Node would have known (see src/host/facts.rs).
    // These are facts about this launcher, so they override whatever the
    // environment inherited (e.g. from an earlier native agent's children).
    let command = binary
    let args = [script]
    let argv0
    const facts = {}
    if (native) {
      command = native
      args = []
      argv0 = `PM2 Agent v${pkg.version} [native]: (${paths.PM2_HOME})`
      facts.PM2_AGENT_NODE_VERSION = process.version
      facts.PM2_AGENT_NODE_PATH = binary
      facts.PM2_AGENT_CONFIG_FILE = path.join(nativeDaemon.ROOT, 'config.json')
    }

    // Read before the spawn: the new daemon writes its own pid there once it
    // holds agent.lock.
    const prevPid = readPidFile(paths.INTERACTOR_PID_PATH)
    let child
    try {
      child = childProcess.spawn(command, args, {
        argv0,
        detached: true,
        windowsHide: true,
        cwd: process.cwd(),
        env: Object.assign(defaults, process.env, facts),
        stdio: ['ignore', out, err, 'ipc']
      })
    } catch (e) {
      return cb(e)
    } finally {
      // The child holds its own copy of the log descriptor.
      if (logFd !== null) {
        try {
          fs.closeSync(logFd)
        } catch (e) {}
      }
    }

    killPreviousAgent(prevPid, paths.INTERACTOR_PID_PATH, child.pid)

    let timeout = null
    const disconnect = () => {
      if (child.connected) {
        try {
          child.disconnect()
        } catch (e) {}
      }
    }

    child.on('close', (status) => {
      clearTimeout(timeout)
      if (status === constants.ERROR_EXIT) {
        return cb(new Error('Agent has shutdown for unknown reason'))
      }
      return cb()
    })

    child.once('error', (err) => {
      clearTimeout(timeout)
      log('Error when launching Interactor, please check the agent logs')
      return cb(err)
    })

    if (paths.IS_BUN === true) {
      return cb(null, {}, child)
    }

    child.unref()

    timeout = setTimeout(() => {
      printOut(`${chalk.yellow('[PM2.IO][WARNING]')} Not managed to connect to PM2 Plus, retrying in background.`)
      child.removeAllListeners()
      child.on('error', noop)
      disconnect()
      return cb(null, {}, child)
    }, DAEMON_ANSWER_TIMEOUT_MS)

    child.once('message', (msg) => {
      clearTimeout(timeout)
      log('Interactor daemon launched')
      msg = msg && typeof msg === 'object' ? msg : {}

      if (msg.log) {
        return cb(null, msg, child)
      }

      child.removeAllListeners('error')
      child.on('error', noop)
      disconnect()

      return reportOutcome(msg, child, cb)
    })
  }
}

/**
 * The launch callback for an agent's IPC message (the JS daemonize's
 * checks and console lines): `cb(msg)` for a refusal or a give-up,
 * `cb(null, msg, child)` otherwise.
 */
function reportOutcome (msg, child, cb) {
  const km = msg.km_data && typeof msg.km_data === 'object' ? msg.km_data : null
  if (km && km.error === true) {
    if (!process.env.PM2_SILENT) {
      console.log(chalk.red('[PM2.IO][ERROR]'), km.msg)
      console.log(chalk.cyan('[PM2.IO]') + ' Contact support contact@keymetrics.io and send us the error message')
    }
    return cb(msg)
  } else if (km && km.disabled === true) {
    if (!process.env.PM2_SILENT) {
      console.log(chalk.cyan('[PM2.IO]') + ' Server DISABLED BY ADMINISTRATION contact support contact@keymetrics.io with reference to your public and secret keys)')
    }
    return cb(msg)
  } else if (km && km.active === false && km.pending === true) {
    if (!process.env.PM2_SILENT) {
      console.log('%s You must upgrade your bucket in order to monitor more servers.', chalk.red('[PM2.IO]'))
    }
    return cb(msg)
  } else if (!km && msg.error === true) {
    // The agent gave up reaching the backend (it exits right after).
    if (!process.env.PM2_SILENT) {
      console.log(chalk.red('[PM2.IO][ERROR]'), msg.msg)
      console.log(chalk.cyan('[PM2.IO]') + ' Contact support contact@keymetrics.io and send us the error message')
    }
    return cb(msg)
  }

  return cb(null, msg, child)
}

// Exposed for tests and for the daemon's own use; not part of the JS API.
Object.defineProperty(module.exports, '_maskSecret', { value: maskSecret, enumerable: false })
