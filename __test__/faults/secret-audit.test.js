'use strict'
// Fault suite: the secret audit (black box, a real PM2 7). A distinctive
// secret key is given to the agent every way a launcher gives it (the
// launch infos, hence PM2_SECRET_KEY, plus KEYMETRICS_SECRET and PM2's
// SECRET_KEY alias in the launcher's environment); the agent runs with
// every debug namespace on (DEBUG=*) and is driven through the paths that
// log, reply, spawn and write. Then every place someone other than PM2.io
// could read is searched for the secret, raw, hex and base64:
//
//   - the IPC message to the launcher, the getInfos answer (`pm2 link info`);
//   - replies to refused and failed remote actions;
//   - the outgoing-traffic inspector (PM2_AGENT_INSPECT): its page and
//     /api/traffic, which show every packet sent, those replies included;
//   - argv / process titles of every process (`ps`);
//   - the environment of the PM2 daemon the watchdog resurrects, of the
//     apps it restores and of an app PM2 starts afterwards (cluster mode:
//     it inherits PM2's own environment);
//   - every file under PM2_HOME: agent.log (a backend echoing the request
//     body, a panic and the self-rescue included), agent.pid, dump.pm2 and
//     its backup (an app whose own environment holds the key included),
//     the disk spool, PM2's and the apps' logs. agent.json5 is the
//     launcher's store of the keys (mode 0600) and is the one exception.
//
// PM2.io itself gets the secret by design (verifyPM2 `private_id`, the
// WebSocket `X-KM-SECRET` header, the Axon cipher): not audited here.

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('crypto')
const fs = require('fs')
const path = require('path')

// The agent's output must land in agent.log (test runs would keep it on the console).
delete process.env.NODE_ENV
delete process.env.TRAVIS

const { Backend } = require('../helpers/backend')
const { PM2_BIN, tmpHome, pm2, jlist, writeApp, killPm2, waitUntil } = require('../helpers/pm2')

const home = tmpHome('ka-secret-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.DEBUG = '*'
process.env.PM2_AGENT_WATCHDOG_DELAY = '300'
process.env.PM2_AGENT_DUMP_INTERVAL = '500'
process.env.PM2_BINARY_PATH = PM2_BIN
process.env.PM2_AGENT_INSPECT = '0'
const { launchAgent, getInfos, killAgent, agentLog, MODE } = require('../helpers/agent')
const constants = require('../../constants')

const SECRET = `kaAudit${crypto.randomBytes(8).toString('hex')}Key`
const PUBLIC = 'audit-public-key'
const KEYS = { secret_key: SECRET, public_key: PUBLIC, machine_name: 'audit-machine', pm2_version: '7.0.4' }
const FORMS = {
  raw: SECRET,
  hex: Buffer.from(SECRET).toString('hex'),
  base64: Buffer.from(SECRET).toString('base64').replace(/=+$/, '')
}
// What the agent's children must never inherit (besides any value equal to
// the secret). NODE_CHANNEL_* is not in the list: Node sets it for every
// child spawned with an IPC channel, as PM2 spawns its daemon and apps.
const AGENT_VAR = /^(PM2_AGENT_\w*|PM2_(SECRET|PUBLIC)_KEY|KEYMETRICS_(SECRET|PUBLIC|NODE)|PM2_MACHINE_NAME|PM2_BINARY_PATH|PM2_REVERSE_INTERACT|KM_RECYCLE|AGENT_TRANSPORT_\w+)$/

/** The forms of the secret found in `data` (a string or a Buffer), as `where: form`. */
function leaks (where, data) {
  const text = Buffer.isBuffer(data) ? data.toString('latin1') : String(data)
  return Object.entries(FORMS).filter(([, f]) => text.includes(f)).map(([name]) => `${where}: ${name}`)
}

const alive = (pid) => { try { process.kill(pid, 0); return true } catch (e) { return false } }
const readPid = (file) => { try { return parseInt(fs.readFileSync(file, 'utf8')) } catch (e) { return NaN } }
const environ = (pid) => fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean)

/** Problems with a child's environment: the secret, or one of the agent's variables. */
function envProblems (what, pid) {
  const env = environ(pid)
  const found = leaks(`${what} (pid ${pid}) environment`, env.join('\n'))
  for (const kv of env) {
    const name = kv.slice(0, kv.indexOf('='))
    if (AGENT_VAR.test(name)) found.push(`${what} (pid ${pid}) inherits ${name}`)
  }
  return { env, found }
}

let backend
let launchMsg
let echoed = false

