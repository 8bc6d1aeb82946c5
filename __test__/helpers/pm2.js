'use strict'
// A real PM2 daemon (pm2@7 from devDependencies) in a private PM2_HOME.

const { execFile } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const PM2_BIN = require.resolve('pm2/bin/pm2')

function tmpHome (prefix = 'ka-pm2-') {
  // Unix socket paths are limited to ~107 bytes: keep the home short.
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

// The agent's own settings, and the test runner's IPC channel: kept away from
// PM2's CLI (and so from PM2 and its apps) unless a test passes them in `extra`.
const AGENT_ENV = /^(PM2_(PUBLIC|SECRET)_KEY|PM2_MACHINE_NAME|PM2_BINARY_PATH|KEYMETRICS_\w+|PM2_AGENT_\w+|NODE_CHANNEL_\w+)$/

function pm2Env (home, extra = {}) {
  const env = Object.assign({}, process.env)
  for (const k of Object.keys(env)) if (AGENT_ENV.test(k)) delete env[k]
  return Object.assign(env, {
    PM2_HOME: home,
    PM2_NO_INTERACTION: 'true',
    PM2_DISABLE_VERSION_CHECK: 'true'
  }, extra)
}

function pm2 (home, args, extraEnv) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PM2_BIN, ...args], { env: pm2Env(home, extraEnv), timeout: 60000 }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\nstdout: ${stdout}\nstderr: ${stderr}`
        return reject(err)
      }
      resolve({ stdout, stderr })
    })
  })
}

async function jlist (home) {
  const { stdout } = await pm2(home, ['jlist'])
  const start = stdout.indexOf('[')
  return JSON.parse(stdout.slice(start))
}

function writeApp (dir, name, body) {
  const file = path.join(dir, name)
  fs.writeFileSync(file, body)
  return file
}

/** Kills the PM2 daemon of `home` (ignoring errors) and removes the home. */
async function killPm2 (home) {
  try { await pm2(home, ['kill']) } catch (e) {}
  try {
    const pid = parseInt(fs.readFileSync(path.join(home, 'pm2.pid'), 'utf8'))
    if (pid) process.kill(pid, 'SIGKILL')
  } catch (e) {}
}

function waitUntil (fn, timeoutMs = 20000, interval = 100, what = 'condition') {
  const deadline = Date.now() + timeoutMs
  return new Promise((resolve, reject) => {
    const tick = async () => {
      let ok = false
      try { ok = await fn() } catch (e) {}
      if (ok) return resolve(ok)
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`))
      setTimeout(tick, interval)
    }
    tick()
  })
}

module.exports = { PM2_BIN, tmpHome, pm2, pm2Env, jlist, writeApp, killPm2, waitUntil }
