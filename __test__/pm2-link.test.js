'use strict'
// PM2 6 depends on @pm2/agent. With an npm `overrides` entry mapping
// @pm2/agent to this package, `pm2 link <secret> <public> <machine>` must
// launch *our* agent, which verifies and reports in to the (local) backend.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Backend } = require('./helpers/backend')
const { tmpHome, waitUntil } = require('./helpers/pm2')
const { MODE, hasAgentTitle } = require('./helpers/agent')

const root = path.join(__dirname, '..')
const PM2_6 = '6.0.14'

function run (cmd, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, Object.assign({ timeout: 240000, maxBuffer: 16 << 20 }, opts), (err, stdout, stderr) => {
      if (err) {
        err.message += `\nstdout: ${stdout}\nstderr: ${stderr}`
        return reject(err)
      }
      resolve({ stdout, stderr })
    })
  })
}

test('pm2@6 with @pm2/agent overridden to this package links through our agent', { timeout: 300000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-pm2-6-'))
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({
    name: 'pm2-6-with-our-agent',
    private: true,
    dependencies: { pm2: PM2_6 },
    overrides: { '@pm2/agent': `file:${root}` }
  }, null, 2))
  await run('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'], { cwd: dir })
  const agentDir = path.join(dir, 'node_modules', '@pm2', 'agent')
  assert.equal(fs.realpathSync(agentDir), fs.realpathSync(root), '@pm2/agent resolves to this package')

  // All four endpoints, as the seed-era PM2.io answered: push/reverse point
  // at the backend's HTTP port, which does not speak Axon, so the agent must
  // find that out and carry the traffic over the WebSocket.
  const backend = await new Backend({
    verify: () => backend.activeAnswer({ endpoints: { web: 'http://127.0.0.1/web', ws: backend.wsUrl, push: `tcp://127.0.0.1:${backend.port}`, reverse: `tcp://127.0.0.1:${backend.port}` } })
  }).start()
  const home = tmpHome('ka-link-')
  const env = Object.assign({}, process.env, { PM2_HOME: home, KEYMETRICS_NODE: backend.url, PM2_DISABLE_VERSION_CHECK: 'true' })
  for (const k of ['PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'PM2_MACHINE_NAME', 'PM2_SILENT', 'PM2_AGENT_ONLINE', 'WS_JSON_PATCH']) delete env[k]
  const pm2 = (args) => run(process.execPath, [path.join(dir, 'node_modules', 'pm2', 'bin', 'pm2'), ...args], { env })
  t.after(async () => {
    try { await pm2(['kill']) } catch (e) {}
    try { process.kill(parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8')), 'SIGKILL') } catch (e) {}
    await backend.stop()
  })

  const { stdout } = await pm2(['link', 'link-secret', 'link-public', 'link-machine'])
  assert.match(stdout, /PM2\+ activated/)
  assert.ok(!stdout.includes('link-secret'), 'the secret key is not printed')

  const verify = backend.verifyRequests[0]
  assert.equal(verify.body.public_id, 'link-public')
  const ourVersion = require('../package.json').version
  assert.equal(verify.headers['user-agent'], `PM2 Agent v${ourVersion}`)
  await backend.waitConnected()
  assert.equal(backend.wsHandshakes[0].headers['x-km-server'], 'link-machine')
  await waitUntil(() => backend.statuses.length > 0, 20000, 100, 'a status from the linked agent')
  for (const name of ['app-one', 'app-two']) {
    const file = path.join(home, `${name}.js`)
    fs.writeFileSync(file, 'setInterval(() => {}, 1000)\n')
    await pm2(['start', file, '--name', name])
  }
  await waitUntil(() => {
    const s = backend.lastStatus
    return s && ['app-one', 'app-two'].every((n) => s.data.process.some((p) => p.name === n))
  }, 20000, 100, 'a status with both apps')
  assert.ok(backend.received.some((p) => p.channel === 'status:patch') || backend.statuses.length === 1,
    'pm2 link turns on JSON patch mode')

  const pid = parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8'))
  // The daemon sets its title like the JS agent, with our version and the
  // mode; on Node it has our addon mapped, native it is our binary.
  assert.ok(hasAgentTitle(pid, home), fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'))
  if (MODE === 'native') {
    assert.equal(fs.realpathSync(`/proc/${pid}/exe`), path.join(fs.realpathSync(root), 'keymetrics-agent-daemon.linux-x64-gnu'), 'our native daemon runs')
  } else {
    const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8')
    assert.ok(maps.includes(path.join(fs.realpathSync(root), 'interactor.linux-x64-gnu.node')), 'our addon is loaded by the running agent')
  }
  const conf = fs.statSync(path.join(home, 'agent.json5'))
  assert.equal(conf.mode & 0o777, 0o600)
})
