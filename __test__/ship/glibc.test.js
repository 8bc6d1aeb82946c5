'use strict'
// The shipped linux-x64-gnu binaries (what `npm run build:dist` leaves at the
// package root) must load on every Linux that Node 20 supports: no glibc
// symbol version newer than GLIBC_FLOOR (scripts/build-dist.js), and
// stripped. Run by `npm run test:ship`, after build:dist.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('child_process')
const fs = require('fs')
const path = require('path')
const { GLIBC_FLOOR } = require('../../scripts/build-dist')
const { platformSuffix, daemonFileName } = require('../../src/nativeDaemon')

const ROOT = path.join(__dirname, '..', '..')
const linuxGnu = process.platform === 'linux' && platformSuffix().endsWith('-gnu')

const versionKey = (v) => v.split('.').map(Number)
function newer (a, b) {
  const [x, y] = [versionKey(a), versionKey(b)]
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) > (y[i] || 0)
  }
  return false
}

/** The GLIBC_x.y versions of a binary's dynamic symbols, from `objdump -T`. */
function glibcVersions (file) {
  const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  return [...new Set(out.match(/GLIBC_[0-9.]+/g) || [])].map((v) => v.slice('GLIBC_'.length))
}

for (const name of [`interactor.${platformSuffix()}.node`, daemonFileName()]) {
  test(`${name}: needs glibc ≤ ${GLIBC_FLOOR} and is stripped`, { skip: !linuxGnu && 'only for linux gnu' }, () => {
    const file = path.join(ROOT, name)
    assert.ok(fs.existsSync(file), `${name} is missing: run \`npm run build:dist\``)
    const versions = glibcVersions(file)
    assert.ok(versions.length > 0, 'objdump found the glibc symbol versions')
    const tooNew = versions.filter((v) => newer(v, GLIBC_FLOOR))
    assert.deepEqual(tooNew, [], `${name} needs GLIBC_${tooNew.join(', GLIBC_')}, above the ${GLIBC_FLOOR} floor`)
    const sections = execFileSync('readelf', ['-S', '-W', file], { encoding: 'utf8' })
    assert.doesNotMatch(sections, /\s\.symtab\s|\s\.debug_info\s/, 'no symbol table or debug info')
  })
}

test('the version check itself tells a newer glibc from an older one', () => {
  assert.ok(newer('2.34', '2.28'))
  assert.ok(newer('2.3.4', '2.3'))
  assert.ok(!newer('2.28', '2.28'))
  assert.ok(!newer('2.2.5', '2.28'))
})
