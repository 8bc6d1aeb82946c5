'use strict'
// Fault suite: a hostile PM2.io. verifyPM2 answers garbage, 50 MB bodies
// (with and without Content-Length) or nothing at all; the WebSocket peer
// sends malformed and 20 MB frames, or accepts TCP and never answers the
// upgrade. Through all of it the one agent process stays alive, its RSS
// (sampled from /proc) stays under a bound, it says why in getInfos and
// agent.log, and it recovers once the backend behaves again. Black box: a
// real PM2 with an app, the agent launched by InteractorClient.

const test = require('node:test')
const assert = require('node:assert/strict')
const { tmpHome, waitUntil } = require('../helpers/pm2')

const home = tmpHome('ka-hostile-')
process.env.PM2_HOME = home
process.env.PM2_SILENT = 'true'
process.env.PM2_AGENT_WATCHDOG = 'false'
process.env.AGENT_TRANSPORT_WEBSOCKET = 'true'
const InteractorClient = require('../../src/InteractorClient')
const constants = require('../../constants')
const { idleStage, getInfos, waitForInboundDrops, agentLog, agentProcesses, rssOf, alive, MODE } = require('../helpers/agent')

const KEYS = { secret_key: 'hostile-secret-9876', public_key: 'hostile-pub', machine_name: 'hostile-machine' }
const MB = 1024 * 1024
// The agent's RSS may grow this much over what it used once running
// normally: less than either hostile payload (50 MB, 20 MB), so buffering
// one would fail. (The agent caps a verifyPM2 body at 4 MiB and a WebSocket
// message at 16 MiB, refusing both from their announced size; measured
// growth: about 6 MiB on Node, under 1 MiB native.)
const RSS_GROWTH_BOUND = 16 * MB

let stage
let agentPid = 0
let baselineRss = 0
let peakRss = 0
let sampler = null


/** getInfos, or null while the agent answers nothing. */
async function infos () {
  try { return await getInfos() } catch (e) { return null }
}

/** Resolves once getInfos' last_error matches `re`; returns that text. */
async function lastErrorMatching (re, timeoutMs, what) {
  let seen = null
  await waitUntil(async () => {
    const i = await infos()
    seen = i && i.last_error
    return typeof seen === 'string' && re.test(seen)
  }, timeoutMs, 200, `${what} in getInfos.last_error (last: ${seen})`)
  return seen
}

/** Waits for the agent to be connected and pushing status again. */
async function recovered (what) {
  const from = stage.backend.statuses.length
  await waitUntil(() => stage.backend.sockets.size === 1, 60000, 100, `${what}: a WebSocket connection`)
  await waitUntil(() => stage.backend.statuses.length > from + 1, 30000, 100, `${what}: status again`)
  await waitUntil(async () => { const i = await infos(); return i && i.connected === true }, 20000, 200, `${what}: connected in getInfos`)
}

function assertStillTheAgent () {
  assert.ok(alive(agentPid), 'the agent is alive')
  assert.deepEqual(agentProcesses(home), [agentPid], 'still exactly one agent')
}

/** The agent.log lines written since `from` (a length of the log). */
const logSince = (from) => agentLog().slice(from)

test.before(async () => {
  stage = await idleStage(home)
})

test.after(async () => {
  clearInterval(sampler)
  stage.backend.rawVerify = null
  stage.backend.silentUpgrade = false
  if (stage) await stage.teardown()
  if (peakRss) console.log(`# hostile backend (${MODE}): agent RSS ${(baselineRss / MB).toFixed(1)} MiB at rest, peak ${(peakRss / MB).toFixed(1)} MiB`)
})

test('garbage verifyPM2 answers: the agent keeps retrying and says why', async () => {
  // A first, normal run: the RSS baseline of a connected agent.
  const msg = await new Promise((resolve, reject) => InteractorClient.launchAndInteract({}, Object.assign({ info_node: stage.backend.url }, KEYS),
    (err, m) => err ? reject(new Error(JSON.stringify(err))) : resolve(m)))
  agentPid = msg.pid
  await recovered('first start')
  baselineRss = rssOf(agentPid)
  peakRss = baselineRss
  sampler = setInterval(() => { peakRss = Math.max(peakRss, rssOf(agentPid)) }, 50)
  sampler.unref()

  // From now on verifyPM2 answers garbage; the agent meets it at its next
  // start: stop it and launch again (the launcher gives up waiting after
  // 7 s, as with any unreachable backend).
  await new Promise((resolve) => InteractorClient.killInteractorDaemon(constants, () => resolve()))
  await waitUntil(() => !alive(agentPid), 10000, 50, 'the agent to stop')
  let garbage = 0
  stage.backend.rawVerify = (req, res) => {
    garbage++
    res.writeHead(200, { 'Content-Type': 'application/json' })
    res.end(garbage % 2 ? '<html>502 Bad Gateway</html>' : '{"active": tru')
  }
  const from = agentLog().length
  const launched = new Promise((resolve) => InteractorClient.launchAndInteract({}, Object.assign({ info_node: stage.backend.url }, KEYS), (err, m) => resolve({ err, m })))
  agentPid = await waitUntil(() => { const a = agentProcesses(home); return a.length === 1 && a[0] }, 20000, 50, 'the agent process')
  await lastErrorMatching(/./, 20000, 'a verification error')
  await waitUntil(() => garbage >= 3, 20000, 100, 'three garbage answers')
  const { err } = await launched
  assert.equal(err, null, 'the launcher is told it goes on in the background, not an error')
  assert.match(logSince(from), /verifyPM2 failed: .+; retrying/)
  assertStillTheAgent()
})

