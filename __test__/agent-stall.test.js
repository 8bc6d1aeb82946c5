'use strict'
// A wedged runtime (not a panic: nothing unwinds) is caught. The stall
// watch, a thread outside the tokio runtime, sees the runtime's heartbeat
// stand still for PM2_AGENT_STALL_TIMEOUT, says why in agent.log, releases
// interactor.sock and has the host relaunch the agent as self-rescue does,
// without going through the wedged runtime. The runtime is blocked on
// purpose with PM2_AGENT_FAULT_INJECTION=block:runtime. Runs in both modes:
// on Node the rescue reaches JS through a threadsafe function (Node's event
// loop, not the runtime) and `daemonize` relaunches; the native daemon
// relaunches itself from the watch thread. A stop asked of a wedged agent
// (SIGTERM) ends it instead: no relaunch.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const { tmpHome, waitUntil } = require('./helpers/pm2')
const { launchAgent, getInfos, agentLog, idleStage, MODE, hasAgentTitle } = require('./helpers/agent')

const home = tmpHome('ka-stall-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_WATCHDOG = 'false'
process.env.PM2_AGENT_STALL_TIMEOUT = '2000'
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')

const KEYS = { secret_key: 'stall-secret', public_key: 'stall-pub', machine_name: 'stall-machine' }

const alive = (pid) => { try { process.kill(pid, 0); return true } catch (e) { return false } }
const readPid = (file) => { try { return parseInt(fs.readFileSync(file, 'utf8')) } catch (e) { return NaN } }

let stage

test.before(async () => { stage = await idleStage(home) })
test.after(async () => {
  await stage.teardown()
  fs.rmSync(home, { recursive: true, force: true })
})

test('a blocked runtime is noticed from outside it and the agent relaunched', async (t) => {
  const { backend } = stage
  process.env.PM2_AGENT_FAULT_INJECTION = 'block:runtime'
  let first
  try { first = await launchAgent(backend, KEYS) } finally { delete process.env.PM2_AGENT_FAULT_INJECTION }
  await waitUntil(() => backend.statuses.length > 0, 20000, 50, 'the first agent to report status')
  const verifies = backend.verifyRequests.length

  // The runtime blocks 3 s after the start; 2 s later the watch acts.
  const t0 = Date.now()
  await waitUntil(() => !alive(first.pid), 40000, 100, 'the wedged agent to leave')
  t.diagnostic(`${MODE}: the wedged agent left ${Date.now() - t0} ms after its first status was seen`)
  await waitUntil(() => { const p = readPid(constants.INTERACTOR_PID_PATH); return p && p !== first.pid && alive(p) }, 20000, 100, 'a new agent')
  await waitUntil(() => backend.verifyRequests.length > verifies, 20000, 100, 'the new agent to verify')
  const rescued = readPid(constants.INTERACTOR_PID_PATH)
  assert.ok(hasAgentTitle(rescued, home), `a ${MODE} agent again: ${fs.readFileSync(`/proc/${rescued}/cmdline`, 'utf8')}`)
  const environ = fs.readFileSync(`/proc/${rescued}/environ`, 'utf8').split('\0')
  assert.ok(environ.includes('PM2_AGENT_RESCUES=1'), 'the rescue is counted')
  assert.ok(!environ.some((e) => e.startsWith('PM2_AGENT_FAULT_INJECTION=')), 'the injected fault fires once')

  // The new agent reports to the backend (the old one is gone: any new
  // status is the new agent's).
  const n = backend.statuses.length
  await waitUntil(() => backend.statuses.length >= n + 2, 20000, 100, 'status from the new agent')
  // …and serves interactor.sock (the old one released it).
  const infos = await getInfos()
  assert.equal(infos.machine_name, KEYS.machine_name)
  const ping = await new Promise((resolve) => InteractorClient.ping(constants, (err, ok) => resolve(!err && ok)))
  assert.equal(ping, true)

  const log = agentLog()
  assert.equal((log.match(/runtime made no progress for 2 s/g) || []).length, 1, `said once, why:\n${log}`)
  assert.match(log, /fault injection: blocking the runtime/)
  assert.match(log, /Re-initiating Agent/)
  assert.doesNotMatch(log, /fatal runtime error|Aborted|did not exit within/, 'the host exited on its own, in time')
})

test('a runtime that keeps beating is left alone', async () => {
  const { backend } = stage
  const before = agentLog()
  const msg = await launchAgent(backend, KEYS)
  // Several stall timeouts (2 s) go by; the agent stays the same process.
  const n = backend.statuses.length
  await waitUntil(() => backend.statuses.length >= n + 8, 30000, 100, 'eight more statuses')
  assert.ok(alive(msg.pid))
  assert.equal(readPid(constants.INTERACTOR_PID_PATH), msg.pid)
  assert.doesNotMatch(agentLog().slice(before.length), /runtime made no progress/)
})

test('SIGTERM to a wedged agent ends it within the stop bound, with no relaunch', async (t) => {
  const { backend } = stage
  // A stall timeout far longer than the test: only the stop bound (10 s) acts.
  process.env.PM2_AGENT_STALL_TIMEOUT = '120000'
  process.env.PM2_AGENT_FAULT_INJECTION = 'block:runtime'
  const keys = Object.assign({}, KEYS, { public_key: 'stall-pub-2' })
  const launched = agentLog().length
  let msg
  try {
    msg = await launchAgent(backend, keys)
  } finally {
    delete process.env.PM2_AGENT_FAULT_INJECTION
    process.env.PM2_AGENT_STALL_TIMEOUT = '2000'
  }
  await waitUntil(() => /fault injection: blocking the runtime/.test(agentLog().slice(launched)), 20000, 100,
    'the runtime to block')
  const before = agentLog().length
  const verifies = backend.verifyRequests.length
  const t0 = Date.now()
  process.kill(msg.pid, 'SIGTERM')
  await waitUntil(() => !alive(msg.pid), 40000, 100, 'the wedged agent to stop')
  t.diagnostic(`${MODE}: SIGTERM to exit ${Date.now() - t0} ms`)
  const log = agentLog().slice(before)
  assert.match(log, /the stop asked at least [\d.]+ s ago did not complete \(the runtime made no progress since\): exiting without relaunch/)
  assert.doesNotMatch(log, /Re-initiating Agent|rescued/)
  // Its files are gone, as after a clean stop, and nothing came back.
  assert.equal(fs.existsSync(constants.INTERACTOR_RPC_PORT), false, 'interactor.sock removed')
  assert.equal(fs.existsSync(constants.INTERACTOR_PID_PATH), false, 'agent.pid removed')
  await new Promise((resolve) => setTimeout(resolve, 3000))
  assert.equal(backend.verifyRequests.length, verifies, 'no new agent verified')
  assert.equal(fs.existsSync(constants.INTERACTOR_PID_PATH), false, 'no new agent.pid')
})
