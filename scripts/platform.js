'use strict'
// Rust target triples and napi's platform suffixes, for the build scripts.

const { execFileSync } = require('child_process')

function option (name, fallback) {
  const at = process.argv.indexOf(name)
  return at !== -1 && process.argv[at + 1] ? process.argv[at + 1] : fallback
}

function hostTriple () {
  const out = execFileSync('rustc', ['-vV'], { encoding: 'utf8' })
  const line = out.split('\n').find((l) => l.startsWith('host:'))
  if (!line) throw new Error('cannot read the host triple from `rustc -vV`')
  return line.slice('host:'.length).trim()
}

/** napi's platform suffix of a Rust target triple (x86_64-unknown-linux-gnu → linux-x64-gnu). */
function suffixOf (triple) {
  const [cpu, , sys, abi] = triple.split('-')
  const arch = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }[cpu] || cpu
  if (triple.includes('apple-darwin')) return `darwin-${arch}`
  if (triple.includes('windows')) return `win32-${arch}-${abi || 'msvc'}`
  if (sys === 'linux') return `linux-${arch}-${abi && abi.startsWith('musl') ? 'musl' : 'gnu'}`
  return `${sys}-${arch}`
}

module.exports = { option, hostTriple, suffixOf }
