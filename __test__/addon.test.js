'use strict'
// The package loads its native addon through the generated loader, on this
// platform from the linux-x64-gnu build, and the addon answers.
const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const fs = require('node:fs')

const root = path.join(__dirname, '..')

test('the loader picks the linux-x64-gnu binary and the addon answers', () => {
  const binding = require(path.join(root, 'index.js'))
  assert.equal(binding.version(), require(path.join(root, 'package.json')).version)
  if (process.platform === 'linux' && process.arch === 'x64') {
    const loaded = Object.keys(require.cache).filter((f) => f.endsWith('.node'))
    assert.ok(loaded.some((f) => path.basename(f) === 'interactor.linux-x64-gnu.node'), loaded.join(','))
  }
})

test('the package entry point is the InteractorClient, like @pm2/agent', () => {
  const client = require(root)
  assert.equal(client, require(path.join(root, 'src', 'InteractorClient.js')))
  for (const m of ['launchAndInteract', 'ping', 'killInteractorDaemon', 'getInteractInfo', 'update', 'launchRPC',
    'disconnectRPC', 'getOrSetConf', 'daemonize', 'launchOrAttach']) assert.equal(typeof client[m], 'function', m)
})

test('every shipped platform has its npm/ package in the napi-rs layout', () => {
  const pkg = require(path.join(root, 'package.json'))
  const expected = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl',
    'darwin-x64', 'darwin-arm64', 'win32-x64-msvc']
  for (const dir of expected) {
    const p = require(path.join(root, 'npm', dir, 'package.json'))
    assert.equal(p.name, `${pkg.napi.packageName}-${dir}`)
    assert.equal(p.main, `interactor.${dir}.node`)
    assert.equal(p.version, pkg.version)
  }
  assert.equal(fs.readdirSync(path.join(root, 'npm')).length, expected.length)
})

test('pingSocket is false for a missing socket and rpcCall rejects clearly', async () => {
  const binding = require(path.join(root, 'index.js'))
  const missing = path.join(require('node:os').tmpdir(), `ka-missing-${process.pid}.sock`)
  assert.equal(await binding.pingSocket(missing, 300), false)
  await assert.rejects(binding.rpcCall(missing, 'getInfos', [], 300), /timed out|closed|lost/)
  await assert.rejects(binding.rpcCall('', 'x', []), /empty endpoint/)
})

test('PM2 socket names of the other OS are understood: named pipes / unix paths', async () => {
  const binding = require(path.join(root, 'index.js'))
  // PM2's Windows names (constants.js): parsed as pipes, so on Linux and
  // macOS nobody answers; on Windows no agent serves this one.
  const pipe = `\\\\.\\pipe\\ka-none-${process.pid}.sock`
  assert.equal(await binding.pingSocket(pipe, 300), false)
  if (process.platform !== 'win32') {
    await assert.rejects(binding.rpcCall(pipe, 'getInfos', [], 300), /not available on|timed out|closed|lost/)
  }
})
