'use strict'
// Black-box: the first status goes out as soon as a transporter carries, not
// at the next status interval — at launch and again after an outage. The
// status interval is set to 10 minutes here, so a status that arrives at all
// within the test was sent because the link came up (the launch's first
// interval tick finds PM2 not yet asked, and the reconnect is mid-interval).

const test = require('node:test')
const assert = require('node:assert/strict')
const { tmpHome } = require('./helpers/pm2')

const home = tmpHome('ka-first-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_STATUS_INTERVAL = String(10 * 60 * 1000)
const { launchAgent, idleStage } = require('./helpers/agent')

const KEYS = { secret_key: 'secret-first', public_key: 'pub-first', machine_name: 'first-machine' }
let backend
let stage

const hasApp = (m) => m.channel === 'status' && Array.isArray(m.payload.data.process) &&
  m.payload.data.process.some((p) => p.name === 'idle')

test.before(async () => {
  stage = await idleStage(home)
  backend = stage.backend
})

test.after(() => stage.teardown())

test('a status listing the app arrives right after the launch, not an interval later', async () => {
  await launchAgent(backend, KEYS)
  await backend.waitFor(hasApp, 15000, 'a status with the app after launch')
})

test('after an outage, the reconnected link carries a fresh status at once', async () => {
  backend.outage(true)
  await new Promise((resolve) => setTimeout(resolve, 500))
  const before = backend.received.length
  backend.outage(false)
  await backend.waitConnected(30000)
  await backend.waitFor((m) => backend.received.indexOf(m) >= before && hasApp(m), 15000,
    'a status with the app after the reconnection')
  assert.ok(backend.statuses.length >= 2)
})
