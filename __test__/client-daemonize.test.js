'use strict'
// InteractorClient.daemonize / launchAndInteract / launchOrAttach / update:
// the spawned script is __test__/fixtures/fake-daemon.js (through the internal
// InteractorClient._daemonScript), which plays the agent's IPC answers.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const childProcess = require('node:child_process')

const axon = require('pm2-axon')
const rpc = require('pm2-axon-rpc')
const InteractorClient = require('../src/InteractorClient.js')
const constants = require('../constants.js')
const {
  FAKE_DAEMON, tmpHome, cleanEnv, captureConsole, callbackArgs, isAlive, killIfAlive, waitFor, exitOf,
  startBackend, startRealAgent
} = require('./fixtures/client-helpers.js')

const SECRET = 'top-secret-key-abcd'
const MASKED = '****abcd'
const DISABLED = '[PM2.IO] Server DISABLED BY ADMINISTRATION contact support contact@keymetrics.io with reference to your public and secret keys)'
const PENDING = '[PM2.IO] You must upgrade your bucket in order to monitor more servers.'
const CONTACT = '[PM2.IO] Contact support contact@keymetrics.io and send us the error message'
const WARNING = '[PM2.IO][WARNING] Not managed to connect to PM2 Plus, retrying in background.'

function baseConf () {
  return {
    version_management: { active: true },
    public_key: 'pub-key',
    secret_key: SECRET,
    machine_name: 'box',
    pm2_version: '7.0.4',
    reverse_interact: true,
    info_node: 'http://127.0.0.1:9'
  }
}

/** Sets up a test: clean env (+ patch), temp home, the fake daemon script. */
function setup (t, mode, patch) {
  cleanEnv(t, Object.assign({ FAKE_DAEMON_MODE: mode }, patch || {}))
  const home = tmpHome(t)
  InteractorClient._daemonScript = FAKE_DAEMON
  t.after(() => { delete InteractorClient._daemonScript })
  t.after(() => {
    try {
      killIfAlive(JSON.parse(fs.readFileSync(path.join(home, 'fake-daemon.json'), 'utf8')).pid)
    } catch (e) {}
  })
  return { home, cst: constants.forHome(home) }
}

/** Resolves on the child's `event`, keeping this process alive meanwhile (the client unref()s it). */
function eventOf (child, event) {
  return new Promise((resolve) => {
    const keep = setInterval(() => {}, 1000)
    child.once(event, () => {
      clearInterval(keep)
      resolve()
    })
  })
}

/**
 * Runs `fn(cb)` and records the children it spawns and every call of `cb`.
 * `settled()` resolves once the spawned child has exited and the events
 * queued behind its exit (a late 'close') had time to run.
 * Note: Node never emits 'close' for a child whose IPC channel the parent
 * disconnected; it does when the child exits with the channel open.
 */
function run (t, fn) {
  const calls = []
  const spawned = []
  const origSpawn = childProcess.spawn
  childProcess.spawn = function () {
    const child = origSpawn.apply(this, arguments)
    child.__closed = false
    child.on('close', () => { child.__closed = true })
    spawned.push(child)
    return child
  }
  t.after(() => { childProcess.spawn = origSpawn })
  let resolveFirst
  const first = new Promise((resolve) => { resolveFirst = resolve })
  let ended = null
  fn((...args) => {
    calls.push(args)
    if (calls.length === 1) {
      childProcess.spawn = origSpawn
      const child = spawned[spawned.length - 1]
      // registered synchronously in the callback, so the exit cannot be missed
      const gone = !child || !child.pid || child.exitCode !== null || child.signalCode !== null
      ended = gone ? Promise.resolve() : eventOf(child, 'exit')
      resolveFirst(args)
    }
  })
  return {
    calls,
    spawned,
    first,
    settled: async () => {
      await first
      await ended
      await new Promise((resolve) => setTimeout(resolve, 300))
    }
  }
}

