#!/usr/bin/env node
// Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the
// repository's captured data (src/push/testdata, docs/protocols.md samples),
// encoded by the real JS libraries the agent talks to: amp-message (pm2-axon),
// ws's frame writer, Node's crypto for the agent's cipher. Run it again after
// changing the captures: `node scripts/fuzz-corpus.js`. Seeds stay small.
'use strict'

const fs = require('fs')
const path = require('path')
const crypto = require('crypto')
const Message = require('amp-message')
const { Sender } = require('ws')

const root = path.join(__dirname, '..')
const out = path.join(root, 'fuzz', 'corpus')
const testdata = (f) => JSON.parse(fs.readFileSync(path.join(root, 'src/push/testdata', f), 'utf8'))

const monitorData = testdata('get_monitor_data.json')
const scenario = testdata('transactions_scenario.json')

const amp = (...args) => new Message(args).toBuffer()
const line = (...items) => Buffer.from(JSON.stringify(items) + '\n')

/** The agent's cipher: createCipher('aes256', secret) = EVP_BytesToKey(MD5) + AES-256-CBC. */
function cipherHex (secret, text) {
  const pw = Buffer.from(secret)
  const d1 = crypto.createHash('md5').update(pw).digest()
  const d2 = crypto.createHash('md5').update(d1).update(pw).digest()
  const d3 = crypto.createHash('md5').update(d2).update(pw).digest()
  const c = crypto.createCipheriv('aes-256-cbc', Buffer.concat([d1, d2]), d3)
  return Buffer.concat([c.update(text), c.final()]).toString('hex')
}
// The fuzz harness deciphers with this secret (src/fuzzing.rs).
const SECRET = 'fuzz-secret-key'

/** One server → client WebSocket frame, unmasked, as the ws server writes it. */
function wsFrame (data, opcode, fin = true) {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data)
  return Buffer.concat(Sender.frame(buf, { fin, rsv1: false, opcode, mask: false, readOnly: false }))
}

function http (status, headers, body) {
  const head = [`HTTP/1.1 ${status}`, ...headers].join('\r\n') + '\r\n\r\n'
  return Buffer.concat([Buffer.from(head), Buffer.from(body)])
}

// A trimmed process of the captured getMonitorData reply.
const proc = monitorData[0]
const trimmedProc = { pid: proc.pid, name: proc.name, pm_id: proc.pm_id, monit: proc.monit, pm2_env: { name: proc.pm2_env.name, status: proc.pm2_env.status, pm_id: proc.pm2_env.pm_id, axm_monitor: proc.pm2_env.axm_monitor, axm_actions: proc.pm2_env.axm_actions } }
const processRef = { name: proc.name, pm_id: proc.pm_id, rev: null }
const traces = scenario.steps.filter((s) => s.op === 'trace').map((s) => s.packet)
const processEvents = scenario.steps.filter((s) => s.op === 'event').map((s) => s.packet)

const commands = [
  { method_name: 'ping', parameters: { name: 'app' } },
  { method_name: 'restart', parameters: { name: 'capapp' } },
  { action_name: 'km:heapdump', process_id: 0, opts: { timeout: 1000 } },
  { action_name: 'hello', process: { pm_id: 0 }, app_name: 'capapp', uuid: 'u-1' }
]

const activeAnswer = JSON.stringify({ endpoints: { web: 'http://127.0.0.1', ws: 'ws://127.0.0.1:47022', push: 'tcp://127.0.0.1:43554', reverse: 'tcp://127.0.0.1:43555' }, active: true, pending: false, disabled: false, new: false })

