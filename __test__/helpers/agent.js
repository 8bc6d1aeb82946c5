'use strict'
// The agent as the black-box tests drive it: through the package's
// InteractorClient, on the PM2_HOME the test file set before requiring this.

const fs = require('fs')
const { waitUntil } = require('./pm2')

const client = () => require('../../src/InteractorClient')
const constants = () => require('../../constants')

function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

/** launchAndInteract against `backend` with `keys`; resolves with the IPC message. */
function launchAgent (backend, keys) {
  return new Promise((resolve, reject) => {
    client().launchAndInteract({}, Object.assign({ info_node: backend.url }, keys), (err, msg) => {
      if (err) return reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
      resolve(msg)
    })
  })
}

/** getInteractInfo: what `pm2 link info` shows. */
function getInfos () {
  return new Promise((resolve, reject) => {
    client().getInteractInfo(constants(), (err, infos) => (err ? reject(err) : resolve(infos)))
  })
}

/** killInteractorDaemon, then waits for the daemon process to be gone. */
async function killAgent () {
  const c = constants()
  const pid = (() => { try { return parseInt(fs.readFileSync(c.INTERACTOR_PID_PATH, 'utf8')) } catch (e) { return 0 } })()
  await new Promise((resolve) => client().killInteractorDaemon(c, () => resolve()))
  if (pid) {
    await waitUntil(() => { try { process.kill(pid, 0); return false } catch (e) { return true } }, 10000, 100, 'agent exit')
  }
}

/** Which daemon the launcher starts in this run: 'native' (PM2_AGENT_NATIVE=true) or 'node'. */
const MODE = process.env.PM2_AGENT_NATIVE === 'true' ? 'native' : 'node'

/**
 * Whether the process `pid` carries the agent's title for this mode,
 * `PM2 Agent v<version> [<mode>]: (<home>)` (its /proc/<pid>/cmdline). On
 * Node, libuv may cut the title to the space of the original argv, so only
 * the part up to the mode is required there.
 */
function hasAgentTitle (pid, home) {
  const title = require('fs').readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]
  const full = `PM2 Agent v${require('../../package.json').version} [${MODE}]: (${home})`
  return MODE === 'native' ? title === full : title.startsWith(full.slice(0, full.indexOf(':') + 1))
}

/**
 * The usual stage of an agent test on `home`: a local backend, and PM2 with
 * one idle app named `idle`. `teardown()` stops the agent, PM2 and the
 * backend.
 */
async function idleStage (home) {
  const { Backend } = require('./backend')
  const { pm2, writeApp, killPm2 } = require('./pm2')
  const backend = await new Backend().start()
  await pm2(home, ['start', writeApp(home, 'idle.js', 'setInterval(() => {}, 1000)\n'), '--name', 'idle'])
  const teardown = async () => {
    await killAgent()
    await killPm2(home)
    await backend.stop()
  }
  return { backend, teardown }
}

function agentLog () {
  try { return fs.readFileSync(constants().INTERACTOR_LOG_FILE_PATH, 'utf8') } catch (e) { return '' }
}

module.exports = { sleep, launchAgent, getInfos, killAgent, agentLog, idleStage, MODE, hasAgentTitle }
