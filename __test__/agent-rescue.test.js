'use strict'
// The WatchDog (PM2 killed under the agent comes back with its apps) and
// self-rescue (a fatal error in the daemon relaunches the agent the way
// daemonize does; the panic never reaches Node). Runs in both modes: on Node
// the host calls daemonize, the native daemon relaunches itself.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { PM2_BIN, tmpHome, pm2, jlist, writeApp, killPm2, waitUntil } = require('./helpers/pm2')
const { MODE, hasAgentTitle } = require('./helpers/agent')

const home = tmpHome('ka-rescue-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_WATCHDOG_DELAY = '500'
process.env.PM2_AGENT_DUMP_INTERVAL = '1000'
process.env.PM2_BINARY_PATH = PM2_BIN
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')

const KEYS = { secret_key: 'rescue-secret', public_key: 'rescue-pub', machine_name: 'rescue-machine' }
let backend

const alive = (pid) => { try { process.kill(pid, 0); return true } catch (e) { return false } }
const readPid = (file) => { try { return parseInt(fs.readFileSync(file, 'utf8')) } catch (e) { return NaN } }

function launch () {
  return new Promise((resolve, reject) => {
    InteractorClient.launchAndInteract({}, Object.assign({ info_node: backend.url }, KEYS), (err, msg) => {
      if (err) return reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
      resolve(msg)
    })
  })
}

function kill () {
  return new Promise((resolve) => InteractorClient.killInteractorDaemon(constants, () => resolve()))
}

test.before(async () => {
  backend = await new Backend().start()
})

test.after(async () => {
  await kill()
  await killPm2(home)
  await backend.stop()
})

test('the watchdog dumps the process list and resurrects a killed PM2 with its apps', async () => {
  const a = writeApp(home, 'a.js', 'setInterval(() => {}, 1000)\n')
  const b = writeApp(home, 'b.js', 'setInterval(() => {}, 1000)\n')
  await pm2(home, ['start', a, '--name', 'app-a'])
  await pm2(home, ['start', b, '--name', 'app-b'])
  const dumpFile = path.join(home, 'dump.pm2')
  fs.rmSync(dumpFile, { force: true })
  await launch()

  await waitUntil(() => {
    try { return JSON.parse(fs.readFileSync(dumpFile, 'utf8')).map((e) => e.name).sort().join() === 'app-a,app-b' } catch (e) { return false }
  }, 20000, 200, 'the agent to dump the process list')

  const godPid = readPid(path.join(home, 'pm2.pid'))
  process.kill(godPid, 'SIGTERM')
  await waitUntil(() => !alive(godPid), 20000, 100, 'PM2 to die')
  await waitUntil(() => { const p = readPid(path.join(home, 'pm2.pid')); return p && p !== godPid && alive(p) }, 60000, 200, 'PM2 to be resurrected')
  await waitUntil(async () => {
    const list = await jlist(home)
    return list.filter((p) => p.pm2_env.status === 'online').map((p) => p.name).sort().join() === 'app-a,app-b'
  }, 60000, 500, 'the apps to be back online')
  await waitUntil(() => {
    const s = backend.lastStatus
    return s && s.data.process.length === 2
  }, 20000, 200, 'status to show the resurrected apps')
  const log = fs.readFileSync(constants.INTERACTOR_LOG_FILE_PATH, 'utf8')
  assert.match(log, /running pm2 resurrect/)
  assert.equal((log.match(/running pm2 resurrect/g) || []).length, 1, 'one resurrect for one outage')
  await kill()
})

for (const fault of ['panic:status', 'panic:daemon']) {
  test(`a fatal error (${fault}) relaunches the agent through daemonize`, async () => {
    const verifies = backend.verifyRequests.length
    process.env.PM2_AGENT_FAULT_INJECTION = fault
    let first
    try { first = await launch() } finally { delete process.env.PM2_AGENT_FAULT_INJECTION }
    await waitUntil(() => !alive(first.pid), 20000, 100, 'the failing agent to leave')
    await waitUntil(() => { const p = readPid(constants.INTERACTOR_PID_PATH); return p && p !== first.pid && alive(p) }, 20000, 100, 'a new agent')
    await waitUntil(() => backend.verifyRequests.length >= verifies + 2, 20000, 100, 'the new agent to verify')
    const rescued = readPid(constants.INTERACTOR_PID_PATH)
    assert.ok(hasAgentTitle(rescued, home), `a ${MODE} agent again: ${fs.readFileSync(`/proc/${rescued}/cmdline`, 'utf8')}`)
    const environ = fs.readFileSync(`/proc/${rescued}/environ`, 'utf8').split('\0')
    assert.ok(environ.includes('PM2_AGENT_RESCUES=1'), 'the rescue is counted')
    assert.ok(!environ.some((e) => e.startsWith('PM2_AGENT_FAULT_INJECTION=')), 'the injected fault fires once')
    const ping = await new Promise((resolve) => InteractorClient.ping(constants, (err, ok) => resolve(ok)))
    assert.equal(ping, true, 'the new agent serves interactor.sock')
    const log = fs.readFileSync(constants.INTERACTOR_LOG_FILE_PATH, 'utf8')
    assert.match(log, /FATAL EXCEPTION happened/)
    assert.match(log, /fault injection/)
    assert.match(log, /Re-initiating Agent/)
    assert.doesNotMatch(log, /fatal runtime error|Aborted|panicked at .*\n.*note: run with/, 'the panic never crossed into Node')
    await kill()
  })
}

test('a sixth fatal error in a row within 5 minutes gives up instead of relaunching', async () => {
  process.env.PM2_AGENT_FAULT_INJECTION = 'panic:daemon'
  process.env.PM2_AGENT_RESCUES = '5'
  let first
  try { first = await launch() } finally {
    delete process.env.PM2_AGENT_FAULT_INJECTION
    delete process.env.PM2_AGENT_RESCUES
  }
  await waitUntil(() => !alive(first.pid), 20000, 100, 'the failing agent to leave')
  const log = fs.readFileSync(constants.INTERACTOR_LOG_FILE_PATH, 'utf8')
  assert.match(log, /Failed to rescue agent : it crashed 5 times in a row, giving up/)
  assert.equal(readPid(constants.INTERACTOR_PID_PATH), first.pid, 'no new agent was started')
  const ping = await new Promise((resolve) => InteractorClient.ping(constants, (err, ok) => resolve(!err && ok)))
  assert.equal(ping, false)
})