const seeds = {
  amp_frame: {
    hi: amp('hi'),
    log_out: amp('log:out', { a: 1 }),
    six_args: amp('x', Buffer.from([0xde, 0xad]), 42, null, null, true),
    process_event: amp('process:event', { event: 'online', process: { name: 'app', pm_id: 0 } }),
    rpc_reply: Buffer.from('120000001b6a3a7b2261726773223a5b7b226d7367223a22706f6e67227d5d7d00000008733a363730313a31', 'hex'),
    stream: Buffer.concat([amp('a'), amp('b', [1, 2]), amp('c', 'é')]),
    fifteen: amp(...Array.from({ length: 15 }, (_, i) => i))
  },
  rpc_message: {
    methods_request: amp({ type: 'methods' }, '6701:1'),
    call_getinfos: amp({ type: 'call', method: 'getInfos', args: [] }, '6701:2'),
    call_kill: amp({ type: 'call', method: 'kill', args: [] }, '6701:3'),
    reply_args: amp({ args: [{ msg: 'pong' }] }, '6701:4'),
    reply_error: amp({ error: 'boom', stack: 'Error: boom\n    at x (/app/a.js:1:1)' }, '6701:5'),
    reply_methods: amp({ methods: { getMonitorData: { name: 'getMonitorData', params: ['env', 'cb'] }, ping: { name: 'ping', params: ['cb'] } } }, '6701:6'),
    reply_monitor: amp({ args: [[trimmedProc]] }, '6701:7'),
    bare_call: Buffer.from(JSON.stringify({ type: 'call', method: 'getInfos', args: [] }))
  },
  nssocket_line: {
    captured_action: line('trigger:pm2:action', '29c1278a35ca413a97a70966f499e037528a7b4455f58e115b0d3eea906b677fddd888f3401ad635d9fa62699ed78e3d66ecb686bece565673fb934ba6c64488'),
    ask: line('ask', null),
    two_segments: line('a', 'b', 1),
    stream: Buffer.concat([line('ask', null), line('trigger:action', cipherHex(SECRET, JSON.stringify(commands[2]))), Buffer.from('\n["partial"')])
  },
  cipher_payload: {
    ...Object.fromEntries(commands.map((c, i) => [`hex_${i}`, Buffer.from(cipherHex(SECRET, JSON.stringify(c)))])),
    line: line('trigger:pm2:action', cipherHex(SECRET, JSON.stringify(commands[0]))),
    plain: Buffer.from(JSON.stringify(commands[3])),
    empty_plain: Buffer.from(cipherHex(SECRET, ''))
  },
  ipc_line: {
    success: Buffer.from('{"error":false,"km_data":{"endpoints":{"web":"http://127.0.0.1","ws":"ws://127.0.0.1:47022","push":"x","reverse":"y"},"active":true,"pending":false,"disabled":false},"online":true,"pid":31445,"machine_name":"m1","public_key":"pub","secret_key":"sec"}\n'),
    refused: Buffer.from(JSON.stringify({ error: true, msg: 'Connection refused, you might have hit the limit of agents you can connect' }) + '\n'),
    two: Buffer.from('{"hello":"child","n":1}\n{"km_data":{"error":true,"msg":"x"}}\n')
  },
  verify_body: {
    active: http('200 OK', ['Content-Type: application/json', `Content-Length: ${Buffer.byteLength(activeAnswer)}`, 'Connection: close'], activeAnswer),
    chunked: http('200 OK', ['Transfer-Encoding: chunked'], `${Buffer.byteLength(activeAnswer).toString(16)}\r\n${activeAnswer}\r\n0\r\n\r\n`),
    continue_then_inactive: Buffer.concat([Buffer.from('HTTP/1.1 100 Continue\r\n\r\n'), http('403 Forbidden', ['Content-Length: 42'], JSON.stringify({ active: false, error: true, msg: 'no plan' }).padEnd(42))]),
    disabled_until_close: http('200 OK', [], JSON.stringify({ disabled: true, active: true })),
    garbage: http('502 Bad Gateway', ['Content-Length: 11'], '<html></ht')
  },
  ws_message: {
    action: wsFrame(JSON.stringify({ channel: 'trigger:pm2:action', payload: commands[0] }), 1),
    scoped: wsFrame(JSON.stringify({ channel: 'trigger:scoped_action', payload: commands[3] }), 1),
    resend: wsFrame(JSON.stringify({ channel: 'status:resend' }), 1),
    binary_json: wsFrame(JSON.stringify({ channel: 'trigger:action', payload: commands[2] }), 2),
    ping_close: Buffer.concat([wsFrame('', 9), wsFrame(Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]), 8)]),
    fragmented: Buffer.concat([wsFrame('{"channel":"trigger:pm2:action",', 1, false), wsFrame('"payload":{"method_name":"ping"}}', 0, true)]),
    text_only: Buffer.from(JSON.stringify({ channel: 'trigger:pm2:action', payload: commands[1] }))
  },
  monitor_data: {
    // A real PM2 7.0.4 reply (env vars trimmed in the capture).
    captured: Buffer.from(JSON.stringify({ args: [monitorData] })),
    two_ticks: Buffer.concat([Buffer.from(JSON.stringify({ args: [[trimmedProc]] })), Buffer.from([0]), Buffer.from(JSON.stringify({ args: [[{ ...trimmedProc, monit: { cpu: 3, memory: 1 } }, { pm_id: 1 }]] }))]),
    error: Buffer.from(JSON.stringify({ error: 'boom', stack: 's' }))
  },
  bus_packet: {
    logs: Buffer.concat([amp('log:out', { process: processRef, data: 'hello\n', at: 1700000000000 }), amp('log:err', { process: processRef, data: 'oops\n', at: 1700000000001 })]),
    exception: amp('process:exception', { process: processRef, data: { message: 'boom', stack: 'Error: boom\n    at Object.<anonymous> (/app/server.js:6:9)\n    at Module._compile (node:internal/modules/cjs/loader:1105:14)' }, at: 1 }),
    events: Buffer.concat(processEvents.slice(0, 3).map((p) => amp('process:event', p))),
    human: amp('human:event', { process: processRef, data: { __name: 'signup', user: 1 } }),
    reply: amp('axm:reply', { process: processRef, data: { return: { success: true }, action_name: 'hello' } }),
    profile: amp('axm:reply', { process: processRef, data: { return: { heapdump: true, dump_file: '/tmp/x.heapprofile' }, action_name: 'km:heapdump' } }),
    traces: Buffer.concat(traces.slice(0, 3).map((t) => amp('axm:trace', t)))
  }
}

let total = 0
for (const [target, files] of Object.entries(seeds)) {
  const dir = path.join(out, target)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  for (const [name, bytes] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, name), bytes)
    total += bytes.length
  }
}
console.log(`fuzz corpora written to ${path.relative(root, out)} (${total} bytes)`)
