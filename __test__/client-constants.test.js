'use strict'
// constants.js: the agent's constants, PM2_HOME resolution, typed PM2_<KEY>
// overrides, Windows pipes and rebuilding for another PM2_HOME.
const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const os = require('node:os')
const childProcess = require('node:child_process')

const constants = require('../constants.js')
const { build } = constants

test('module constants follow env PM2_HOME, else ~/.pm2', () => {
  const code = 'process.stdout.write(JSON.stringify(require(process.argv[1])))'
  const file = path.join(__dirname, '..', 'constants.js')
  const env = Object.assign({}, process.env)
  delete env.PM2_HOME
  const withHome = JSON.parse(childProcess.execFileSync(process.execPath, ['-e', code, file],
    { env: Object.assign({}, env, { PM2_HOME: '/tmp/ka-some-home' }) }))
  assert.equal(withHome.PM2_HOME, '/tmp/ka-some-home')
  assert.equal(withHome.INTERACTOR_RPC_PORT, '/tmp/ka-some-home/interactor.sock')
  const noHome = JSON.parse(childProcess.execFileSync(process.execPath, ['-e', code, file], { env }))
  assert.equal(noHome.PM2_HOME, path.resolve(os.homedir(), '.pm2'))
})

test('defaults and every path derive from PM2_HOME', () => {
  const c = build({ env: { PM2_HOME: '/h' }, platform: 'linux' })
  assert.equal(c.PM2_HOME, '/h')
  assert.equal(c.DAEMON_RPC_PORT, '/h/rpc.sock')
  assert.equal(c.DAEMON_PUB_PORT, '/h/pub.sock')
  assert.equal(c.INTERACTOR_RPC_PORT, '/h/interactor.sock')
  assert.equal(c.INTERACTOR_LOG_FILE_PATH, '/h/agent.log')
  assert.equal(c.INTERACTOR_PID_PATH, '/h/agent.pid')
  assert.equal(c.INTERACTION_CONF, '/h/agent.json5')
  assert.equal(c.DUMP_FILE_PATH, '/h/dump.pm2')
  assert.equal(c.KEYMETRICS_ROOT_URL, 'https://root.keymetrics.io')
  assert.equal(c.PROTOCOL_VERSION, 1)
  assert.equal(c.COMPRESS_PROTOCOL, false)
  assert.equal(c.STATUS_INTERVAL, 1000)
  assert.equal(c.PACKET_QUEUE_SIZE, 200)
  assert.equal(c.LOGS_BUFFER, 8)
  assert.equal(c.CONTEXT_ON_ERROR, 4)
  assert.equal(c.TRANSACTION_FLUSH_INTERVAL, 30000)
  assert.equal(c.TRACE_FLUSH_INTERVAL, 30000)
  assert.equal(c.AGGREGATION_DURATION, 600)
  assert.equal(c.DEBUG, false)
  assert.equal(c.PROXY, undefined)
  assert.equal(c.ENABLE_CONTEXT_ON_ERROR, true)
  assert.equal(c.SUCCESS_EXIT, 0)
  assert.equal(c.ERROR_EXIT, 1)
  assert.equal(c.IS_BUN, false)
  assert.match(c.UNIQUE_SERVER_ID, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
})

test('KEYMETRICS_NODE sets the root url, PM2_PROXY the proxy', () => {
  const c = build({ env: { PM2_HOME: '/h', KEYMETRICS_NODE: 'http://127.0.0.1:9', PM2_PROXY: 'socks://p' } })
  assert.equal(c.KEYMETRICS_ROOT_URL, 'http://127.0.0.1:9')
  assert.equal(c.PROXY, 'socks://p')
})

test('flush intervals: 1000 for NODE_ENV=local_test or PM2_DEBUG=true; PM2_DEBUG decides when set', () => {
  assert.equal(build({ env: { NODE_ENV: 'local_test' } }).TRACE_FLUSH_INTERVAL, 1000)
  assert.equal(build({ env: { NODE_ENV: 'local_test' } }).TRANSACTION_FLUSH_INTERVAL, 1000)
  assert.equal(build({ env: { PM2_DEBUG: 'true' } }).TRACE_FLUSH_INTERVAL, 1000)
  assert.equal(build({ env: { PM2_DEBUG: 'true' } }).DEBUG, true)
  assert.equal(build({ env: { PM2_DEBUG: 'false', NODE_ENV: 'local_test' } }).TRACE_FLUSH_INTERVAL, 30000)
  assert.equal(build({ env: { NODE_ENV: 'test' } }).AGGREGATION_DURATION, 0)
  assert.equal(build({ env: { NODE_ENV: 'production' } }).TRACE_FLUSH_INTERVAL, 30000)
})

test('PM2_DEBUG=false is not debug (the JS agent took the string as true)', () => {
  assert.equal(build({ env: { PM2_DEBUG: 'false' } }).DEBUG, false)
  assert.equal(build({ env: { PM2_DEBUG: '0' } }).DEBUG, false)
  assert.equal(build({ env: { PM2_DEBUG: 'interactor' } }).DEBUG, true)
})

test('PM2_<KEY> overrides keep the type of the default', () => {
  const c = build({
    env: {
      PM2_HOME: '/h',
      PM2_STATUS_INTERVAL: '250',
      PM2_PACKET_QUEUE_SIZE: '12',
      PM2_LOGS_BUFFER: '3',
      PM2_CONTEXT_ON_ERROR: '6',
      PM2_TRACE_FLUSH_INTERVAL: '5000',
      PM2_ERROR_EXIT: '2',
      PM2_COMPRESS_PROTOCOL: 'true',
      PM2_ENABLE_CONTEXT_ON_ERROR: 'false',
      PM2_INTERACTOR_RPC_PORT: '/elsewhere/i.sock',
      PM2_KEYMETRICS_ROOT_URL: 'http://km.local',
      PM2_UNIQUE_SERVER_ID: 'fixed-id'
    },
    platform: 'linux'
  })
  assert.equal(c.STATUS_INTERVAL, 250)
  assert.equal(c.PACKET_QUEUE_SIZE, 12)
  assert.equal(c.LOGS_BUFFER, 3)
  assert.equal(c.CONTEXT_ON_ERROR, 6)
  assert.equal(c.TRACE_FLUSH_INTERVAL, 5000)
  assert.equal(c.ERROR_EXIT, 2)
  assert.equal(c.COMPRESS_PROTOCOL, true)
  assert.equal(c.ENABLE_CONTEXT_ON_ERROR, false)
  assert.equal(c.INTERACTOR_RPC_PORT, '/elsewhere/i.sock')
  assert.equal(c.KEYMETRICS_ROOT_URL, 'http://km.local')
  assert.equal(c.UNIQUE_SERVER_ID, 'fixed-id')
  assert.equal(c.INTERACTION_CONF, '/h/agent.json5')
})

test('unparseable overrides are ignored; PM2_AGENT_ENABLE_CONTEXT_ON_ERROR is read', () => {
  const c = build({ env: { PM2_STATUS_INTERVAL: 'soon', PM2_COMPRESS_PROTOCOL: 'maybe' } })
  assert.equal(c.STATUS_INTERVAL, 1000)
  assert.equal(c.COMPRESS_PROTOCOL, false)
  assert.equal(build({ env: { PM2_AGENT_ENABLE_CONTEXT_ON_ERROR: 'false' } }).ENABLE_CONTEXT_ON_ERROR, false)
  assert.equal(build({ env: { PM2_AGENT_ENABLE_CONTEXT_ON_ERROR: 'true' } }).ENABLE_CONTEXT_ON_ERROR, true)
})

test('win32 uses the global pipe names, after the overrides', () => {
  const c = build({ env: { PM2_HOME: 'C:\\u\\.pm2', PM2_INTERACTOR_RPC_PORT: 'x' }, platform: 'win32' })
  assert.equal(c.DAEMON_RPC_PORT, '\\\\.\\pipe\\rpc.sock')
  assert.equal(c.DAEMON_PUB_PORT, '\\\\.\\pipe\\pub.sock')
  assert.equal(c.INTERACTOR_RPC_PORT, '\\\\.\\pipe\\interactor.sock')
})

test('forHome rebuilds for another PM2_HOME without touching the exported object', () => {
  const before = JSON.stringify(constants)
  const other = constants.forHome('/custom/home')
  assert.equal(other.PM2_HOME, '/custom/home')
  assert.equal(other.INTERACTION_CONF, '/custom/home/agent.json5')
  assert.equal(other.INTERACTOR_PID_PATH, '/custom/home/agent.pid')
  assert.equal(other.UNIQUE_SERVER_ID, constants.UNIQUE_SERVER_ID)
  assert.notEqual(other, constants)
  assert.equal(JSON.stringify(constants), before)
})

test('helpers are not enumerable: Object.assign copies only constants', () => {
  const copy = Object.assign({}, constants)
  assert.equal(typeof constants.forHome, 'function')
  assert.equal(typeof constants.build, 'function')
  assert.equal(typeof constants.resolvePM2Home, 'function')
  assert.equal('forHome' in copy, false)
  assert.equal(Object.values(copy).some((v) => typeof v === 'function'), false)
  assert.equal(constants.resolvePM2Home({ PM2_HOME: '/x/y' }), '/x/y')
})
