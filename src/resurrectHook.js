'use strict'
// Preloaded (`node --require`) into the `pm2 resurrect` that the agent's
// watchdog runs when PM2 went away (src/daemon/watchdog.rs).
//
// That CLI must see PM2_AGENT_ONLINE: once it has spawned the PM2 daemon it
// calls `launchAndInteract`, which returns at once on this variable instead
// of replacing the running agent (and printing its keys). But the PM2
// daemon copies the CLI's environment, and every app it later starts in
// cluster mode copies the daemon's: the marker must stop at this process.
// So every child this process spawns gets its environment without it.
//
// (The keys and the agent's other variables never reach this process: the
// watchdog removes them before spawning it, see src/common/child_env.rs.)

const childProcess = require('child_process')

const MARKER = 'PM2_AGENT_ONLINE'

/** `options` with an `env` copy (the given one, else ours) lacking the marker. */
function withoutMarker (options) {
  const env = Object.assign({}, (options && options.env) || process.env)
  delete env[MARKER]
  return Object.assign({}, options, { env })
}

/** `(file, [args], [options])` → `[file, args, options]` with the marker removed. */
function normalise (file, args, options) {
  if (!Array.isArray(args)) {
    if (args !== undefined && args !== null && typeof args === 'object') options = args
    args = []
  }
  return [file, args, withoutMarker(options)]
}

const { spawn, fork } = childProcess
childProcess.spawn = function (file, args, options) {
  return spawn.apply(this, normalise(file, args, options))
}
childProcess.fork = function (modulePath, args, options) {
  return fork.apply(this, normalise(modulePath, args, options))
}
