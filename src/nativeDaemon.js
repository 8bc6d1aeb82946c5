'use strict'
// Where the native daemon binary (`keymetrics-agent-daemon`, built from
// src/bin/ without Node) lives, and whether the launcher should use it.
//
// One place resolves it, mirroring how index.js finds the .node file:
//  1. the package root: `keymetrics-agent-daemon.<platform>` next to
//     `interactor.<platform>.node` (what `npm run build` produces);
//  2. the platform package `@keymetrics-agent/interactor-<platform>`, same
//     file name.
// `<platform>` is napi's suffix: linux-x64-gnu, linux-arm64-musl,
// darwin-arm64, win32-x64-msvc, ...

const fs = require('fs')
const path = require('path')

const DAEMON_NAME = 'keymetrics-agent-daemon'
const ROOT = path.join(__dirname, '..')

/** Whether `env` asks for the native daemon (`PM2_AGENT_NATIVE=true`). */
function nativeRequested (env) {
  return String((env || process.env).PM2_AGENT_NATIVE || '').toLowerCase() === 'true'
}

function isMusl () {
  if (process.platform !== 'linux') return false
  try {
    if (fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')) return true
  } catch (e) {}
  try {
    const report = process.report && process.report.getReport && process.report.getReport()
    return Boolean(report && report.header && !report.header.glibcVersionRuntime)
  } catch (e) {
    return false
  }
}

/** napi's platform suffix of this process (e.g. `linux-x64-gnu`). */
function platformSuffix () {
  const base = `${process.platform}-${process.arch}`
  if (process.platform === 'linux') return `${base}-${isMusl() ? 'musl' : 'gnu'}`
  if (process.platform === 'win32') return `${base}-msvc`
  return base
}

/** The binary's file name for a platform suffix. */
function daemonFileName (suffix) {
  return `${DAEMON_NAME}.${suffix || platformSuffix()}${process.platform === 'win32' ? '.exe' : ''}`
}

/**
 * Finds the native daemon binary.
 * @returns {{ path: string | null, tried: string[] }} `path` is null when
 *   none of the `tried` locations holds an executable file.
 */
function resolveDaemonBinary () {
  const suffix = platformSuffix()
  const name = daemonFileName(suffix)
  const tried = [path.join(ROOT, name)]
  try {
    const pkgJson = require.resolve(`@keymetrics-agent/interactor-${suffix}/package.json`)
    tried.push(path.join(path.dirname(pkgJson), name))
  } catch (e) {}
  for (const candidate of tried) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      if (fs.statSync(candidate).isFile()) return { path: candidate, tried }
    } catch (e) {}
  }
  return { path: null, tried }
}

module.exports = { DAEMON_NAME, ROOT, nativeRequested, platformSuffix, daemonFileName, resolveDaemonBinary }
