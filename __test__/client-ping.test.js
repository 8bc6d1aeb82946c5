'use strict'
// InteractorClient.ping / launchRPC / disconnectRPC / killInteractorDaemon /
// getInteractInfo / update when no agent runs, and ping against a pm2-axon rep.
const test = require('node:test')
const assert = require('node:assert/strict')

const axon = require('pm2-axon')
const InteractorClient = require('../src/InteractorClient.js')
const constants = require('../constants.js')
const { tmpHome, cleanEnv, captureConsole, callbackArgs, killIfAlive, exitOf } = require('./fixtures/client-helpers.js')

function bindRep (t, address) {
  const rep = axon.socket('rep')
  t.after(() => new Promise((resolve) => rep.close(resolve)))
  return new Promise((resolve, reject) => {
    rep.once('error', reject)
    rep.once('bind', () => resolve(rep))
    rep.bind(address)
  })
}

test('ping without a callback throws Missing parameters synchronously', () => {
  assert.throws(() => InteractorClient.ping({ INTERACTOR_RPC_PORT: '/x' }), { message: 'Missing parameters' })
  assert.throws(() => InteractorClient.ping({ INTERACTOR_RPC_PORT: '/x' }, 'nope'), { message: 'Missing parameters' })
})

test('ping without usable opts calls back with Error(Missing parameters)', async () => {
  for (const opts of [undefined, null, 'str', {}, { INTERACTOR_RPC_PORT: '' }]) {
    const args = await callbackArgs((cb) => InteractorClient.ping(opts, cb))
    assert.equal(args.length, 1)
    assert.ok(args[0] instanceof Error)
    assert.equal(args[0].message, 'Missing parameters')
  }
})

test('ping answers false when nothing listens on the socket', async (t) => {
  const home = tmpHome(t)
  const args = await callbackArgs((cb) => InteractorClient.ping(constants.forHome(home), cb))
  assert.deepEqual(args, [null, false])
})

test('ping answers true for a listening pm2-axon rep', async (t) => {
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  await bindRep(t, cst.INTERACTOR_RPC_PORT)
  const args = await callbackArgs((cb) => InteractorClient.ping(cst, cb))
  assert.deepEqual(args, [null, true])
})

test('ping answers false for a stale socket file left by a killed agent', async (t) => {
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  const child = require('node:child_process').spawn(process.execPath, ['-e',
    'require("net").createServer().listen(process.argv[1], () => process.stdout.write("up"))', cst.INTERACTOR_RPC_PORT],
  { stdio: ['ignore', 'pipe', 'ignore'] })
  t.after(() => killIfAlive(child.pid))
  await new Promise((resolve) => child.stdout.once('data', resolve))
  child.kill('SIGKILL')
  await exitOf(child)
  assert.equal(require('node:fs').existsSync(cst.INTERACTOR_RPC_PORT), true)
  const args = await callbackArgs((cb) => InteractorClient.ping(cst, cb))
  assert.deepEqual(args, [null, false])
})

test('disconnectRPC before any launchRPC: not launched', async () => {
  InteractorClient.client_sock = undefined
  const args = await callbackArgs((cb) => InteractorClient.disconnectRPC(cb))
  assert.deepEqual(args, [null, { success: false, msg: 'RPC connection to Interactor Daemon is not launched' }])
})

test('launchRPC with no agent: success false, then disconnectRPC closes once', async (t) => {
  const home = tmpHome(t)
  const [err, res] = await callbackArgs((cb) => InteractorClient.launchRPC(constants.forHome(home), cb))
  assert.ok(err instanceof Error)
  assert.deepEqual(res, { success: false, msg: 'reconnect attempt' })
  assert.deepEqual(InteractorClient.rpc, {})
  assert.deepEqual(await callbackArgs((cb) => InteractorClient.disconnectRPC(cb)), [null, { success: true }])
  assert.deepEqual(await callbackArgs((cb) => InteractorClient.disconnectRPC(cb)), [null, { success: false, msg: 'RPC closed' }])
})

test('killInteractorDaemon with nothing running: Interactor not launched', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const args = await callbackArgs((cb) => InteractorClient.killInteractorDaemon(constants.forHome(home), cb))
  assert.equal(args.length, 1)
  assert.equal(args[0].message, 'Interactor not launched')
  assert.equal(process.env.PM2_INTERACTOR_PROCESSING, 'true')
})

test('killInteractorDaemon without callback prints on stderr unless PM2_SILENT/PM2_PROGRAMMATIC', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  // resolves once killInteractorDaemon's ping callback (which prints) has run
  const run = async () => {
    const out = captureConsole()
    const orig = Object.getOwnPropertyDescriptor(InteractorClient, 'ping')
    const done = new Promise((resolve) => {
      InteractorClient.ping = (opts, cb) => orig.value.call(InteractorClient, opts, (...a) => { cb(...a); resolve() })
    })
    try {
      InteractorClient.killInteractorDaemon(cst)
      await done
    } finally {
      Object.defineProperty(InteractorClient, 'ping', orig)
      out.restore()
    }
    return out
  }
  let out = await run()
  assert.deepEqual(out.err, ['Interactor not launched'])
  assert.deepEqual(out.out, [])
  process.env.PM2_SILENT = 'true'
  out = await run()
  assert.deepEqual(out.err, [])
  delete process.env.PM2_SILENT
  process.env.PM2_PROGRAMMATIC = 'false' // any value silences, as in the JS agent
  out = await run()
  assert.deepEqual(out.err, [])
})

test('getInteractInfo: PM2_NO_INTERACTION, then offline', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  process.env.PM2_NO_INTERACTION = 'true'
  let args = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.equal(args[0].message, 'PM2_NO_INTERACTION set')
  delete process.env.PM2_NO_INTERACTION
  args = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.equal(args.length, 1)
  assert.equal(args[0].message, 'Interactor is offline')
})

test('update with nothing running: Interactor not launched', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const args = await callbackArgs((cb) => InteractorClient.update(constants.forHome(home), cb))
  assert.equal(args.length, 1)
  assert.equal(args[0].message, 'Interactor not launched')
})

test('launchAndInteract with PM2_AGENT_ONLINE calls back at once with no arguments', async (t) => {
  cleanEnv(t, { PM2_AGENT_ONLINE: 'true' })
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  const out = captureConsole(t)
  const args = await callbackArgs((cb) => InteractorClient.launchAndInteract(cst, { public_key: 'p', secret_key: 's' }, cb))
  out.restore()
  assert.deepEqual(args, [])
  assert.equal(require('node:fs').existsSync(cst.INTERACTION_CONF), false)
  assert.equal(process.env.PM2_INTERACTOR_PROCESSING, undefined)
  assert.deepEqual(out.out, [])
})

test('launchAndInteract: configuration errors reach the callback', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const args = await callbackArgs((cb) => InteractorClient.launchAndInteract(constants.forHome(home), {}, cb))
  assert.equal(args.length, 1)
  assert.equal(args[0].message, 'secret key is not defined')
})
