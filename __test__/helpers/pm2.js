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

function pm2Env (home, extra = {}) {
  const env = Object.assign({}, process.env, {
    PM2_HOME: home,
    PM2_NO_INTERACTION: 'true',
    PM2_DISABLE_VERSION_CHECK: 'true'
  }, extra)
  // Keep the agent's own settings away from PM2's CLI.
  for (const k of ['PM2_PUBLIC_KEY', 'PM2_SECRET_KEY', 'PM2_MACHINE_NAME', 'KEYMETRICS_NODE', 'PM2_AGENT_ONLINE']) delete env[k]
  return env
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
