'use strict'
// Install-from-tarball proof: what a user gets from the registry, without a
// source tree or a Rust toolchain. The main package and the linux-x64-gnu
// platform package are packed with `npm pack` (the binaries of `npm run
// build:dist`, staged by scripts/stage-platform.js), the main package
// carrying the `optionalDependencies` the release adds (`napi pre-publish`),
// and installed from the tarballs into an empty project next to pm2@6 with
// the `@pm2/agent` override, with no `cargo` on PATH. `pm2 link` must then
// report in to the local backend through our agent, in both daemon modes.
// A platform without its package gets one clear error.
//
// Run by `npm run test:ship` (after build:dist).

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { Backend } = require('../helpers/backend')
const { tmpHome, waitUntil } = require('../helpers/pm2')
const { platformSuffix, daemonFileName } = require('../../src/nativeDaemon')
const { stage } = require('../../scripts/stage-platform')

const ROOT = path.join(__dirname, '..', '..')
const PM2_6 = '6.0.14'
const pkg = require('../../package.json')
const platform = platformSuffix()
const platformPkg = `${pkg.napi.packageName}-${platform}`
const supported = platform === 'linux-x64-gnu'

function run (cmd, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, Object.assign({ timeout: 300000, maxBuffer: 16 << 20 }, opts), (err, stdout, stderr) => {
      if (err) {
        err.message += `\nstdout: ${stdout}\nstderr: ${stderr}`
        return reject(err)
      }
      resolve({ stdout, stderr })
    })
  })
}

/** PATH without any directory that holds cargo or rustc. */
function pathWithoutRust () {
  return process.env.PATH.split(path.delimiter)
    .filter((d) => d && !['cargo', 'rustc'].some((b) => fs.existsSync(path.join(d, b))))
    .join(path.delimiter)
}

/** `npm pack` of `dir` into `out`, scripts off (no `prepare` rebuild); the tarball's path. */
async function pack (dir, out) {
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', out], { cwd: dir })
  return path.join(out, JSON.parse(stdout)[0].filename)
}

