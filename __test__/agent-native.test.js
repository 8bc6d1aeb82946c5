'use strict'
// The native daemon (PM2_AGENT_NATIVE=true: keymetrics-agent-daemon, no Node
// in the agent) where it differs from the Node host: what `ps` shows, the
// host facts it finds without Node, its IPC message reaching the launcher,
// clean exits on signals and on `kill`, and a clear error when the binary
// is missing. This file always runs the native daemon; the shared agent
// tests run in both modes (scripts/test-node.js).

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const os = require('os')
const { tmpHome, waitUntil } = require('./helpers/pm2')
const { launchAgent, killAgent, idleStage } = require('./helpers/agent')

const home = tmpHome('ka-native-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_NATIVE = 'true'
const InteractorClient = require('../src/InteractorClient')
const constants = require('../constants')
const nativeDaemon = require('../src/nativeDaemon')
const ourVersion = require('../package.json').version

const KEYS = { secret_key: 'native-secret', public_key: 'native-pub', machine_name: 'native-machine' }
let backend
let stage

const alive = (pid) => { try { process.kill(pid, 0); return true } catch (e) { return false } }
const readPid = () => { try { return parseInt(fs.readFileSync(constants.INTERACTOR_PID_PATH, 'utf8')) } catch (e) { return NaN } }

test.before(async () => {
  stage = await idleStage(home)
  backend = stage.backend
})

test.after(async () => {
  await stage.teardown()
  fs.rmSync(home, { recursive: true, force: true })
})

test('the launcher gets the IPC message of the native daemon, which runs without Node', async () => {
  const binary = nativeDaemon.resolveDaemonBinary().path
  assert.ok(binary, 'the native daemon is built (npm run build)')
  const msg = await launchAgent(backend, KEYS)
  assert.equal(msg.error, false)
  assert.equal(msg.online, true)
  assert.equal(msg.machine_name, KEYS.machine_name)
  assert.equal(msg.public_key, KEYS.public_key)
  assert.equal(msg.pid, readPid(), 'agent.pid names the daemon that answered')

  // ps: the title names the version, the mode and PM2_HOME.
  const cmdline = fs.readFileSync(`/proc/${msg.pid}/cmdline`, 'utf8')
  assert.equal(cmdline.split('\0')[0], `PM2 Agent v${ourVersion} [native]: (${home})`)
  assert.equal(fs.realpathSync(`/proc/${msg.pid}/exe`), fs.realpathSync(binary))
  const maps = fs.readFileSync(`/proc/${msg.pid}/maps`, 'utf8')
  assert.ok(!/\.node\b|libnode/.test(maps), 'no Node and no addon in the native daemon')
})

test('host facts found without Node match what Node reports', async () => {
  const v = backend.verifyRequests[backend.verifyRequests.length - 1].body.data
  assert.equal(v.HOSTNAME, os.hostname())
  assert.equal(v.MEMORY, os.totalmem() / 1000 / 1000)
  assert.equal(v.CPUS.length, os.cpus().length)
  assert.equal(v.CPUS[0].model, os.cpus()[0].model)
  await waitUntil(() => backend.lastStatus && backend.lastStatus.data.process.length === 1, 20000, 100, 'a status with the app')
  const server = backend.lastStatus.data.server
  assert.equal(server.node_version, process.version, 'the launcher passes process.version')
  assert.equal(server.cpu.number, os.cpus().length)
  assert.equal(server.hostname, os.hostname())
})

test('kill over interactor.sock stops it cleanly', async () => {
  const pid = readPid()
  assert.ok(alive(pid))
  await killAgent()
  assert.equal(alive(pid), false)
  assert.equal(fs.existsSync(constants.INTERACTOR_RPC_PORT), false, 'interactor.sock removed')
  assert.equal(fs.existsSync(constants.INTERACTOR_PID_PATH), false, 'agent.pid removed')
})

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  test(`${sig} stops it cleanly`, async () => {
    const msg = await launchAgent(backend, KEYS)
    process.kill(msg.pid, sig)
    await waitUntil(() => !alive(msg.pid), 10000, 50, 'the daemon to exit')
    assert.equal(fs.existsSync(constants.INTERACTOR_RPC_PORT), false, 'interactor.sock removed')
    assert.equal(fs.existsSync(constants.INTERACTOR_PID_PATH), false, 'agent.pid removed')
    const online = await new Promise((resolve) => InteractorClient.ping(constants, (err, ok) => resolve(!err && ok)))
    assert.equal(online, false)
  })
}

test('a missing native binary fails daemonize with the paths and how to build it', async (t) => {
  const real = nativeDaemon.resolveDaemonBinary
  nativeDaemon.resolveDaemonBinary = () => ({ path: null, tried: ['/nowhere/keymetrics-agent-daemon.x'] })
  t.after(() => { nativeDaemon.resolveDaemonBinary = real })
  const err = await new Promise((resolve) => InteractorClient.daemonize(constants, KEYS, (e) => resolve(e)))
  assert.ok(err instanceof Error)
  assert.match(err.message, /PM2_AGENT_NATIVE=true/)
  assert.match(err.message, /\/nowhere\/keymetrics-agent-daemon\.x/)
  assert.match(err.message, /npm run build/)
})

test('started by hand without keys, it exits 1 with the JS message', async () => {
  const { spawnSync } = require('child_process')
  const env = Object.assign({}, process.env)
  for (const k of ['PM2_MACHINE_NAME', 'PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'PM2_AGENT_ONLINE']) delete env[k]
  const r = spawnSync(nativeDaemon.resolveDaemonBinary().path, [], { env, encoding: 'utf8', timeout: 10000 })
  assert.equal(r.status, 1)
  assert.match(r.stderr, /You must provide a PM2_MACHINE_NAME environment variable/)
})
