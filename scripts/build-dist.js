#!/usr/bin/env node
'use strict'
// `npm run build:dist`: the binaries that ship, exactly as the release
// workflow builds them (.github/workflows/release.yml runs this script on
// each target's runner).
//
//   node scripts/build-dist.js [--target <triple>]
//
//  - the addon `interactor.<platform>.node` (napi build, profile `dist`:
//    LTO, one codegen unit, stripped) and the native daemon
//    `keymetrics-agent-daemon.<platform>` (profile `dist-native`);
//  - Linux targets link through zig (scripts/zig-tools.js): glibc targets
//    against the glibc GLIBC_FLOOR symbol versions, so the binary loads on
//    every Linux Node 20 runs on, not only on the build machine's glibc;
//    musl targets with zig's musl. Other OSes build with their own linker.
//
// The host triple by default. CARGO_TARGET_DIR is honoured.

const { execFileSync } = require('child_process')
const path = require('path')
const zigTools = require('./zig-tools')
const { option, hostTriple } = require('./platform')

/** The oldest glibc the shipped Linux gnu binaries need (RHEL 8, Debian 10, Ubuntu 20.04). */
const GLIBC_FLOOR = '2.28'
const ROOT = path.join(__dirname, '..')

function main () {
  const triple = option('--target', hostTriple())
  const linux = triple.includes('-linux-')
  const useZig = linux && process.platform === 'linux'
  // cargo-zigbuild's spelling: the glibc version after the triple.
  const spelled = useZig && triple.endsWith('-gnu') ? `${triple}.${GLIBC_FLOOR}` : triple
  const env = useZig ? zigTools.ensure() : process.env
  const napi = path.join(ROOT, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
  const run = (args) => execFileSync(process.execPath, args, { cwd: ROOT, env, stdio: 'inherit' })

  run([napi, 'build', '--platform', '--profile', 'dist', '--features', 'node', '--target', spelled,
    ...(useZig ? ['--cross-compile'] : []), '--', '--lib'])
  // The native daemon is Unix-only (src/bin/): Windows ships the addon alone.
  if (triple.includes('windows')) return
  run([path.join(__dirname, 'build-daemon.js'), '--profile', 'dist', '--target', triple,
    ...(useZig ? ['--zig', spelled] : [])])
}

module.exports = { GLIBC_FLOOR }
if (require.main === module) main()
