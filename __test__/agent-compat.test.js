'use strict'
// Cross-compatibility with the JS agent: @pm2/agent's own InteractorClient
// (what PM2 7 vendors: 2.1.1, and the older 1.0.8) pings, queries and kills
// our daemon; our client replaces a running JS daemon.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const { Backend } = require('./helpers/backend')
const { tmpHome, waitUntil } = require('./helpers/pm2')

const home = tmpHome('ka-compat-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
const ours = require('../src/InteractorClient')
const constants = require('../constants')
const js2 = require('pm2-agent-2/src/InteractorClient')
const js2Constants = require('pm2-agent-2/constants')
const js1 = require('pm2-agent-1/src/InteractorClient')

const KEYS = { secret_key: 'compat-secret', public_key: 'compat-pub', machine_name: 'compat-machine' }
let backend

const alive = (pid) => { try { process.kill(pid, 0); return true } catch (e) { return false } }
const call = (fn, ...args) => new Promise((resolve) => fn(...args, (err, res) => resolve({ err, res })))

function launchOurs () {
  return new Promise((resolve, reject) => {
    ours.launchAndInteract({}, Object.assign({ info_node: backend.url }, KEYS), (err, msg) => {
      if (err) return reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
      resolve(msg)
    })
  })
}

test.before(async () => {
  backend = await new Backend().start()
})

test.after(async () => {
  await call(ours.killInteractorDaemon.bind(ours), constants)
  // Anything left (a JS daemon from a failed test) is killed through its pid file.
  try { process.kill(parseInt(fs.readFileSync(constants.INTERACTOR_PID_PATH, 'utf8')), 'SIGKILL') } catch (e) {}
  await backend.stop()
})

test("@pm2/agent 2.1.1's client pings, queries and kills our daemon", async () => {
  const msg = await launchOurs()
  await backend.waitConnected()
  const ping = await call(js2.ping.bind(js2), js2Constants)
  assert.deepEqual(ping, { err: null, res: true })

  // Poll with our client: each JS getInteractInfo opens an RPC socket that
  // it never closes while PM2_INTERACTOR_PROCESSING is set (a JS accident).
  await waitUntil(async () => (await call(ours.getInteractInfo.bind(ours), constants)).res, 10000, 200, 'getInfos')
  const { err, res } = await call(js2.getInteractInfo.bind(js2), js2Constants)
  assert.equal(err, null)
  assert.equal(res.machine_name, KEYS.machine_name)
  assert.equal(res.public_key, KEYS.public_key)
  assert.equal(res.connected, true)
  assert.deepEqual(res.transporters, ['WebsocketTransport'])
  assert.equal(res.socket_path, constants.INTERACTOR_RPC_PORT)
  assert.equal(res.pm2_home_monitored, home)
  assert.equal(res.remote_host, 'http://127.0.0.1/web')
  await call(js2.disconnectRPC.bind(js2))

  const kill = await call(js2.killInteractorDaemon.bind(js2), js2Constants)
  assert.equal(kill.err, null)
  await waitUntil(() => !alive(msg.pid), 10000, 100, 'our daemon to exit')
  assert.equal(fs.existsSync(constants.INTERACTOR_RPC_PORT), false)
  const again = await call(js2.ping.bind(js2), js2Constants)
  assert.deepEqual(again, { err: null, res: false })
})

test("@pm2/agent 1.0.8's client pings and kills our daemon", async () => {
  const msg = await launchOurs()
  const ping = await call(js1.ping.bind(js1), constants)
  assert.deepEqual(ping, { err: null, res: true })
  const kill = await call(js1.killInteractorDaemon.bind(js1), constants)
  assert.equal(kill.err, null)
  await waitUntil(() => !alive(msg.pid), 10000, 100, 'our daemon to exit')
})

test('our client replaces a running JS daemon (launchOrAttach kills it first)', async () => {
  // Start the real JS agent (2.1.1) the way PM2 7 does.
  const jsMsg = await new Promise((resolve, reject) => {
    js2.launchAndInteract(js2Constants, Object.assign({ info_node: backend.url }, KEYS), (err, m) => {
      if (err) return reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
      resolve(m)
    })
  })
  assert.ok(jsMsg && jsMsg.pid, 'the JS agent reported in')
  const jsPid = jsMsg.pid
  await waitUntil(() => backend.wsHandshakes.some((h) => h.headers['user-agent'] === 'PM2 Agent v2.1.1'), 15000, 100, 'JS agent connection')
  assert.ok(alive(jsPid))

  const msg = await launchOurs()
  await waitUntil(() => !alive(jsPid), 10000, 100, 'the JS daemon to be killed')
  assert.notEqual(msg.pid, jsPid)
  assert.ok(alive(msg.pid))
  const ourVersion = require('../package.json').version
  await waitUntil(() => backend.wsHandshakes.some((h) => h.headers['user-agent'] === `PM2 Agent v${ourVersion}`), 15000, 100, 'our connection')
  assert.equal(fs.readFileSync(constants.INTERACTOR_PID_PATH, 'utf8').trim(), String(msg.pid))
})
