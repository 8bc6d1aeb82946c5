'use strict'
// Fault suite: the PM2 daemon (God) killed under a running agent, again and
// again: 5 rounds of SIGTERM, then 5 of SIGKILL. Each time the agent's
// watchdog runs `pm2 resurrect`, and status with the app back online (a new
// pid) must reach the backend within a bound; after each round there is
// still exactly one agent (the same one) and one God, and agent.lock is
// held by the agent alone (the God that `pm2 resurrect` leaves behind did
// not inherit it). Black box: real PM2, the agent launched by
// InteractorClient, a local PM2.io stand-in.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const path = require('path')
const { Backend } = require('../helpers/backend')
const { PM2_BIN, tmpHome, pm2, writeApp, killPm2, waitUntil } = require('../helpers/pm2')

const home = tmpHome('ka-pm2kill-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.AGENT_TRANSPORT_WEBSOCKET = 'true'
process.env.PM2_AGENT_WATCHDOG_DELAY = '500'
process.env.PM2_AGENT_DUMP_INTERVAL = '1000'
process.env.PM2_BINARY_PATH = PM2_BIN
const { launchAgent, killAgent, agentProcesses, godProcesses, processesHolding, alive, MODE } = require('../helpers/agent')

const KEYS = { secret_key: 'pm2kill-secret-5555', public_key: 'pm2kill-pub', machine_name: 'pm2kill-machine' }
const ROUNDS = 5
// From the kill to a status showing the app back: the watchdog's 3 s
// outage threshold, `pm2 resurrect` (a Node CLI and a new God), the app's
// start and the next status.
const BACK_WITHIN_MS = 60000
const LOCK = path.join(home, 'agent.lock')
const O_CLOEXEC = 0o2000000

let backend
let agentPid
const times = []

const readPid = (file) => { try { return parseInt(fs.readFileSync(file, 'utf8')) } catch (e) { return NaN } }
const appIn = (status) => status && Array.isArray(status.data.process) && status.data.process.find((p) => p.name === 'app')

test.before(async () => {
  backend = await new Backend().start()
  // Leaves when its God goes (SIGKILLed, PM2 cannot stop it): no orphan
  // keeps running next to the resurrected copy.
  const app = writeApp(home, 'app.js', "process.on('disconnect', () => process.exit(0))\nsetInterval(() => {}, 1000)\n")
  await pm2(home, ['start', app, '--name', 'app'])
  agentPid = (await launchAgent(backend, KEYS)).pid
  await waitUntil(() => {
    try { return JSON.parse(fs.readFileSync(path.join(home, 'dump.pm2'), 'utf8')).some((e) => e.name === 'app') } catch (e) { return false }
  }, 20000, 200, 'the agent to dump the process list')
  await waitUntil(() => { const a = appIn(backend.lastStatus); return a && a.pid > 0 }, 20000, 100, 'a status with the app')
})

test.after(async () => {
  await killAgent()
  await killPm2(home)
  await backend.stop()
  if (times.length) console.log(`# PM2 killed (${MODE}): status back after ${times.map((t) => `${t.signal} ${t.ms} ms`).join(', ')}`)
})

for (const signal of ['SIGTERM', 'SIGKILL']) {
  for (let round = 1; round <= ROUNDS; round++) {
    test(`PM2 ${signal}ed (round ${round}/${ROUNDS}): status comes back, one agent, one God`, async () => {
      const godPid = readPid(path.join(home, 'pm2.pid'))
      assert.ok(alive(godPid), 'PM2 runs before the kill')
      const appPid = appIn(backend.lastStatus).pid
      const from = backend.statuses.length
      const killedAt = Date.now()
      process.kill(godPid, signal)
      await waitUntil(() => !alive(godPid), 20000, 50, 'PM2 to die')
      await waitUntil(() => backend.statuses.slice(from).some((s) => {
        const a = appIn(s)
        return a && a.pid > 0 && a.pid !== appPid && a.status === 'online'
      }), BACK_WITHIN_MS, 100, 'a status with the resurrected app')
      times.push({ signal, ms: Date.now() - killedAt })

      const gods = await waitUntil(() => { const g = godProcesses(home); return g.length === 1 && g }, 20000, 100, `one God (have ${godProcesses(home)})`)
      assert.notEqual(gods[0], godPid)
      assert.equal(readPid(path.join(home, 'pm2.pid')), gods[0])
      assert.deepEqual(agentProcesses(home), [agentPid], 'the same single agent')
      const holders = processesHolding(LOCK)
      assert.deepEqual(holders.map((h) => h.pid), [agentPid], `agent.lock holders: ${JSON.stringify(holders)}`)
      assert.ok(holders[0].flags & O_CLOEXEC)
    })
  }
}