function fakeRecord (home) {
  return JSON.parse(fs.readFileSync(path.join(home, 'fake-daemon.json'), 'utf8'))
}

test('active: (null, msg, child) once, pid file, agent.log 0600, env and IPC on fd 3', async (t) => {
  const { home, cst } = setup(t, 'active')
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const [err, msg, child] = await r.first
  assert.equal(err, null)
  assert.equal(msg.error, false)
  assert.equal(msg.km_data.active, true)
  assert.equal(msg.public_key, 'pub-key')
  assert.equal(child, r.spawned[0])
  await r.settled()
  out.restore()
  assert.equal(r.calls.length, 1)
  assert.deepEqual(out.out, [])
  assert.deepEqual(out.err, [])

  assert.equal(fs.readFileSync(cst.INTERACTOR_PID_PATH, 'utf8'), String(child.pid))
  const rec = fakeRecord(home)
  assert.equal(rec.pid, child.pid)
  assert.deepEqual(rec.argv, [FAKE_DAEMON])
  assert.equal(rec.connected, true)
  assert.equal(rec.fd3IsSocket, true)
  assert.deepEqual(rec.env, {
    PM2_HOME: home,
    PM2_MACHINE_NAME: 'box',
    PM2_SECRET_KEY: SECRET,
    PM2_PUBLIC_KEY: 'pub-key',
    PM2_REVERSE_INTERACT: 'true',
    KEYMETRICS_NODE: 'http://127.0.0.1:9',
    PM2_VERSION: '7.0.4',
    DEBUG: 'interactor:*,-interactor:axon,-interactor:websocket,-interactor:pm2:client,-interactor:push',
    PM2_BINARY_PATH: require.main.filename
  })
  const log = fs.readFileSync(cst.INTERACTOR_LOG_FILE_PATH, 'utf8')
  assert.match(log, /fake-daemon active stdout line/)
  assert.match(log, /fake-daemon active stderr line/)
  if (process.platform !== 'win32') assert.equal(fs.statSync(cst.INTERACTOR_LOG_FILE_PATH).mode & 0o777, 0o600)
})

test('env: parent env wins over the defaults; AGENT_TRANSPORT_* passed when configured', async (t) => {
  const { home, cst } = setup(t, 'active', { PM2_MACHINE_NAME: 'from-parent-env', DEBUG: 'mine', FAKE_DAEMON_MARK: 'inherited' })
  const conf = Object.assign(baseConf(), { agent_transport_axon: 'false', agent_transport_websocket: 'true' })
  fs.writeFileSync(cst.INTERACTOR_LOG_FILE_PATH, 'older line\n', { mode: 0o644 })
  const r = run(t, (cb) => InteractorClient.daemonize(cst, conf, cb))
  await r.first
  await r.settled()
  const rec = fakeRecord(home)
  assert.equal(rec.env.PM2_MACHINE_NAME, 'from-parent-env')
  assert.equal(rec.env.DEBUG, 'mine')
  assert.equal(rec.env.FAKE_DAEMON_MARK, 'inherited')
  assert.equal(rec.env.AGENT_TRANSPORT_AXON, 'false')
  assert.equal(rec.env.AGENT_TRANSPORT_WEBSOCKET, 'true')
  // appended, and the existing log made owner-only
  assert.match(fs.readFileSync(cst.INTERACTOR_LOG_FILE_PATH, 'utf8'), /^older line\nfake-daemon/)
  if (process.platform !== 'win32') assert.equal(fs.statSync(cst.INTERACTOR_LOG_FILE_PATH).mode & 0o777, 0o600)
})

test('inactive but not pending is a success', async (t) => {
  const { cst } = setup(t, 'inactive')
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const [err, msg, child] = await r.first
  await r.settled()
  out.restore()
  assert.equal(err, null)
  assert.equal(msg.km_data.active, false)
  assert.ok(child)
  assert.equal(r.calls.length, 1)
  assert.deepEqual(out.out, [])
})

