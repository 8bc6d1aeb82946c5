'use strict'
// Headless Chromium for browser tests: Debian's `chromium` package driven by
// `puppeteer-core` (which downloads no browser of its own).
//
// `findChromium()` resolves with the path of the browser: /usr/bin/chromium
// when present; else, when this process runs as root and apt-get exists,
// installs Debian's `chromium` once (`apt-get update` then `apt-get install
// -y --no-install-recommends chromium`). When there is no browser and none can
// be installed it resolves with `{ skip: '<why>' }` for `t.skip()`.
//
// `launchBrowser(path)` starts it with the flags it needs on a closed network
// (without them Chromium waits on background connections) and a fresh
// profile directory, removed by `browser.closeAndClean()`.

const { execFile } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser']
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage'
]

const present = () => CANDIDATES.find((p) => { try { fs.accessSync(p, fs.constants.X_OK); return true } catch (e) { return false } })

function run (cmd, args, timeoutMs) {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: Object.assign({}, process.env, { DEBIAN_FRONTEND: 'noninteractive' }) },
      (err, stdout, stderr) => resolve({ ok: !err, err, out: `${stdout}\n${stderr}` }))
  })
}

let installing = null

async function findChromium () {
  const found = present()
  if (found) return { path: found }
  let puppeteer = true
  try { require.resolve('puppeteer-core') } catch (e) { puppeteer = false }
  if (!puppeteer) return { skip: 'puppeteer-core is not installed (npm install)' }
  if (process.platform !== 'linux') return { skip: `no Chromium at ${CANDIDATES.join(' or ')} and no apt-get on ${process.platform}` }
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { skip: `no Chromium at ${CANDIDATES.join(' or ')}; not root, so cannot apt-get install chromium (install it and re-run)` }
  }
  if (!fs.existsSync('/usr/bin/apt-get')) return { skip: `no Chromium at ${CANDIDATES.join(' or ')} and no apt-get to install it` }
  if (!installing) {
    installing = (async () => {
      const update = await run('apt-get', ['update'], 10 * 60 * 1000)
      if (!update.ok) return `apt-get update failed: ${update.err.message.split('\n')[0]}`
      const inst = await run('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], 20 * 60 * 1000)
      if (!inst.ok) return `apt-get install chromium failed: ${inst.out.trim().split('\n').slice(-3).join(' | ')}`
      return null
    })()
  }
  const failure = await installing
  const now = present()
  if (now) return { path: now }
  return { skip: failure || `apt-get installed chromium but no browser at ${CANDIDATES.join(' or ')}` }
}

async function launchBrowser (executablePath) {
  const puppeteer = require('puppeteer-core')
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-chromium-'))
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    args: FLAGS.concat([`--user-data-dir=${profile}`]),
    protocolTimeout: 120000
  })
  browser.closeAndClean = async () => {
    try { await browser.close() } catch (e) {}
    fs.rmSync(profile, { recursive: true, force: true })
  }
  return browser
}

module.exports = { findChromium, launchBrowser, FLAGS }