test.before(async () => {
  backend = await new Backend({
    // The first verifyPM2 answer echoes the request (its private_id is the
    // secret) without endpoints: the agent logs that answer, then retries.
    verify: (body) => {
      if (!echoed) { echoed = true; return { active: true, echo: body } }
      return backend.activeAnswer()
    }
  }).start()
  const eventer = writeApp(home, 'eventer.js',
    "let seq = 0\nsetInterval(() => process.send({ type: 'human:event', data: { __name: 'seq', seq: seq++ } }), 100)\n")
  const keyed = writeApp(home, 'keyed.js', 'setInterval(() => {}, 1000)\n')
  await pm2(home, ['start', eventer, '--name', 'eventer'])
  // An app whose own environment holds the key (a shell that exported it,
  // as with `pm2-runtime` in a container): PM2 keeps it in the app's env.
  await pm2(home, ['start', keyed, '--name', 'keyed'], { KEYMETRICS_SECRET: SECRET })
  const env = { KEYMETRICS_SECRET: SECRET, KEYMETRICS_PUBLIC: PUBLIC, SECRET_KEY: SECRET }
  Object.assign(process.env, env)
  try {
    launchMsg = await launchAgent(backend, KEYS)
  } finally {
    for (const k of Object.keys(env)) delete process.env[k]
  }
  await backend.waitConnected(30000)
})

test.after(async () => {
  await killAgent()
  await killPm2(home)
  if (backend) await backend.stop()
  fs.rmSync(home, { recursive: true, force: true })
})

test('the IPC message to the launcher carries no secret (the key is masked)', () => {
  assert.equal(launchMsg.error, false)
  assert.deepEqual(leaks('IPC message', JSON.stringify(launchMsg)), [])
  assert.equal(launchMsg.secret_key, '****' + SECRET.slice(-4), 'the field stays, masked like the CLI masks it')
})

test('getInfos (`pm2 link info`) answers without the secret', async () => {
  const infos = await waitUntil(async () => { const i = await getInfos(); return i && i.connected && i }, 20000, 100, 'an active agent')
  assert.deepEqual(leaks('getInfos', JSON.stringify(infos)), [])
  assert.deepEqual(Object.keys(infos).slice(0, 3), ['machine_name', 'public_key', 'secret_key'], 'JS key order kept')
  assert.equal(infos.secret_key, '****' + SECRET.slice(-4))
})

test('refused and failed remote actions reply without the secret', async () => {
  for (const method of ['delete', 'kill', '__proto__', 'restart']) {
    backend.send('trigger:pm2:action', { method_name: method, parameters: method === 'restart' ? { id: 4242 } : { name: 'keyed' } })
    const res = await backend.waitFor((p) => p.channel === 'trigger:pm2:result' && p.payload.meta.method_name === method, 20000, method)
    assert.ok(res.payload.ret.err, `${method} fails`)
    assert.deepEqual(leaks(`${method} reply`, JSON.stringify(res)), [])
  }
})

test('the inspector shows every packet sent, and no secret', async () => {
  // Recorded when handed to the transporter, so before the backend has it.
  await backend.waitFor((p) => p.channel === 'human:event', 20000, 'a custom event')
  const url = fs.readFileSync(path.join(home, 'agent-inspect.url'), 'utf8').trim()
  const api = await (await fetch(url.replace('/?', '/api/traffic?'))).text()
  const channels = JSON.parse(api).channels.map((c) => c.channel)
  for (const c of ['status', 'human:event', 'trigger:pm2:result']) assert.ok(channels.includes(c), channels.join(','))
  assert.deepEqual(leaks('/api/traffic', api), [])
  assert.deepEqual(leaks('inspector page', await (await fetch(url)).text()), [])
})

test('no process shows the secret in its argv or title (`ps`)', () => {
  const agent = readPid(constants.INTERACTOR_PID_PATH)
  assert.ok(alive(agent))
  const found = []
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmdline
    try { cmdline = fs.readFileSync(`/proc/${pid}/cmdline`) } catch (e) { continue }
    found.push(...leaks(`pid ${pid} cmdline`, cmdline))
  }
  assert.deepEqual(found, [])
  assert.match(fs.readFileSync(`/proc/${agent}/cmdline`, 'utf8'), /PM2 Agent v/)
})