test('50 MB verifyPM2 answers (announced and chunked) are refused without reading them', async () => {
  const from = agentLog().length
  let sent = 0
  const big = Buffer.alloc(MB, 0x61)
  stage.backend.rawVerify = (req, res) => {
    sent++
    const chunked = sent % 2 === 0
    res.writeHead(200, chunked ? { 'Content-Type': 'application/json' } : { 'Content-Type': 'application/json', 'Content-Length': String(50 * MB) })
    let n = 0
    const pump = () => {
      while (n < 50) {
        n++
        if (!res.write(big)) return res.once('drain', pump)
      }
      res.end()
    }
    res.on('error', () => {})
    res.socket.on('error', () => {})
    pump()
  }
  await waitUntil(() => sent >= 4, 60000, 100, 'four 50 MB answers')
  const why = await lastErrorMatching(/larger than|limit|too (big|large)/i, 30000, 'the size refusal')
  assert.ok(why.length < 500, 'the reason is short')
  assert.match(logSince(from), /larger than|limit/i)
  assertStillTheAgent()
})

test('a silent verifyPM2 (request read, never answered) times out and is retried', async () => {
  const from = agentLog().length
  const held = []
  stage.backend.rawVerify = (req, res) => { held.push(res) }
  await lastErrorMatching(/time[ds]? ?out/i, 60000, 'the timeout')
  assert.match(logSince(from), /time[ds]? ?out/i)
  assert.ok(held.length >= 1)
  assertStillTheAgent()
  for (const res of held) res.destroy()
})

test('verifyPM2 behaves again: the agent verifies, connects and pushes status', async () => {
  stage.backend.rawVerify = null
  await recovered('after the hostile verifyPM2')
  const i = await infos()
  assert.equal(i.last_error, undefined, 'no stale error once connected')
  assertStillTheAgent()
})

test('malformed WebSocket messages are dropped; protocol violations close and reconnect', async () => {
  const from = agentLog().length
  const statuses = stage.backend.statuses.length
  // Application-level garbage: the connection stays.
  for (const m of ['{not json', '42', 'null', '[]', '{"channel": 5, "payload": 1}', '{"channel":"trigger:action"}',
    '{"channel":"trigger:action","payload":{"process_id":"x","action_name":{"a":1}}}', '\u0000\u0001', '']) {
    for (const ws of stage.backend.sockets) ws.send(m)
  }
  for (const ws of stage.backend.sockets) ws.send(Buffer.from([0xff, 0xfe, 0x00, 0x01]), { binary: true })
  await waitUntil(() => stage.backend.statuses.length > statuses + 2, 20000, 100, 'status after the garbage')
  assertStillTheAgent()
  // Each unusable message is counted, per channel and reason (getInfos.drops).
  const expected = {
    '(unparsed) inbound: not a JSON object': 6,
    '(unparsed) inbound: no channel': 1,
    '(unparsed) inbound: not UTF-8': 1,
    'trigger:action inbound: no payload': 1
  }
  await waitForInboundDrops(expected)
  // Frame-level violations: each closes the connection; the agent comes back.
  const violations = [
    Buffer.from([0x83, 0x00]), // reserved opcode 3
    Buffer.from([0x81, 0x02, 0xff, 0xfe]), // text frame, invalid UTF-8
    Buffer.from([0xf1, 0x00]) // RSV bits set, no extension negotiated
  ]
  for (const bytes of violations) {
    const [ws] = [...stage.backend.sockets]
    assert.ok(ws, 'connected before the violation')
    const closed = new Promise((resolve) => ws.once('close', resolve))
    ws._socket.write(bytes)
    await closed
    await recovered(`after ${bytes.toString('hex')}`)
  }
  assert.match(logSince(from), /WebSocket|Websocket|websocket/)
  assertStillTheAgent()
})

test('a 20 MB WebSocket message is refused from its header and the agent reconnects', async () => {
  const from = agentLog().length
  const [ws] = [...stage.backend.sockets]
  const closed = new Promise((resolve) => ws.once('close', resolve))
  const payload = JSON.stringify({ channel: 'trigger:action', payload: { pad: 'x'.repeat(20 * MB) } })
  ws.send(payload, () => {})
  await closed
  await recovered('after the 20 MB message')
  assert.match(logSince(from), /too (long|big|large)|limit|size/i)
  assertStillTheAgent()
})

test('a silent WebSocket peer (TCP accepted, upgrade never answered) times out; the agent comes back', async () => {
  const from = agentLog().length
  stage.backend.silentUpgrade = true
  for (const ws of stage.backend.sockets) ws.terminate()
  await waitUntil(() => stage.backend.silentSockets.size >= 1, 30000, 100, 'a held upgrade')
  await waitUntil(() => /handshake: timed out/.test(logSince(from)), 40000, 200, 'the handshake timeout in agent.log')
  const i = await infos()
  assert.equal(i.connected, false)
  assert.match(JSON.stringify(i), /handshake: timed out/, 'getInfos says why')
  stage.backend.silentUpgrade = false
  for (const s of stage.backend.silentSockets) s.destroy()
  await recovered('after the silent peer')
  assertStillTheAgent()
})

test('through all of it the agent stayed under its memory bound', () => {
  clearInterval(sampler)
  assert.ok(baselineRss > 0)
  assert.ok(peakRss - baselineRss < RSS_GROWTH_BOUND,
    `RSS grew from ${(baselineRss / MB).toFixed(1)} to ${(peakRss / MB).toFixed(1)} MiB (bound: +${RSS_GROWTH_BOUND / MB} MiB)`)
})
