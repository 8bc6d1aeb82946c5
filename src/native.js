'use strict'
// Loads the native addon (index.js, napi's generated loader: the
// `interactor.<platform>.node` next to it, else the platform package
// `@keymetrics-agent/interactor-<platform>`), turning "nothing for this
// platform" into one error a user can act on instead of napi's list of
// every attempt.

const { platformSuffix } = require('./nativeDaemon')
const { napi } = require('../package.json')

let binding = null

/** The addon's exports; throws a clear Error when this platform has no binary. */
function load () {
  if (binding) return binding
  try {
    binding = require('../index.js')
  } catch (e) {
    if (!/Cannot find native binding/.test(e.message)) throw e
    const platform = platformSuffix()
    const err = new Error(
      `keymetrics-agent: no prebuilt binary for ${platform} (looked for the package ${napi.packageName}-${platform} ` +
      `and interactor.${platform}.node in ${require('path').join(__dirname, '..')}). ` +
      'Reinstall so npm fetches the optional platform package (it is skipped with --no-optional or --omit=optional), ' +
      'or build from source: install Rust >= 1.89 (https://rustup.rs), then run `npm run build` in the keymetrics-agent directory.')
    err.code = 'KM_NO_NATIVE_BINARY'
    // napi's loader error (every path it tried) stays reachable for a
    // debugger, but out of what pm2 prints: not enumerable, not `cause`.
    Object.defineProperty(err, 'loaderError', { value: e, enumerable: false })
    throw err
  }
  return binding
}

module.exports = { load }
