'use strict'
// pm2@7 carries its own copy of the JS agent (modules/pm2-io-agent):
// `keymetrics-agent use-with-pm2` points it at this package, `--revert`
// restores it byte for byte, and an unknown layout is refused untouched.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('child_process')
const crypto = require('crypto')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { tmpHome, waitUntil } = require('./helpers/pm2')
const { MODE } = require('./helpers/agent')

const root = path.join(__dirname, '..')
const CLI = path.join(root, 'src', 'cli.js')
const PM2_7 = require('../package.json').devDependencies.pm2

function run (cmd, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, Object.assign({ timeout: 240000, maxBuffer: 16 << 20 }, opts), (err, stdout, stderr) => {
      if (err) {
        err.message += `\nstdout: ${stdout}\nstderr: ${stderr}`
        err.stdout = stdout
        err.stderr = stderr
        return reject(err)
      }
      resolve({ stdout, stderr })
    })
  })
}

/** Every file under `dir` with its sha256 and mode. */
function snapshot (dir) {
  const out = {}
  for (const rel of fs.readdirSync(dir, { recursive: true })) {
    const file = path.join(dir, rel)
    const st = fs.statSync(file)
    if (st.isFile()) out[rel] = `${crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')} ${(st.mode & 0o777).toString(8)}`
  }
  return out
}

const cli = (args) => run(process.execPath, [CLI, ...args])

test('use-with-pm2: pm2@7 links through our agent; --revert restores its own byte for byte', { timeout: 300000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-pm2-7-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'pm2-7-user', private: true, dependencies: { pm2: PM2_7 } }))
  await run('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'], { cwd: dir })
  const pm2Dir = path.join(dir, 'node_modules', 'pm2')
  const agentDir = path.join(pm2Dir, 'modules', 'pm2-io-agent')
  const before = snapshot(agentDir)

  const first = await cli(['use-with-pm2', '--pm2', pm2Dir])
  assert.match(first.stdout, /now runs keymetrics-agent/)
  const once = snapshot(agentDir)
  assert.notEqual(once['src/InteractorClient.js'], before['src/InteractorClient.js'], 'the entry point is replaced')
  assert.equal(once['src/InteractorClient.js.keymetrics-agent-orig'], before['src/InteractorClient.js'], 'the original is kept')
  assert.equal(once['index.js.keymetrics-agent-orig'], before['index.js'])
  await cli(['use-with-pm2', '--pm2', pm2Dir])
  assert.deepEqual(snapshot(agentDir), once, 'running it again changes nothing')
  // pm2's own require path now gives this package's client.
  const viaPm2 = require(path.join(agentDir, 'src', 'InteractorClient.js'))
  assert.equal(viaPm2, require('../src/InteractorClient'))

  const backend = await new Backend().start()
  const home = tmpHome('ka-pm2-7-')
  const env = Object.assign({}, process.env, { PM2_HOME: home, KEYMETRICS_NODE: backend.url, PM2_DISABLE_VERSION_CHECK: 'true' })
  for (const k of ['PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'PM2_MACHINE_NAME', 'PM2_SILENT', 'PM2_AGENT_ONLINE', 'WS_JSON_PATCH']) delete env[k]
  const pm2 = (args) => run(process.execPath, [path.join(pm2Dir, 'bin', 'pm2'), ...args], { env })
  t.after(async () => {
    try { await pm2(['kill']) } catch (e) {}
    try { process.kill(parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8')), 'SIGKILL') } catch (e) {}
    await backend.stop()
  })
  const { stdout } = await pm2(['link', 'seven-secret', 'seven-public', 'seven-machine'])
  assert.match(stdout, /PM2\+ activated/)
  assert.equal(backend.verifyRequests[0].headers['user-agent'], `PM2 Agent v${require('../package.json').version}`, 'our agent verified')
  await waitUntil(() => backend.statuses.length > 0, 20000, 100, 'a status from our agent under pm2@7')
  const pid = parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8'))
  assert.match(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'), MODE === 'native' ? /\[native\]/ : /\[node\]/, 'our daemon runs')
  await pm2(['kill'])

  const undone = await cli(['use-with-pm2', '--revert', '--pm2', pm2Dir])
  assert.match(undone.stdout, /runs its own agent again/)
  assert.deepEqual(snapshot(agentDir), before, 'byte for byte, no file left behind')
  const again = await cli(['use-with-pm2', '--revert', '--pm2', pm2Dir])
  assert.match(again.stdout, /nothing to revert/)
})

test('use-with-pm2 refuses a pm2 it does not know, and pm2@6, touching nothing', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-pm2-odd-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const write = (rel, text) => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true })
    fs.writeFileSync(path.join(dir, rel), text)
  }
  const refused = async (pattern) => {
    const before = snapshot(dir)
    const err = await cli(['use-with-pm2', '--pm2', dir]).then(() => null, (e) => e)
    assert.ok(err && err.code === 1, 'exit code 1')
    assert.match(err.stderr, pattern)
    assert.deepEqual(snapshot(dir), before, 'nothing changed')
  }
  await refused(/not a pm2 directory/)
  write('package.json', JSON.stringify({ name: 'pm2', version: '6.0.14' }))
  await refused(/depends on @pm2\/agent: use an npm "overrides" entry/)
  write('package.json', JSON.stringify({ name: 'pm2', version: '7.1.0' }))
  write('modules/pm2-io-agent/src/InteractorClient.js', 'module.exports = 1\n')
  write('modules/pm2-io-agent/index.js', "module.exports = require('./src/InteractorClient.js')\n")
  await refused(/unknown pm2 7\.1\.0 layout: lib\/API\.js is missing/)
  write('lib/API.js', "require('../modules/pm2-io-agent/src/InteractorClient')\n")
  write('lib/Client.js', "require('../modules/pm2-io-agent/src/InteractorClient')\n")
  write('lib/API/pm2-plus/link.js', "require('@pm2/agent/src/InteractorClient')\n")
  await refused(/link\.js does not require/)
  const usage = await cli(['frobnicate']).then(() => null, (e) => e)
  assert.equal(usage.code, 2)
  assert.match(usage.stderr, /use-with-pm2/)
})