test('packed main + platform packages install without Rust, and `pm2 link` reports in', { skip: !supported && `no prebuilt test for ${platform}`, timeout: 600000 }, async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-tarball-'))
  t.after(() => fs.rmSync(work, { recursive: true, force: true }))
  const tarballs = path.join(work, 'tarballs')
  fs.mkdirSync(tarballs)

  // The platform package, with the binaries that ship.
  const platformTgz = await pack(stage('x86_64-unknown-linux-gnu'), tarballs)
  // The main package as the release publishes it: optionalDependencies on
  // every platform package (napi pre-publish writes them at release time).
  const mainTgz0 = await pack(ROOT, tarballs)
  const unpacked = path.join(work, 'main')
  fs.mkdirSync(unpacked)
  await run('tar', ['xzf', mainTgz0, '-C', unpacked])
  const mainDir = path.join(unpacked, 'package')
  const packed = fs.readdirSync(mainDir, { recursive: true })
  assert.ok(!packed.some((f) => /\.node$|keymetrics-agent-daemon\./.test(f)), `the main package holds no binary: ${packed.join(' ')}`)
  const mainJson = JSON.parse(fs.readFileSync(path.join(mainDir, 'package.json'), 'utf8'))
  mainJson.optionalDependencies = Object.fromEntries(
    fs.readdirSync(path.join(ROOT, 'npm')).map((p) => [`${pkg.napi.packageName}-${p}`, pkg.version]))
  fs.writeFileSync(path.join(mainDir, 'package.json'), JSON.stringify(mainJson, null, 2))
  fs.rmSync(mainTgz0)
  const mainTgz = await pack(mainDir, tarballs)

  const project = path.join(work, 'project')
  fs.mkdirSync(project)
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({
    name: 'user-project',
    private: true,
    dependencies: { pm2: PM2_6 },
    overrides: {
      '@pm2/agent': `file:${mainTgz}`,
      [platformPkg]: `file:${platformTgz}`
    }
  }, null, 2))
  const noRust = Object.assign({}, process.env, { PATH: pathWithoutRust() })
  for (const k of Object.keys(noRust)) if (/^(npm_|CARGO|RUST)/i.test(k)) delete noRust[k]
  await assert.rejects(run('cargo', ['--version'], { env: noRust }), 'cargo is not on the install PATH')
  await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project, env: noRust })

  const agentDir = path.join(project, 'node_modules', '@pm2', 'agent')
  assert.equal(JSON.parse(fs.readFileSync(path.join(agentDir, 'package.json'), 'utf8')).name, pkg.name)
  assert.ok(!fs.lstatSync(agentDir).isSymbolicLink(), '@pm2/agent is installed from the tarball, not linked to the source tree')
  const platformDir = path.join(project, 'node_modules', ...platformPkg.split('/'))
  const daemonBin = path.join(platformDir, daemonFileName())
  fs.accessSync(daemonBin, fs.constants.X_OK)

  for (const mode of ['node', 'native']) {
    await t.test(`pm2 link (${mode} daemon)`, async () => {
      const backend = await new Backend().start()
      const home = tmpHome('ka-tarball-')
      const env = Object.assign({}, noRust, { PM2_HOME: home, KEYMETRICS_NODE: backend.url, PM2_DISABLE_VERSION_CHECK: 'true' })
      for (const k of ['PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'PM2_MACHINE_NAME', 'PM2_SILENT', 'PM2_AGENT_ONLINE', 'PM2_AGENT_NATIVE', 'WS_JSON_PATCH']) delete env[k]
      if (mode === 'native') env.PM2_AGENT_NATIVE = 'true'
      const pm2 = (args) => run(process.execPath, [path.join(project, 'node_modules', 'pm2', 'bin', 'pm2'), ...args], { env, cwd: project })
      try {
        const { stdout } = await pm2(['link', 'tgz-secret', 'tgz-public', `tgz-${mode}`])
        assert.match(stdout, /PM2\+ activated/)
        await waitUntil(() => backend.statuses.length > 0, 30000, 100, 'a status from the linked agent')
        const pid = parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8'))
        if (mode === 'native') {
          assert.equal(fs.realpathSync(`/proc/${pid}/exe`), fs.realpathSync(daemonBin), 'the platform package\'s daemon runs')
        } else {
          const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8')
          assert.ok(maps.includes(fs.realpathSync(path.join(platformDir, `interactor.${platform}.node`))), 'the platform package\'s addon is loaded')
        }
      } finally {
        try { await pm2(['kill']) } catch (e) {}
        try { process.kill(parseInt(fs.readFileSync(path.join(home, 'agent.pid'), 'utf8')), 'SIGKILL') } catch (e) {}
        await backend.stop()
      }
    })
  }

  await t.test('without its platform package: one clear error', async () => {
    fs.rmSync(platformDir, { recursive: true, force: true })
    const home = tmpHome('ka-tarball-none-')
    const env = Object.assign({}, noRust, { PM2_HOME: home, PM2_DISABLE_VERSION_CHECK: 'true', KEYMETRICS_NODE: 'http://127.0.0.1:9' })
    for (const k of ['PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'PM2_MACHINE_NAME', 'PM2_SILENT', 'PM2_AGENT_ONLINE', 'PM2_AGENT_NATIVE']) delete env[k]
    const pm2 = (args) => run(process.execPath, [path.join(project, 'node_modules', 'pm2', 'bin', 'pm2'), ...args], { env, cwd: project })
    try {
      // What a user sees: `pm2 link` on a platform without a prebuilt.
      const out = await pm2(['link', 'tgz-secret', 'tgz-public', 'tgz-none']).then((r) => r.stdout + r.stderr, (e) => e.message)
      assert.match(out, new RegExp(`no prebuilt binary for ${platform}`))
      assert.ok(out.includes(platformPkg), 'names the package it looked for')
      assert.match(out, /npm run build/, 'says how to build from source')
      assert.doesNotMatch(out, /npm has a bug related to optional dependencies/)
    } finally {
      try { await pm2(['kill']) } catch (e) {}
    }
  })
})
