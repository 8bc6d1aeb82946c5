'use strict'
// src/resurrectHook.js, preloaded into the watchdog's `pm2 resurrect`: that
// process keeps PM2_AGENT_ONLINE (so it starts no second agent), whatever
// it spawns (PM2's daemon, hence its apps) does not inherit it; the rest of
// the environment passes unchanged, whichever spawn/fork signature is used.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const HOOK = path.join(__dirname, '..', 'src', 'resurrectHook.js')
const SHOW = 'process.stdout.write(JSON.stringify([process.env.PM2_AGENT_ONLINE || null, process.env.KEEP || null, process.env.MINE || null]))\n'

// Runs in the hooked process: what it and each kind of child see.
const PARENT = `
const cp = require('child_process')
const child = process.argv[1]
const run = (c, stdin) => new Promise((resolve) => {
  let out = ''
  c.stdout.on('data', (d) => { out += d })
  if (stdin) c.stdin.end(stdin)
  c.on('close', () => resolve(JSON.parse(out)))
})
;(async () => {
  const seen = { self: process.env.PM2_AGENT_ONLINE || null }
  seen.spawnArgsEnv = await run(cp.spawn(process.execPath, [child], { env: Object.assign({}, process.env, { MINE: 'm' }) }))
  seen.spawnArgs = await run(cp.spawn(process.execPath, [child]))
  seen.spawnOptions = await run(cp.spawn(process.execPath, { stdio: 'pipe' }), require('fs').readFileSync(child, 'utf8'))
  seen.fork = await run(cp.fork(child, [], { silent: true }))
  process.stdout.write(JSON.stringify(seen))
})()
`

test('the marker stays in the hooked process and reaches none of its children', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-hook-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const child = path.join(dir, 'child.js')
  fs.writeFileSync(child, SHOW)
  const env = Object.assign({}, process.env, { PM2_AGENT_ONLINE: 'true', KEEP: 'kept' })
  const out = execFileSync(process.execPath, ['--require', HOOK, '-e', PARENT, child], { env, encoding: 'utf8' })
  assert.deepEqual(JSON.parse(out), {
    self: 'true',
    spawnArgsEnv: [null, 'kept', 'm'],
    spawnArgs: [null, 'kept', null],
    spawnOptions: [null, 'kept', null],
    fork: [null, 'kept', null]
  })
})
