'use strict'
// verifyPM2 is asked again periodically (PM2_AGENT_REVERIFY_INTERVAL, 60 s by
// default); when PM2.io hands out other endpoints, the transporters move to
// them, never keeping two connections.

const test = require('node:test')
const assert = require('node:assert/strict')
const { Backend } = require('./helpers/backend')
const { tmpHome, waitUntil } = require('./helpers/pm2')

const home = tmpHome('ka-reverify-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_REVERIFY_INTERVAL = '700'
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')

test('changed endpoints on re-verification move the WebSocket to the new backend', async (t) => {
  const first = await new Backend().start()
  const second = await new Backend().start()
  t.after(async () => {
    await new Promise((resolve) => InteractorClient.killInteractorDaemon(constants, () => resolve()))
    await first.stop()
    await second.stop()
  })
  const keys = { secret_key: 'rv-secret', public_key: 'rv-pub', machine_name: 'rv-machine', info_node: first.url }
  await new Promise((resolve, reject) => InteractorClient.launchAndInteract({}, keys, (err, msg) => err ? reject(new Error(String(err.message || JSON.stringify(err)))) : resolve(msg)))
  await first.waitConnected()
  const before = first.verifyRequests.length
  await waitUntil(() => first.verifyRequests.length >= before + 2, 20000, 100, 're-verifications')

  first.verify = () => first.activeAnswer({ endpoints: { web: 'http://127.0.0.1/web', ws: second.wsUrl } })
  await second.waitConnected(20000)
  await waitUntil(() => first.sockets.size === 0, 20000, 100, 'the old connection to close')
  const info = await new Promise((resolve) => InteractorClient.getInteractInfo(constants, (err, i) => resolve(i)))
  assert.equal(info.connected, true)
  assert.deepEqual(info.transporters, ['WebsocketTransport'])
  assert.equal(second.wsHandshakes.length, 1, 'one connection to the new endpoint')
})
