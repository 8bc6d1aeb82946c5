'use strict'
// InteractorClient against a running agent: the real @pm2/agent 1.0.8 daemon
// (cross-compatibility of ping / getInfos / kill), and a pm2-axon-rpc stand-in
// for the agent's error answers.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')

const axon = require('pm2-axon')
const rpc = require('pm2-axon-rpc')
const InteractorClient = require('../src/InteractorClient.js')
const constants = require('../constants.js')
const {
  tmpHome, cleanEnv, captureConsole, callbackArgs, startBackend, startRealAgent, exitOf
} = require('./fixtures/client-helpers.js')

/** A pm2-axon rep + rpc.Server on `address` exposing `methods`. */
async function standIn (t, address, methods) {
  const rep = axon.socket('rep')
  const server = new rpc.Server(rep)
  server.expose(methods)
  await new Promise((resolve, reject) => {
    rep.once('error', reject)
    rep.once('bind', resolve)
    rep.bind(address)
  })
  t.after(() => new Promise((resolve) => rep.close(resolve)))
  return rep
}

test('real 1.0.8 agent: ping is true and getInteractInfo returns its getInfos object', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const backend = await startBackend(t)
  const agent = await startRealAgent(t, home, backend.url)
  const cst = constants.forHome(home)

  assert.deepEqual(await callbackArgs((cb) => InteractorClient.ping(cst, cb)), [null, true])

  const [err, infos] = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.equal(err, null)
  assert.deepEqual(Object.keys(infos), ['machine_name', 'public_key', 'secret_key', 'remote_host', 'connected',
    'transporters', 'socket_path', 'pm2_home_monitored'])
  assert.equal(infos.machine_name, agent.keys.machine_name)
  assert.equal(infos.public_key, agent.keys.public_key)
  assert.equal(infos.remote_host, 'http://127.0.0.1')
  assert.equal(infos.socket_path, cst.INTERACTOR_RPC_PORT)
  assert.equal(infos.pm2_home_monitored, home)
  // PM2_INTERACTOR_PROCESSING unset: the RPC client was closed afterwards
  assert.equal(InteractorClient.client_sock.closing, true)
})

test('real 1.0.8 agent: launchRPC exposes getInfos and kill; kill stops it cleanly', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const backend = await startBackend(t)
  const agent = await startRealAgent(t, home, backend.url)
  const cst = constants.forHome(home)

  const [err, res] = await callbackArgs((cb) => InteractorClient.launchRPC(cst, cb))
  assert.equal(err, null)
  assert.deepEqual(res, { success: true })
  assert.deepEqual(Object.keys(InteractorClient.rpc).sort(), ['getInfos', 'kill'])

  const [err2, infos] = await callbackArgs((cb) => InteractorClient.rpc.getInfos(cb))
  assert.equal(err2, null)
  assert.equal(infos.public_key, agent.keys.public_key)

  const exited = exitOf(agent.child)
  const killArgs = await callbackArgs((cb) => InteractorClient.rpc.kill(cb))
  assert.deepEqual(killArgs, [null])
  assert.deepEqual(await exited, { code: 0, signal: null })
  assert.equal(fs.existsSync(cst.INTERACTOR_RPC_PORT), false)
  assert.deepEqual(await callbackArgs((cb) => InteractorClient.disconnectRPC(cb)), [null, { success: true }])
  // calls after disconnectRPC fail instead of hanging
  const [late] = await callbackArgs((cb) => InteractorClient.rpc.getInfos(cb))
  assert.equal(late.message, 'RPC closed')
})

test('real 1.0.8 agent: killInteractorDaemon → (null, {success: true}), agent exits 0, then offline', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const backend = await startBackend(t)
  const agent = await startRealAgent(t, home, backend.url)
  const cst = constants.forHome(home)
  const exited = exitOf(agent.child)
  const out = captureConsole(t)
  const args = await callbackArgs((cb) => InteractorClient.killInteractorDaemon(cst, cb))
  out.restore()
  assert.deepEqual(args, [null, { success: true }])
  assert.deepEqual(await exited, { code: 0, signal: null })
  assert.deepEqual(out.err, [])
  assert.deepEqual(await callbackArgs((cb) => InteractorClient.ping(cst, cb)), [null, false])
  const [err] = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.equal(err.message, 'Interactor is offline')
})

test('getInfos before the agent is active answers undefined', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  await standIn(t, cst.INTERACTOR_RPC_PORT, {
    kill: function (cb) { cb() },
    getInfos: function (cb) { cb(null) }
  })
  const args = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.deepEqual(args, [null, undefined])
})

test('getInteractInfo keeps the RPC open while PM2_INTERACTOR_PROCESSING is set', async (t) => {
  cleanEnv(t, { PM2_INTERACTOR_PROCESSING: 'true' })
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  await standIn(t, cst.INTERACTOR_RPC_PORT, {
    kill: function (cb) { cb() },
    getInfos: function (cb) { cb(null, { machine_name: 'x' }) }
  })
  const args = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.deepEqual(args, [null, { machine_name: 'x' }])
  assert.equal(InteractorClient.client_sock.closing, false)
  assert.deepEqual(await callbackArgs((cb) => InteractorClient.disconnectRPC(cb)), [null, { success: true }])
})

test('remote errors: getInteractInfo passes them on, killInteractorDaemon prints them and still succeeds', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  await standIn(t, cst.INTERACTOR_RPC_PORT, {
    kill: function (cb) { cb(new Error('cannot stop now')) },
    getInfos: function (cb) { cb(new Error('no infos for you')) }
  })
  const [err] = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.ok(err instanceof Error)
  assert.equal(err.message, 'no infos for you')

  const out = captureConsole(t)
  const args = await callbackArgs((cb) => InteractorClient.killInteractorDaemon(cst, cb))
  out.restore()
  assert.deepEqual(args, [null, { success: true }])
  assert.deepEqual(out.err, ['cannot stop now'])

  // update stops at the kill error
  const [uerr] = await callbackArgs((cb) => InteractorClient.update(cst, cb))
  assert.equal(uerr.message, 'cannot stop now')
})

test('a peer that never answers: the call fails after its timeout instead of hanging', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  await standIn(t, cst.INTERACTOR_RPC_PORT, {
    kill: function (cb) { /* never answers */ },
    getInfos: function (cb) { /* never answers */ }
  })
  const [err] = await callbackArgs((cb) => InteractorClient.getInteractInfo(cst, cb))
  assert.ok(err instanceof Error)
})
