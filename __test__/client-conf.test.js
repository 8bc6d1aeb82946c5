'use strict'
// InteractorClient.getOrSetConf: precedence env > options > agent.json5, the
// file's format and mode, old unquoted-key files, and the errors.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const InteractorClient = require('../src/InteractorClient.js')
const constants = require('../constants.js')
const { tmpHome, cleanEnv, captureConsole, callbackArgs } = require('./fixtures/client-helpers.js')

const getOrSetConf = (cst, infos) => callbackArgs((cb) => InteractorClient.getOrSetConf(cst, infos, cb))
const mode = (file) => fs.statSync(file).mode & 0o777

test('options are written to agent.json5 as 4-space JSON in the JS key order, mode 0600', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  const [err, conf] = await getOrSetConf(cst, {
    public_key: 'pub1', secret_key: 'sec1', machine_name: 'box', pm2_version: '7.0.4', info_node: 'http://km.local'
  })
  assert.equal(err, null)
  const expected = {
    version_management: { active: true },
    public_key: 'pub1',
    secret_key: 'sec1',
    machine_name: 'box',
    pm2_version: '7.0.4',
    reverse_interact: true,
    info_node: 'http://km.local'
  }
  assert.deepEqual(conf, expected)
  const text = fs.readFileSync(cst.INTERACTION_CONF, 'utf8')
  assert.equal(text, JSON.stringify(expected, null, 4))
  assert.deepEqual(Object.keys(JSON.parse(text)), Object.keys(expected))
  if (process.platform !== 'win32') assert.equal(mode(cst.INTERACTION_CONF), 0o600)
})

test('an existing world-readable agent.json5 is made 0600', { skip: process.platform === 'win32' }, async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  fs.writeFileSync(cst.INTERACTION_CONF, JSON.stringify({ public_key: 'p', secret_key: 's' }))
  fs.chmodSync(cst.INTERACTION_CONF, 0o644)
  const [err] = await getOrSetConf(cst, null)
  assert.equal(err, null)
  assert.equal(mode(cst.INTERACTION_CONF), 0o600)
})

test('precedence: env > options > file; file values fill the gaps', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  fs.writeFileSync(cst.INTERACTION_CONF, JSON.stringify({
    public_key: 'file-pub',
    secret_key: 'file-sec',
    machine_name: 'file-machine',
    pm2_version: '1.0.0',
    info_node: 'http://file.node'
  }, null, 4))

  let [err, conf] = await getOrSetConf(cst, null)
  assert.equal(err, null)
  assert.equal(conf.public_key, 'file-pub')
  assert.equal(conf.secret_key, 'file-sec')
  assert.equal(conf.machine_name, 'file-machine')
  assert.equal(conf.pm2_version, '1.0.0')
  assert.equal(conf.info_node, 'http://file.node')

  ;[err, conf] = await getOrSetConf(cst, { public_key: 'opt-pub', machine_name: 'opt-machine' })
  assert.equal(conf.public_key, 'opt-pub')
  assert.equal(conf.secret_key, 'file-sec')
  assert.equal(conf.machine_name, 'opt-machine')

  process.env.PM2_PUBLIC_KEY = 'env-pub'
  process.env.KEYMETRICS_SECRET = 'env-sec'
  process.env.INSTANCE_NAME = 'env-machine'
  process.env.PM2_VERSION = '9.9.9'
  process.env.KEYMETRICS_NODE = 'http://env.node'
  ;[err, conf] = await getOrSetConf(cst, {
    public_key: 'opt-pub', secret_key: 'opt-sec', machine_name: 'opt-machine', pm2_version: '2', info_node: 'http://opt'
  })
  assert.equal(err, null)
  assert.equal(conf.public_key, 'env-pub')
  assert.equal(conf.secret_key, 'env-sec')
  assert.equal(conf.machine_name, 'env-machine')
  assert.equal(conf.pm2_version, '9.9.9')
  assert.equal(conf.info_node, 'http://env.node')

  // PM2_* beats the KEYMETRICS_* / INSTANCE_NAME aliases
  process.env.PM2_SECRET_KEY = 'env-sec-2'
  process.env.PM2_MACHINE_NAME = 'env-machine-2'
  ;[err, conf] = await getOrSetConf(cst, null)
  assert.equal(conf.secret_key, 'env-sec-2')
  assert.equal(conf.machine_name, 'env-machine-2')
  // and what was resolved is what is stored
  assert.equal(JSON.parse(fs.readFileSync(cst.INTERACTION_CONF, 'utf8')).secret_key, 'env-sec-2')
})

