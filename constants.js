/**
 * Agent constants (drop-in for @pm2/agent's constants.js).
 *
 * `require('keymetrics-agent/constants')` is the constants object for the
 * PM2_HOME of the environment (env PM2_HOME, else os.homedir()/.pm2), exactly
 * like the JS agent. Differences from the JS agent, on purpose:
 *  - `PM2_<KEY>` environment overrides are parsed to the type of the default
 *    (numbers stay numbers, booleans stay booleans; an unparseable value is
 *    ignored) instead of being stored as raw strings.
 *  - `PM2_DEBUG=false` / `0` means "not debug" (the JS agent took any
 *    non-empty string as true).
 *  - `forHome(pm2Home)` rebuilds the whole set for another PM2_HOME (PM2 can
 *    run with a custom `pm2_home`); it never touches the exported object.
 *
 * The helpers (`build`, `forHome`, `resolvePM2Home`) are non-enumerable, so
 * `Object.assign(target, constants)` / `Object.keys(constants)` only see the
 * constants, as with the JS agent.
 */

'use strict'

const path = require('path')
const os = require('os')
const crypto = require('crypto')

const DEFAULT_ROOT_URL = 'https://root.keymetrics.io'

// One id per process start, shared by every rebuilt set (`server.unique_id`).
const UNIQUE_SERVER_ID = crypto.randomUUID()

// Keys never overridden from PM2_<KEY> (same exemptions as the JS agent,
// plus IS_BUN, which is a fact about the runtime).
const NO_ENV_OVERRIDE = new Set(['PM2_HOME', 'PM2_ROOT_PATH', 'IS_BUN'])

/**
 * PM2_HOME as the agent resolves it: env PM2_HOME, else `~/.pm2`.
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {string}
 */
function resolvePM2Home (env) {
  env = env || process.env
  if (env.PM2_HOME) return path.resolve(env.PM2_HOME)
  return path.resolve(os.homedir(), '.pm2')
}

/**
 * 'true'/'1'/'yes'/'on' → true, 'false'/'0'/'no'/'off'/'' → false, else undefined.
 * @param {string} value
 */
function parseBool (value) {
  const v = String(value).trim().toLowerCase()
  if (v === 'true' || v === '1' || v === 'yes' || v === 'on') return true
  if (v === 'false' || v === '0' || v === 'no' || v === 'off' || v === '') return false
  return undefined
}

/**
 * Like the JS agent's `useIfDefined`: the env flag when it is set, else the
 * fallback.
 */
function useIfDefined (value, fallback) {
  if (typeof value === 'undefined') return fallback
  return parseBool(value) === true
}

/**
 * An env override converted to the type of the default value; `undefined`
 * when it cannot be converted (the default is then kept).
 */
function convert (key, raw, current) {
  if (key === 'DEBUG') {
    // PM2_DEBUG: anything but an explicit "false" value turns debug on.
    const b = parseBool(raw)
    return b === undefined ? true : b
  }
  if (typeof current === 'number') {
    const s = String(raw).trim()
    if (s === '') return undefined
    const n = Number(s)
    return Number.isFinite(n) ? n : undefined
  }
  if (typeof current === 'boolean') return parseBool(raw)
  return raw
}

/**
 * Builds a fresh constants object.
 * @param {object} [opts]
 * @param {string} [opts.pm2Home] PM2_HOME to use (default: resolvePM2Home(env))
 * @param {NodeJS.ProcessEnv} [opts.env] environment to read (default: process.env)
 * @param {string} [opts.platform] platform (default: process.platform)
 */
function build (opts) {
  opts = opts || {}
  const env = opts.env || process.env
  const platform = opts.platform || process.platform
  const PM2_HOME = opts.pm2Home ? path.resolve(String(opts.pm2Home)) : resolvePM2Home(env)

  const debugFlag = env.PM2_DEBUG
  const nodeEnv = env.NODE_ENV

  const cst = {
    DEBUG: debugFlag ? convert('DEBUG', debugFlag) : false,
    KEYMETRICS_ROOT_URL: env.KEYMETRICS_NODE || DEFAULT_ROOT_URL,

    PROTOCOL_VERSION: 1,
    COMPRESS_PROTOCOL: false,
    STATUS_INTERVAL: 1000,
    PACKET_QUEUE_SIZE: 200,
    PROXY: env.PM2_PROXY,

    LOGS_BUFFER: 8,
    CONTEXT_ON_ERROR: 4,
    TRANSACTION_FLUSH_INTERVAL: useIfDefined(debugFlag, nodeEnv === 'local_test') ? 1000 : 30000,
    AGGREGATION_DURATION: useIfDefined(debugFlag, nodeEnv === 'test' || nodeEnv === 'development') ? 0 : 60 * 10,
    TRACE_FLUSH_INTERVAL: useIfDefined(debugFlag, nodeEnv === 'local_test') ? 1000 : 30000, // the daemon's axm:transaction flush (issue: 30 s)

    IS_BUN: typeof Bun !== 'undefined', // eslint-disable-line no-undef
    PM2_HOME,
    DAEMON_RPC_PORT: path.resolve(PM2_HOME, 'rpc.sock'),
    DAEMON_PUB_PORT: path.resolve(PM2_HOME, 'pub.sock'),
    INTERACTOR_RPC_PORT: path.resolve(PM2_HOME, 'interactor.sock'),
    INTERACTOR_LOG_FILE_PATH: path.resolve(PM2_HOME, 'agent.log'),
    INTERACTOR_PID_PATH: path.resolve(PM2_HOME, 'agent.pid'),
    INTERACTION_CONF: path.resolve(PM2_HOME, 'agent.json5'),

    DUMP_FILE_PATH: path.resolve(PM2_HOME, 'dump.pm2'),

    UNIQUE_SERVER_ID,

    ENABLE_CONTEXT_ON_ERROR: useIfDefined(env.PM2_AGENT_ENABLE_CONTEXT_ON_ERROR, true),

    SUCCESS_EXIT: 0,
    ERROR_EXIT: 1
  }

  // PM2_<KEY> overrides (keys already starting with PM2_ use their own name).
  for (const key of Object.keys(cst)) {
    if (NO_ENV_OVERRIDE.has(key)) continue
    const envKey = key.indexOf('PM2_') > -1 ? key : 'PM2_' + key
    const raw = env[envKey]
    if (!raw) continue
    const value = convert(key, raw, cst[key])
    if (value !== undefined) cst[key] = value
  }

  if (platform === 'win32') {
    cst.DAEMON_RPC_PORT = '\\\\.\\pipe\\rpc.sock'
    cst.DAEMON_PUB_PORT = '\\\\.\\pipe\\pub.sock'
    cst.INTERACTOR_RPC_PORT = '\\\\.\\pipe\\interactor.sock'
  }

  return attachHelpers(cst)
}

/**
 * The constants for another PM2_HOME (same environment otherwise).
 * @param {string} [pm2Home]
 */
function forHome (pm2Home) {
  return build({ pm2Home })
}

function attachHelpers (cst) {
  for (const [name, fn] of Object.entries({ build, forHome, resolvePM2Home })) {
    Object.defineProperty(cst, name, { value: fn, enumerable: false, writable: true, configurable: true })
  }
  return cst
}

module.exports = build()