test('the PM2 the watchdog resurrects, its apps and later apps inherit neither the keys nor the agent variables', async () => {
  const dumpFile = path.join(home, 'dump.pm2')
  await waitUntil(() => {
    try { return JSON.parse(fs.readFileSync(dumpFile, 'utf8')).map((e) => e.name).sort().join() === 'eventer,keyed' } catch (e) { return false }
  }, 20000, 100, 'the agent to dump the process list')
  const agent = readPid(constants.INTERACTOR_PID_PATH)
  const godPid = readPid(path.join(home, 'pm2.pid'))
  process.kill(godPid, 'SIGKILL')
  await waitUntil(() => !alive(godPid), 20000, 100, 'PM2 to die')
  await waitUntil(() => { const p = readPid(path.join(home, 'pm2.pid')); return p && p !== godPid && alive(p) }, 60000, 200, 'PM2 to be resurrected')
  const god = readPid(path.join(home, 'pm2.pid'))
  const { env: godEnv, found } = envProblems('resurrected PM2', god)
  assert.ok(godEnv.includes(`PM2_HOME=${home}`), 'PM2_HOME is kept')

  const list = await waitUntil(async () => {
    const l = await jlist(home)
    return l.filter((p) => p.pm2_env.status === 'online' && p.pid).length === 2 && l
  }, 60000, 300, 'the apps to be back online')
  for (const p of list) found.push(...envProblems(`resurrected app ${p.name}`, p.pid).found)

  // An app started afterwards in cluster mode inherits PM2's own environment.
  const later = writeApp(home, 'later.js', 'setInterval(() => {}, 1000)\n')
  await pm2(home, ['start', later, '--name', 'later', '-i', '1'])
  const clustered = await waitUntil(async () => {
    const p = (await jlist(home)).find((x) => x.name === 'later')
    return p && p.pm2_env.status === 'online' && p.pid
  }, 30000, 200, 'the cluster app online')
  found.push(...envProblems('cluster app started later', clustered).found)
  assert.deepEqual(found, [])
  assert.match(agentLog(), /pm2 resurrect done/)
  assert.equal(readPid(constants.INTERACTOR_PID_PATH), agent, 'the resurrect CLI started no other agent')
  assert.ok(alive(agent))
})

test('the disk spool holds no secret', async () => {
  backend.outage(true)
  try {
    await waitUntil(async () => {
      const i = await getInfos()
      return i && i.transport && i.transport.routes[0].spool && i.transport.routes[0].spool.records > 5
    }, 30000, 200, 'records in the spool')
    const dir = path.join(home, 'agent-spool')
    const found = []
    for (const f of walk(dir)) found.push(...leaks(path.relative(home, f), fs.readFileSync(f)))
    assert.ok(walk(dir).length > 0, 'spool files exist')
    assert.deepEqual(found, [])
  } finally {
    backend.outage(false)
  }
  await backend.waitConnected(30000)
})

test('a panic and the self-rescue that follows log no secret; the rescued agent has its keys', async () => {
  await killAgent()
  const verifies = backend.verifyRequests.length
  const env = { PM2_AGENT_FAULT_INJECTION: 'panic:status', KEYMETRICS_SECRET: SECRET, SECRET_KEY: SECRET }
  Object.assign(process.env, env)
  let first
  try {
    first = await launchAgent(backend, KEYS)
  } finally {
    for (const k of Object.keys(env)) delete process.env[k]
  }
  await waitUntil(() => !alive(first.pid), 20000, 100, 'the failing agent to leave')
  await waitUntil(() => { const p = readPid(constants.INTERACTOR_PID_PATH); return p && p !== first.pid && alive(p) }, 20000, 100, 'the rescued agent')
  await waitUntil(() => backend.verifyRequests.length >= verifies + 2, 20000, 100, 'the rescued agent to verify')
  const last = backend.verifyRequests[backend.verifyRequests.length - 1]
  assert.equal(last.body.private_id, SECRET, 'the rescued agent still proves itself to PM2.io')
  assert.match(agentLog(), /fault injection/)
})

function walk (dir) {
  const out = []
  let entries
  try { entries = fs.readdirSync(dir, { withFileTypes: true }) } catch (e) { return out }
  for (const e of entries) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) out.push(...walk(p))
    else if (e.isFile()) out.push(p)
  }
  return out
}

test(`no file under PM2_HOME but agent.json5 holds the secret (${MODE} agent, DEBUG=*)`, async () => {
  const log = agentLog()
  assert.match(log, /Endpoints field not present/, 'the echoed verifyPM2 answer was logged')
  assert.match(log, /DEBUG/, 'debug lines were written')
  const found = []
  const files = walk(home)
  for (const f of files) {
    if (f === constants.INTERACTION_CONF) continue
    found.push(...leaks(path.relative(home, f), fs.readFileSync(f)))
  }
  assert.ok(files.some((f) => f.endsWith('dump.pm2')) && files.some((f) => f.endsWith('agent.log')))
  assert.deepEqual(found, [])
  // The launcher's store of the keys: private to its owner.
  assert.equal(fs.statSync(constants.INTERACTION_CONF).mode & 0o777, 0o600)
})
