#!/usr/bin/env node
'use strict'
// `npm run lint`: every style and correctness check CI runs, in one command.
//
//   cargo fmt --check                                   Rust formatting
//   cargo clippy --all-targets -- -D warnings           the core, its tests, the daemon binary
//   cargo clippy --lib --features node -- -D warnings   the napi glue (src/binding.rs)
//   oxlint (.oxlintrc.json) over src/*.js __test__ bench scripts dashboard
//   actionlint over .github/workflows (scripts/actionlint.js)
//
// Every check runs even when an earlier one fails, so one run lists all the
// findings; the exit code is 1 if any check failed.

const { spawnSync } = require('child_process')
const path = require('path')

const ROOT = path.join(__dirname, '..')
const bin = (name) => path.join(ROOT, 'node_modules', '.bin', process.platform === 'win32' ? `${name}.cmd` : name)

const CHECKS = [
  ['cargo fmt', 'cargo', ['fmt', '--all', '--check']],
  ['clippy (core, tests, daemon)', 'cargo', ['clippy', '--all-targets', '--', '-D', 'warnings']],
  ['clippy (napi glue)', 'cargo', ['clippy', '--lib', '--features', 'node', '--', '-D', 'warnings']],
  ['oxlint', bin('oxlint'), ['-c', '.oxlintrc.json', '--deny-warnings', 'src', '__test__', 'bench', 'scripts', 'dashboard']],
  ['actionlint', process.execPath, [path.join('scripts', 'actionlint.js')]]
]

const failed = []
for (const [name, cmd, args] of CHECKS) {
  console.log(`== lint: ${name}`)
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', shell: process.platform === 'win32' })
  if (r.error || r.status !== 0) failed.push(name)
}
if (failed.length) {
  console.error(`lint failed: ${failed.join(', ')}`)
  process.exitCode = 1
} else {
  console.log(`lint: ${CHECKS.length} checks passed`)
}
