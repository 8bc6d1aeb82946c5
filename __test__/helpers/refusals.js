'use strict'
// Remote PM2 actions that are refused or fail, and what the agent must answer
// on `trigger:pm2:result`: the JS agent's shape (`ret.err` an object) with
// the reason filled in, `{message, code}`. Used by the black-box tests of
// each transporter (the reply path is shared, the wire is not).

const assert = require('node:assert/strict')

/** `app`: a running app's name. */
function refusalCases (app) {
  return [
    { method: 'delete', parameters: { name: app }, code: 'METHOD_NOT_ALLOWED', message: /^Method not allowed: "delete" is not a remote PM2 action \(allowed: restart, reload, reset, scale, startLogging, stopLogging, ping\)$/ },
    { method: 'kill', parameters: {}, code: 'METHOD_NOT_ALLOWED', message: /^Method not allowed: "kill"/ },
    { method: '__proto__', parameters: {}, code: 'METHOD_NOT_ALLOWED', message: /^Method not allowed: "__proto__"/ },
    { method: 'noSuchMethod', parameters: {}, code: 'METHOD_NOT_ALLOWED', message: /^Method not allowed: "noSuchMethod"/ },
    { method: 'deepUpdate', parameters: {}, code: 'DEPRECATED_METHOD', message: /^Deprecated or invalid method: "deepUpdate" is no longer supported$/ },
    { method: 'reload', parameters: {}, code: 'NO_TARGET', message: /^parameters have neither id nor name$/ },
    { method: 'scale', parameters: { name: app, number: 'lots' }, code: 'INVALID_SCALE_NUMBER', message: /^invalid scale number "lots"/ },
    { method: 'scale', parameters: { name: 'no-such-app', number: 2 }, code: 'APP_NOT_FOUND', message: /^App not found: no process is named "no-such-app"$/ },
    // Refused by PM2 itself: its own message is passed on.
    { method: 'reset', parameters: { id: 4242 }, code: 'PM2_ERROR', message: /^4242 id unknown$/ }
  ]
}

/**
 * Sends each case through `backend.send` and checks its reply. `backend` is
 * a WebSocket (helpers/backend.js) or Axon (helpers/axon-backend.js) stand-in.
 */
async function assertRefusalsSayWhy (backend, app) {
  for (const c of refusalCases(app)) {
    const before = new Set(backend.received)
    backend.send('trigger:pm2:action', { method_name: c.method, parameters: c.parameters })
    const res = await backend.waitFor((p) => p.channel === 'trigger:pm2:result' && !before.has(p) &&
      p.payload.meta && p.payload.meta.method_name === c.method, 20000, `the reply to ${c.method}`)
    const err = res.payload.ret.err
    assert.equal(typeof err, 'object', `${c.method}: err stays an object, as the JS agent's Error`)
    assert.equal(err.code, c.code, `${c.method}: ${JSON.stringify(err)}`)
    assert.match(err.message, c.message, c.method)
    assert.deepEqual(Object.keys(err), ['message', 'code'])
    assert.equal(res.payload.ret.data, undefined)
  }
}

module.exports = { refusalCases, assertRefusalsSayWhy }
