'use strict'
// One agent per PM2_HOME ($PM2_HOME/agent.lock, src/daemon/lock.rs), black
// box against a real PM2: concurrent launchers all get the one running
// agent's outcome, a daemon that loses the lock leaves the winner's files
// alone, a lock left by a SIGKILLed agent does not block, a restart waits
// for the old agent's lock, self-rescue hands the lock over to the
// relaunched agent, and the lock is never inherited. Runs in both
// modes (the lock is taken in the daemon code both hosts share).

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const path = require('path')
const { tmpHome, waitUntil } = require('./helpers/pm2')

const home = tmpHome('ka-lock-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_WATCHDOG = 'false'
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')
const {
  idleStage, launchAgent, getInfos, killAgent, agentLog, agentProcesses, processesHolding, launchConcurrently, alive
} = require('./helpers/agent')

const KEYS = { secret_key: 'lock-secret-0123', public_key: 'lock-pub', machine_name: 'lock-machine' }
const LOCK = path.join(home, 'agent.lock')
const O_CLOEXEC = 0o2000000
let stage

const readText = (file) => { try { return fs.readFileSync(file, 'utf8').trim() } catch (e) { return null } }

/** Waits until exactly one agent runs on home (losers gone); returns its pid. */
async function theAgent () {
  await waitUntil(() => agentProcesses(home).length === 1, 20000, 100, `one agent (have ${agentProcesses(home)})`)
  return agentProcesses(home)[0]
}

/** Asserts every answer is the running agent's success outcome. */
function assertAllAnswered (answers, winner, keys = KEYS) {
  for (const [i, a] of answers.entries()) {
    assert.equal(a.err, null, `launcher ${i}: ${JSON.stringify(a.err)}`)
    assert.equal(a.msg && a.msg.error, false, `launcher ${i}: ${JSON.stringify(a.msg)}`)
    assert.equal(a.msg.km_data.active, true, `launcher ${i}`)
    assert.equal(a.msg.pid, winner, `launcher ${i} was answered by the running agent`)
    assert.equal(a.msg.public_key, keys.public_key)
    assert.equal(a.msg.machine_name, keys.machine_name)
  }
}

test.before(async () => {
  stage = await idleStage(home)
})

test.after(async () => {
  if (stage) await stage.teardown()
})

test('five launchAndInteract at once (one process): one agent, every caller gets its outcome', async () => {
  const answers = await Promise.all(Array.from({ length: 5 }, () => new Promise((resolve) => {
    InteractorClient.launchAndInteract({}, Object.assign({ info_node: stage.backend.url }, KEYS), (err, msg) => resolve({ err: err || null, msg }))
  })))
  const winner = await theAgent()
  assertAllAnswered(answers, winner)
  assert.equal(readText(constants.INTERACTOR_PID_PATH), String(winner), 'agent.pid names the winner')
  assert.equal(readText(LOCK), String(winner), 'agent.lock names the winner')
  assert.equal(stage.backend.verifyRequests.length, 1, 'only the winner verified')
  await killAgent()
})

test('eight launcher processes at once: one agent, every launcher gets its outcome', async () => {
  const verifies = stage.backend.verifyRequests.length
  const logFrom = agentLog().length
  const answers = await launchConcurrently(8, home, stage.backend, KEYS)
  const winner = await theAgent()
  assertAllAnswered(answers, winner)
  assert.equal(readText(constants.INTERACTOR_PID_PATH), String(winner))
  assert.equal(stage.backend.verifyRequests.length - verifies, 1, 'only the winner verified')
  // The losers said why in agent.log, once each at most.
  const waited = agentLog().slice(logFrom).split('\n').filter((l) => l.includes('another agent holds this PM2_HOME')).length
  assert.ok(waited <= 7, `${waited} loser lines`)
})

test('a daemon started next to the agent answers with its outcome and leaves its files alone', async () => {
  const winner = await theAgent()
  const sockBefore = fs.statSync(constants.INTERACTOR_RPC_PORT).ino
  const logBefore = fs.statSync(constants.INTERACTOR_LOG_FILE_PATH).size
  const conf = await new Promise((resolve, reject) => InteractorClient.getOrSetConf(constants, Object.assign({ info_node: stage.backend.url }, KEYS), (e, c) => e ? reject(e) : resolve(c)))
  let exit
  const [err, msg, child] = await new Promise((resolve) => InteractorClient.daemonize(constants, conf, (...args) => {
    const c = args[2]
    if (c) exit = c.exitCode !== null ? Promise.resolve(c.exitCode) : new Promise((resolve) => c.once('exit', (code) => resolve(code)))
    resolve(args)
  }))
  assert.equal(err, null)
  assert.equal(msg.pid, winner, 'the running agent\'s outcome')
  assert.equal(msg.km_data.active, true)
  assert.notEqual(child.pid, winner)
  const keep = setInterval(() => {}, 1000)
  assert.equal(await exit, 0, 'the loser exits 0')
  clearInterval(keep)
  assert.ok(alive(winner))
  assert.deepEqual(agentProcesses(home), [winner])
  assert.equal(fs.statSync(constants.INTERACTOR_RPC_PORT).ino, sockBefore, 'interactor.sock untouched')
  assert.equal(readText(constants.INTERACTOR_PID_PATH), String(winner), 'agent.pid untouched')
  assert.equal(readText(LOCK), String(winner), 'agent.lock untouched')
  assert.ok(fs.statSync(constants.INTERACTOR_LOG_FILE_PATH).size >= logBefore, 'agent.log only appended to')
  const infos = await getInfos()
  assert.equal(infos.machine_name, KEYS.machine_name)
})

test('the lock descriptor is close-on-exec and held by the agent alone', async () => {
  const winner = await theAgent()
  const holders = processesHolding(LOCK)
  assert.deepEqual(holders.map((h) => h.pid), [winner], JSON.stringify(holders))
  assert.ok(holders[0].flags & O_CLOEXEC, `flags ${holders[0].flags.toString(8)}`)
})

test('a launch with other keys restarts the agent: the new daemon waits for the old lock', async () => {
  const old = await theAgent()
  const other = Object.assign({}, KEYS, { machine_name: 'lock-machine-2' })
  const msg = await launchAgent(stage.backend, other)
  assert.notEqual(msg.pid, old)
  await waitUntil(() => !alive(old), 10000, 50, 'the old agent to exit')
  assert.equal(await theAgent(), msg.pid)
  assert.equal(readText(LOCK), String(msg.pid))
  assert.equal((await getInfos()).machine_name, 'lock-machine-2')
})

test('a lock file left by a SIGKILLed agent does not block a start', async () => {
  const old = await theAgent()
  process.kill(old, 'SIGKILL')
  await waitUntil(() => !alive(old), 10000, 50, 'the agent to die')
  assert.equal(readText(LOCK), String(old), 'the stale lock file is still there')
  assert.ok(fs.existsSync(constants.INTERACTOR_RPC_PORT), 'and the stale socket')
  const msg = await launchAgent(stage.backend, KEYS)
  assert.notEqual(msg.pid, old)
  assert.equal(await theAgent(), msg.pid)
  assert.equal(readText(LOCK), String(msg.pid))
})

test('self-rescue hands the lock over: the relaunched agent holds it, the failed one is gone', async () => {
  const before = await theAgent()
  await killAgent()
  process.env.PM2_AGENT_FAULT_INJECTION = 'panic:daemon'
  let first
  try { first = await launchAgent(stage.backend, KEYS) } finally { delete process.env.PM2_AGENT_FAULT_INJECTION }
  assert.notEqual(first.pid, before)
  await waitUntil(() => !alive(first.pid), 20000, 100, 'the failing agent to leave')
  const rescued = await theAgent()
  assert.notEqual(rescued, first.pid)
  await waitUntil(() => readText(LOCK) === String(rescued), 10000, 100, 'agent.lock to name the rescued agent')
  assert.deepEqual(processesHolding(LOCK).map((h) => h.pid), [rescued])
  assert.equal(readText(constants.INTERACTOR_PID_PATH), String(rescued))
})