for (const [mode, lines] of [
  ['disabled', [DISABLED]],
  ['pending', [PENDING]],
  ['error', ['[PM2.IO][ERROR] bucket exploded', CONTACT]],
  ['giveup', ['[PM2.IO][ERROR] Connection refused', CONTACT]]
]) {
  test(`${mode}: the JS message on stdout, callback (msg) once`, async (t) => {
    const { cst } = setup(t, mode)
    const out = captureConsole(t)
    const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
    const args = await r.first
    await r.settled()
    out.restore()
    assert.equal(args.length, 1)
    assert.equal(args[0] instanceof Error, false)
    if (mode === 'giveup') assert.deepEqual(args[0], { error: true, msg: 'Connection refused' })
    else assert.equal(typeof args[0].km_data, 'object')
    assert.equal(r.calls.length, 1)
    assert.deepEqual(out.out, lines)
    assert.deepEqual(out.err, [])
    assert.ok(!out.all().includes(SECRET))
  })
}

test('PM2_SILENT silences the backend answers (callback unchanged)', async (t) => {
  const { cst } = setup(t, 'disabled', { PM2_SILENT: 'true' })
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const args = await r.first
  await r.settled()
  out.restore()
  assert.equal(args.length, 1)
  assert.equal(args[0].km_data.disabled, true)
  assert.deepEqual(out.out, [])
  assert.deepEqual(out.err, [])
})

test('a message with `log` is passed through without disconnecting', async (t) => {
  const { cst } = setup(t, 'log')
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const [err, msg, child] = await r.first
  assert.equal(err, null)
  assert.deepEqual(msg, { log: 'hello from the agent' })
  assert.equal(child.connected, true)
  // the channel stays open, so this child's 'close' does come (after its exit)
  if (!child.__closed) await eventOf(child, 'close')
  await r.settled()
  assert.equal(r.calls.length, 1)
})

test('exit code 1 without an answer: Agent has shutdown for unknown reason; the 7 s timer is cancelled', { timeout: 60000 }, async (t) => {
  const { cst } = setup(t, 'exit1')
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const args = await r.first
  await r.settled()
  assert.equal(args.length, 1)
  assert.ok(args[0] instanceof Error)
  assert.equal(args[0].message, 'Agent has shutdown for unknown reason')
  // past the 7 s answer deadline: no warning, no second callback
  await new Promise((resolve) => setTimeout(resolve, 8000))
  out.restore()
  assert.deepEqual(out.out, [])
  assert.equal(r.calls.length, 1)
})

test('exit code 0 without an answer: callback with no arguments', async (t) => {
  const { cst } = setup(t, 'exit0')
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const args = await r.first
  await r.settled()
  assert.deepEqual(args, [])
  assert.equal(r.calls.length, 1)
})

test('no answer within 7 s: warning, (null, {}, child) once, the channel is dropped', { timeout: 60000 }, async (t) => {
  const { cst } = setup(t, 'silent')
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const [err, msg, child] = await r.first
  assert.equal(err, null)
  assert.deepEqual(msg, {})
  assert.equal(child.connected, false)
  await r.settled() // the fake exits when its channel goes away
  out.restore()
  assert.equal(r.calls.length, 1)
  assert.deepEqual(out.out, [WARNING])
  assert.deepEqual(out.err, [])
})

test('a spawn failure reaches the callback once', async (t) => {
  const { cst } = setup(t, 'active', { NODEJS_EXECUTABLE: path.join(tmpHome(t), 'no-such-node') })
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const args = await r.first
  await r.settled()
  assert.equal(args.length, 1)
  assert.equal(args[0].code, 'ENOENT')
  assert.equal(r.calls.length, 1)
  // the daemon writes agent.pid (once it holds agent.lock), never the launcher
  assert.equal(fs.existsSync(cst.INTERACTOR_PID_PATH), false)
})

