'use strict'
// index.d.ts, src/*.d.ts and constants.d.ts type the whole surface: a
// correct use compiles under `tsc --strict`, a wrong one does not.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const tsc = require.resolve('typescript/bin/tsc')
const fixture = path.join(__dirname, 'fixtures', 'types-usage.ts')

function compile (source) {
  const dir = fs.mkdtempSync(path.join(__dirname, 'fixtures', '.tsc-'))
  try {
    const file = path.join(dir, 'usage.ts')
    fs.writeFileSync(file, source.replace("'../../index'", JSON.stringify(path.join(__dirname, '..', 'index'))))
    return spawnSync(process.execPath, [tsc, '--noEmit', '--strict', '--skipLibCheck', file], { encoding: 'utf8' })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

test('the declarations accept correct use', () => {
  const r = compile(fs.readFileSync(fixture, 'utf8'))
  assert.equal(r.status, 0, r.stdout + r.stderr)
})

test('the declarations reject a wrong callback shape and a missing method', () => {
  const src = fs.readFileSync(fixture, 'utf8')
  const bad = src.replace('// WRONG-USAGE-BELOW', [
    'client.ping(cst, (err, online) => { const n: number = online; void n; void err })',
    'client.noSuchMethod()'
  ].join('\n'))
  const r = compile(bad)
  assert.notEqual(r.status, 0)
  assert.match(r.stdout, /TS2322/)
  assert.match(r.stdout, /noSuchMethod/)
})