test('an old agent.json5 with unquoted keys is still read', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  fs.writeFileSync(cst.INTERACTION_CONF, [
    '{',
    '    public_key: "old-pub",',
    '    secret_key: "old-sec",',
    '    machine_name: "old-machine",',
    '    version_management: {',
    '        active: false',
    '    }',
    '}'
  ].join('\n'))
  const [err, conf] = await getOrSetConf(cst, {})
  assert.equal(err, null)
  assert.equal(conf.public_key, 'old-pub')
  assert.equal(conf.secret_key, 'old-sec')
  assert.equal(conf.machine_name, 'old-machine')
  assert.deepEqual(conf.version_management, { active: false })
  // rewritten as plain JSON
  assert.equal(JSON.parse(fs.readFileSync(cst.INTERACTION_CONF, 'utf8')).public_key, 'old-pub')
})

test('valid JSON whose values contain " word:" is read as JSON (the regex hack alone broke it)', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  fs.writeFileSync(cst.INTERACTION_CONF, JSON.stringify({ public_key: 'p', secret_key: 's', machine_name: 'rack 4 slot:2' }, null, 4))
  const [err, conf] = await getOrSetConf(cst, null)
  assert.equal(err, null)
  assert.equal(conf.machine_name, 'rack 4 slot:2')
  assert.equal(conf.public_key, 'p')
})

test('missing keys: secret checked first, then public; nothing is written', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  const none = await getOrSetConf(cst, {})
  let err = none[0]
  assert.ok(err instanceof Error)
  assert.equal(err.message, 'secret key is not defined')
  assert.equal(none[1], undefined)
  ;[err] = await getOrSetConf(cst, { public_key: 'p' })
  assert.equal(err.message, 'secret key is not defined')
  ;[err] = await getOrSetConf(cst, { secret_key: 's' })
  assert.equal(err.message, 'public key is not defined')
  assert.equal(fs.existsSync(cst.INTERACTION_CONF), false)
})

test('an unreadable agent.json5 is ignored silently', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  fs.writeFileSync(cst.INTERACTION_CONF, 'this is not json at all {')
  const out = captureConsole(t)
  const [err] = await getOrSetConf(cst, {})
  out.restore()
  assert.equal(err.message, 'secret key is not defined')
  assert.deepEqual(out.err, [])
})

test('defaults: machine name from the hostname, info_node from KEYMETRICS_ROOT_URL, reverse_interact true', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  const [err, conf] = await getOrSetConf(cst, { public_key: 'p', secret_key: 's' })
  assert.equal(err, null)
  assert.match(conf.machine_name, new RegExp('^' + os.hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '-[0-9a-f]{4}$'))
  assert.equal(conf.info_node, cst.KEYMETRICS_ROOT_URL)
  assert.equal(conf.reverse_interact, true)
  assert.equal('pm2_version' in conf, true)
  assert.equal(conf.pm2_version, undefined)
  assert.equal('pm2_version' in JSON.parse(fs.readFileSync(cst.INTERACTION_CONF, 'utf8')), false)
})

test('info_node without a scheme: https:// in the result, raw in the file', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  const [err, conf] = await getOrSetConf(cst, { public_key: 'p', secret_key: 's', info_node: 'root.keymetrics.io' })
  assert.equal(err, null)
  assert.equal(conf.info_node, 'https://root.keymetrics.io')
  assert.equal(JSON.parse(fs.readFileSync(cst.INTERACTION_CONF, 'utf8')).info_node, 'root.keymetrics.io')
})

test('agent_transport_* keys are kept (1.0.8 files), after info_node, only when defined', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = constants.forHome(home)
  fs.writeFileSync(cst.INTERACTION_CONF, JSON.stringify({
    public_key: 'p', secret_key: 's', agent_transport_websocket: 'false', agent_transport_axon: 'true'
  }))
  process.env.AGENT_TRANSPORT_WEBSOCKET = 'true'
  const [err, conf] = await getOrSetConf(cst, null)
  assert.equal(err, null)
  assert.equal(conf.agent_transport_websocket, 'true')
  assert.equal(conf.agent_transport_axon, 'true')
  const keys = Object.keys(JSON.parse(fs.readFileSync(cst.INTERACTION_CONF, 'utf8')))
  assert.deepEqual(keys.slice(-3), ['info_node', 'agent_transport_websocket', 'agent_transport_axon'])
})

test('a write failure prints the JS message on stderr and returns the error', async (t) => {
  cleanEnv(t)
  const home = tmpHome(t)
  const cst = Object.assign({}, constants.forHome(home), { INTERACTION_CONF: path.join(home, 'missing-dir', 'agent.json5') })
  const out = captureConsole(t)
  const [err] = await getOrSetConf(cst, { public_key: 'p', secret_key: 's' })
  out.restore()
  assert.ok(err instanceof Error)
  assert.equal(err.code, 'ENOENT')
  assert.deepEqual(out.err, [`Error when writting configuration file ${cst.INTERACTION_CONF}`])
  assert.deepEqual(out.out, [])
})