test('agent.pid of a process that is not an agent: left alone', { skip: process.platform !== 'linux' }, async (t) => {
  const { cst } = setup(t, 'active')
  const bystander = childProcess.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
  t.after(() => killIfAlive(bystander.pid))
  fs.writeFileSync(cst.INTERACTOR_PID_PATH, String(bystander.pid))
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const [err] = await r.first
  await r.settled()
  assert.equal(err, null)
  assert.equal(isAlive(bystander.pid), true)
  assert.equal(bystander.exitCode, null)
  assert.equal(bystander.signalCode, null)
})

test('agent.pid of a previous agent: it gets SIGTERM', async (t) => {
  const { cst } = setup(t, 'active')
  // its command line names InteractorDaemon, like a real agent's
  const previous = childProcess.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'InteractorDaemon.js'], { stdio: 'ignore' })
  t.after(() => killIfAlive(previous.pid))
  fs.writeFileSync(cst.INTERACTOR_PID_PATH, String(previous.pid))
  const exited = exitOf(previous)
  const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
  const [err, , child] = await r.first
  await r.settled()
  assert.equal(err, null)
  assert.deepEqual(await exited, { code: null, signal: 'SIGTERM' })
  assert.equal(fs.readFileSync(cst.INTERACTOR_PID_PATH, 'utf8'), String(child.pid))
})

for (const host of ['node', 'native']) {
  test(`agent.pid of one of our agents ([${host}] title): left alone, agent.lock decides`, { skip: process.platform !== 'linux' }, async (t) => {
    const { home, cst } = setup(t, 'active')
    // what `ps` shows for our daemon: the title is its whole command line
    const ours = childProcess.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
      stdio: 'ignore', argv0: `PM2 Agent v0.1.0 [${host}]: (${home})`
    })
    t.after(() => killIfAlive(ours.pid))
    await waitFor(() => fs.readFileSync(`/proc/${ours.pid}/cmdline`, 'utf8').startsWith('PM2 Agent v0.1.0'), 'the title')
    fs.writeFileSync(cst.INTERACTOR_PID_PATH, String(ours.pid))
    const r = run(t, (cb) => InteractorClient.daemonize(cst, baseConf(), cb))
    const [err] = await r.first
    await r.settled()
    assert.equal(err, null)
    assert.equal(isAlive(ours.pid), true)
    assert.equal(ours.signalCode, null)
  })
}

test('launchAndInteract: masked secret in the Using line, conf written, caller constants kept', async (t) => {
  const { home } = setup(t, 'active')
  const callerCst = { PM2_HOME: home, KEYMETRICS_ROOT_URL: 'root.keymetrics.io', CUSTOM: 1 }
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.launchAndInteract(callerCst, {
    public_key: 'pub-key', secret_key: SECRET, machine_name: 'box', pm2_version: '7.0.4'
  }, cb))
  const [err, msg, child] = await r.first
  await r.settled()
  out.restore()
  assert.equal(err, null)
  assert.equal(msg.km_data.active, true)
  assert.ok(child)
  assert.equal(r.calls.length, 1)
  assert.deepEqual(out.out, [`[PM2 I/O] Using: Public key: pub-key | Private key: ${MASKED} | Machine name: box`])
  assert.ok(!out.all().includes(SECRET))
  assert.equal(process.env.PM2_INTERACTOR_PROCESSING, 'true')

  // the caller's values stay, the missing agent constants are added for its PM2_HOME
  assert.equal(callerCst.PM2_HOME, home)
  assert.equal(callerCst.KEYMETRICS_ROOT_URL, 'root.keymetrics.io')
  assert.equal(callerCst.CUSTOM, 1)
  assert.equal(callerCst.INTERACTION_CONF, path.join(home, 'agent.json5'))
  assert.equal(callerCst.INTERACTOR_PID_PATH, path.join(home, 'agent.pid'))

  // the agent's root url is what the stored configuration uses
  const stored = JSON.parse(fs.readFileSync(path.join(home, 'agent.json5'), 'utf8'))
  assert.equal(stored.info_node, 'https://root.keymetrics.io')
  assert.equal(stored.secret_key, SECRET)
  assert.equal(fakeRecord(home).env.KEYMETRICS_NODE, 'https://root.keymetrics.io')
  assert.equal(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8'), String(child.pid))
})

