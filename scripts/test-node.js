#!/usr/bin/env node
'use strict'
// `npm run test:node` / `npm run test:faults` / `npm test`: the JS test
// suites, with the black-box agent tests in both daemon modes at once.
//
// Suites:
//  - regular (default): every __test__/*.test.js;
//  - faults (--faults): every __test__/faults/*.test.js, the fault suite
//    (PM2 killed repeatedly, concurrent launches, a hostile backend, …:
//    black-box tests against a real PM2); any file added there is picked up.
//
// Modes:
//  - node:   the agent on Node (PM2_AGENT_NATIVE unset). In the regular
//            suite every file runs here (agent-native.test.js included: it
//            always starts the native daemon itself);
//  - native: the agent through keymetrics-agent-daemon (PM2_AGENT_NATIVE=
//            true). In the regular suite only the agent tests run here
//            (agent-*.test.js, pm2-link.test.js); every fault file does.
//
// The runs of the two modes are concurrent `node --test --test-concurrency=1`
// processes: every agent test file has its own PM2_HOME (mkdtemp), its own
// PM2 daemon and backends on ephemeral ports, so they do not see each
// other. Output lines are prefixed with the mode; the exit code is non-zero
// if any run failed.
//
//   node scripts/test-node.js [--mode both|node|native]      the regular suite
//   node scripts/test-node.js --faults [--mode …]            the fault suite
//   node scripts/test-node.js --with-faults node|native|both the regular
//        suite, plus the fault suite in the run(s) of that mode (after the
//        regular files); --mode still picks the runs
//
// What `npm test` runs (and why) is in README.md, "Tests".

const { spawn } = require('child_process')
const fs = require('fs')
const path = require('path')
const readline = require('readline')

const ROOT = path.join(__dirname, '..')
const DIR = path.join(ROOT, '__test__')
const FAULTS_DIR = path.join(DIR, 'faults')

function option (name, fallback) {
  const at = process.argv.indexOf(name)
  return at !== -1 && process.argv[at + 1] && !process.argv[at + 1].startsWith('--') ? process.argv[at + 1] : fallback
}
const flag = (name) => process.argv.includes(name)

function testFiles (dir, prefix) {
  let names = []
  try {
    names = fs.readdirSync(dir)
  } catch (e) {
    return []
  }
  return names.filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(prefix, f))
}

const mode = option('--mode', 'both')
const faultsOnly = flag('--faults')
const withFaults = option('--with-faults', null)
const badWithFaults = flag('--with-faults') && !['both', 'node', 'native'].includes(withFaults)
if (!['both', 'node', 'native'].includes(mode) || badWithFaults || (faultsOnly && flag('--with-faults'))) {
  console.error('usage: node scripts/test-node.js [--mode both|node|native] [--faults | --with-faults node|native|both]')
  process.exit(2)
}

const regular = testFiles(DIR, '__test__')
const faults = testFiles(FAULTS_DIR, path.join('__test__', 'faults'))
const isAgentTest = (f) => {
  const base = path.basename(f)
  return (base.startsWith('agent-') && base !== 'agent-native.test.js') || base === 'pm2-link.test.js'
}
// The longest file first in the native run, so the two runs end together.
const longestFirst = (files) => files.sort((a, b) => (path.basename(b) === 'agent-outage.test.js') - (path.basename(a) === 'agent-outage.test.js'))

function filesFor (name) {
  if (faultsOnly) return faults
  const base = name === 'node' ? regular : longestFirst(regular.filter(isAgentTest))
  const addFaults = withFaults === 'both' || withFaults === name
  return addFaults ? base.concat(faults) : base
}

const runs = []
for (const name of ['node', 'native']) {
  if (mode !== 'both' && mode !== name) continue
  const files = filesFor(name)
  if (files.length) runs.push({ name, files, native: name === 'native' })
}
if (!runs.length) {
  console.error('no test files to run')
  process.exit(faultsOnly ? 0 : 2)
}

function run ({ name, files, native }) {
  const env = Object.assign({}, process.env)
  if (native) env.PM2_AGENT_NATIVE = 'true'
  else delete env.PM2_AGENT_NATIVE
  const args = ['--test', '--test-concurrency=1', ...files]
  const started = Date.now()
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const prefix = runs.length > 1 ? `[${name}] ` : ''
  for (const [stream, out] of [[child.stdout, process.stdout], [child.stderr, process.stderr]]) {
    readline.createInterface({ input: stream }).on('line', (line) => out.write(prefix + line + '\n'))
  }
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({
    name, code: code === null ? 1 : code, signal, files: files.length, seconds: Math.round((Date.now() - started) / 1000)
  })))
}

const suite = faultsOnly ? 'fault suite' : withFaults ? `regular suite + fault suite (${withFaults})` : 'regular suite'
Promise.all(runs.map(run)).then((results) => {
  for (const r of results) {
    const verdict = r.code === 0 ? 'pass' : `FAIL (exit ${r.code}${r.signal ? ', ' + r.signal : ''})`
    console.log(`== ${r.name} mode, ${suite}: ${verdict} (${r.files} files, ${r.seconds} s)`)
  }
  process.exit(results.every((r) => r.code === 0) ? 0 : 1)
})
