#!/usr/bin/env node
'use strict'
// `npm run test:node`: the JS test suite, with the black-box agent tests in
// both daemon modes at once.
//
//  - node:   every __test__/*.test.js, the agent on Node (PM2_AGENT_NATIVE
//            unset); agent-native.test.js is in this run (it always starts
//            the native daemon itself);
//  - native: the agent tests (agent-*.test.js, pm2-link.test.js) again with
//            PM2_AGENT_NATIVE=true, i.e. through keymetrics-agent-daemon.
//
// The two runs are concurrent `node --test --test-concurrency=1` processes:
// every agent test file has its own PM2_HOME (mkdtemp), its own PM2 daemon
// and backends on ephemeral ports, so they do not see each other. Output
// lines are prefixed with the mode; the exit code is non-zero if either run
// failed.
//
//   node scripts/test-node.js [--mode both|node|native]

const { spawn } = require('child_process')
const fs = require('fs')
const path = require('path')
const readline = require('readline')

const ROOT = path.join(__dirname, '..')
const DIR = path.join(ROOT, '__test__')

function option (name, fallback) {
  const at = process.argv.indexOf(name)
  return at !== -1 && process.argv[at + 1] ? process.argv[at + 1] : fallback
}

const mode = option('--mode', 'both')
const all = fs.readdirSync(DIR).filter((f) => f.endsWith('.test.js')).sort()
const isAgentTest = (f) => (/^agent-/.test(f) && f !== 'agent-native.test.js') || f === 'pm2-link.test.js'
// The longest file first in the native run, so the two runs end together.
const longestFirst = (files) => files.sort((a, b) => (b === 'agent-outage.test.js') - (a === 'agent-outage.test.js'))

const runs = []
if (mode === 'both' || mode === 'node') runs.push({ name: 'node', files: all, native: false })
if (mode === 'both' || mode === 'native') runs.push({ name: 'native', files: longestFirst(all.filter(isAgentTest)), native: true })
if (!runs.length) {
  console.error(`unknown --mode ${mode} (both, node or native)`)
  process.exit(2)
}

function run ({ name, files, native }) {
  const env = Object.assign({}, process.env)
  if (native) env.PM2_AGENT_NATIVE = 'true'
  else delete env.PM2_AGENT_NATIVE
  const args = ['--test', '--test-concurrency=1', ...files.map((f) => path.join('__test__', f))]
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const prefix = runs.length > 1 ? `[${name}] ` : ''
  for (const [stream, out] of [[child.stdout, process.stdout], [child.stderr, process.stderr]]) {
    readline.createInterface({ input: stream }).on('line', (line) => out.write(prefix + line + '\n'))
  }
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ name, code: code === null ? 1 : code, signal })))
}

Promise.all(runs.map(run)).then((results) => {
  for (const r of results) console.log(`== ${r.name} mode: ${r.code === 0 ? 'pass' : `FAIL (exit ${r.code}${r.signal ? ', ' + r.signal : ''})`}`)
  process.exit(results.every((r) => r.code === 0) ? 0 : 1)
})