test('launchAndInteract({}) fills the object for env PM2_HOME; PM2_SILENT hides the Using line', async (t) => {
  const { home } = setup(t, 'active', { PM2_SILENT: 'true' })
  process.env.PM2_HOME = home
  const empty = {}
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.launchAndInteract(empty, { public_key: 'p', secret_key: SECRET }, cb))
  const [err] = await r.first
  await r.settled()
  out.restore()
  assert.equal(err, null)
  assert.deepEqual(out.out, [])
  assert.deepEqual(out.err, [])
  assert.equal(empty.PM2_HOME, home)
  assert.equal(empty.INTERACTOR_RPC_PORT, path.join(home, 'interactor.sock'))
  assert.equal(empty.STATUS_INTERVAL, 1000)
})

test('launchAndInteract with a backend refusal: (msg) once', async (t) => {
  const { home } = setup(t, 'pending')
  const out = captureConsole(t)
  const r = run(t, (cb) => InteractorClient.launchAndInteract(constants.forHome(home), {
    public_key: 'p', secret_key: SECRET
  }, cb))
  const args = await r.first
  await r.settled()
  out.restore()
  assert.equal(args.length, 1)
  assert.equal(args[0].km_data.pending, true)
  assert.equal(r.calls.length, 1)
  assert.equal(out.out.length, 2)
  assert.equal(out.out[1], PENDING)
})

test('launchOrAttach: a running 1.0.8 agent is stopped over RPC before the new one starts', async (t) => {
  const { home, cst } = setup(t, 'active')
  const backend = await startBackend(t)
  const old = await startRealAgent(t, home, backend.url)
  const oldExit = exitOf(old.child)
  const r = run(t, (cb) => InteractorClient.launchOrAttach(cst, baseConf(), cb))
  const [err, msg, child] = await r.first
  await r.settled()
  assert.equal(err, null)
  assert.equal(msg.km_data.active, true)
  assert.deepEqual(await oldExit, { code: 0, signal: null })
  assert.notEqual(child.pid, old.child.pid)
  assert.equal(r.calls.length, 1)
})

test('update: kill over RPC, then relaunch from agent.json5', async (t) => {
  const { home, cst } = setup(t, 'active')
  fs.writeFileSync(cst.INTERACTION_CONF, JSON.stringify({ public_key: 'p', secret_key: SECRET, machine_name: 'm' }))
  let kills = 0
  const rep = axon.socket('rep')
  new rpc.Server(rep).expose({
    kill: function (cb) {
      kills++
      // like the agent: unlink the socket, answer, close shortly after
      fs.unlinkSync(cst.INTERACTOR_RPC_PORT)
      cb()
      setTimeout(() => rep.close(() => {}), 10)
    },
    getInfos: function (cb) { cb(null) }
  })
  await new Promise((resolve) => { rep.once('bind', resolve); rep.bind(cst.INTERACTOR_RPC_PORT) })
  t.after(() => new Promise((resolve) => rep.close(resolve)))
  const out = captureConsole(t)
  const args = await callbackArgs((cb) => InteractorClient.update(cst, cb))
  out.restore()
  assert.deepEqual(args, [null, { msg: 'Daemon launched' }])
  assert.equal(kills, 1)
  assert.equal(out.out[0], 'Interactor successfully killed')
  assert.equal(out.out[1], `[PM2 I/O] Using: Public key: p | Private key: ${MASKED} | Machine name: m`)
  await waitFor(() => fs.existsSync(path.join(home, 'fake-daemon.json')), 'the relaunched agent')
  assert.ok(!out.all().includes(SECRET))
})
