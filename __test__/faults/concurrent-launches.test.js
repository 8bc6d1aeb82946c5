'use strict'
// Fault suite: many launchers at once on one PM2_HOME, again and again, as
// eight `pm2 link` commands typed together would: from nothing, over the
// stale lock and socket of a SIGKILLed agent, and over a running agent
// (which every launcher asks to restart: the restarts coalesce into one).
// Every round ends with exactly one agent process, and every launcher was
// answered with that agent's success outcome (its pid in it), never an
// error. Black box: real PM2, launcher processes (InteractorClient), a
// local PM2.io stand-in.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const path = require('path')
const { tmpHome, waitUntil } = require('../helpers/pm2')

const home = tmpHome('ka-launches-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_WATCHDOG = 'false'
const { idleStage, agentProcesses, processesHolding, launchConcurrently, alive } = require('../helpers/agent')

const KEYS = { secret_key: 'launches-secret-4321', public_key: 'launches-pub', machine_name: 'launches-machine' }
const LAUNCHERS = 8
const ROUNDS = 3
const LOCK = path.join(home, 'agent.lock')
let stage


async function theAgent () {
  await waitUntil(() => agentProcesses(home).length === 1, 20000, 100, `one agent (have ${agentProcesses(home)})`)
  return agentProcesses(home)[0]
}

/** One round: LAUNCHERS launchers at once; checks the outcome; returns the agent's pid. */
async function round () {
  const answers = await launchConcurrently(LAUNCHERS, home, stage.backend, KEYS)
  const winner = await theAgent()
  for (const [i, a] of answers.entries()) {
    assert.equal(a.err, null, `launcher ${i}: ${JSON.stringify(a.err)}`)
    assert.ok(a.msg, `launcher ${i} got the outcome, not an empty answer`)
    assert.equal(a.msg.error, false)
    assert.equal(a.msg.km_data.active, true)
    assert.equal(a.msg.pid, winner, `launcher ${i} answered by the running agent`)
  }
  assert.equal(parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8')), winner)
  assert.deepEqual(processesHolding(LOCK).map((h) => h.pid), [winner])
  await waitUntil(() => stage.backend.sockets.size === 1, 20000, 100, 'one WebSocket connection')
  return winner
}

test.before(async () => {
  stage = await idleStage(home)
})

test.after(async () => {
  if (stage) await stage.teardown()
})

for (let r = 1; r <= ROUNDS; r++) {
  test(`round ${r}: ${LAUNCHERS} launchers from nothing, over a SIGKILLed agent, over a running agent`, async () => {
    // From nothing (the previous round's agent stopped cleanly).
    const first = await round()

    // Over the stale agent.lock and interactor.sock of a SIGKILLed agent.
    process.kill(first, 'SIGKILL')
    await waitUntil(() => !alive(first), 10000, 50, 'the agent to die')
    const second = await round()
    assert.notEqual(second, first)

    // Over a running agent: every launcher restarts it, as the JS agent's
    // launchOrAttach does. (A launcher attaches instead to an agent that
    // took the lock less than 10 s ago with the same keys: age the lock so
    // that this one counts as long-running.)
    const old = new Date(Date.now() - 60000)
    fs.utimesSync(LOCK, old, old)
    const third = await round()
    assert.notEqual(third, second)
    await waitUntil(() => !alive(second), 10000, 50, 'the old agent to be gone')

    await new Promise((resolve) => require('../../src/InteractorClient').killInteractorDaemon(require('../../constants'), () => resolve()))
    await waitUntil(() => agentProcesses(home).length === 0, 10000, 100, 'the agent to stop')
  })
}
