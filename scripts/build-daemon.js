#!/usr/bin/env node
'use strict'
// Builds the native agent daemon (src/bin/keymetrics-agent-daemon.rs) and
// copies it to the package root as `keymetrics-agent-daemon.<platform>`,
// next to `interactor.<platform>.node`, where src/nativeDaemon.js finds it.
//
//   node scripts/build-daemon.js [--profile release|dev|dist] [--target <triple>]
//                                [--zig <zigbuild target>]
//
// `--zig x86_64-unknown-linux-gnu.2.28` links through `cargo zigbuild` with
// that spelling (scripts/build-dist.js passes it with the environment of
// scripts/zig-tools.js); the artifact still lands under `<triple>/`.
//
// It is built WITHOUT the `node` feature (no napi in the binary), for the
// host triple by default, passed explicitly as `--target` so it shares the
// target directory (and the dependencies already built) with `napi build`
// and `cargo test --target`. CARGO_TARGET_DIR is honoured.

const { execFileSync } = require('child_process')
const fs = require('fs')
const path = require('path')
const { DAEMON_NAME, ROOT } = require('../src/nativeDaemon')
const { option, hostTriple, suffixOf } = require('./platform')

const profile = option('--profile', 'release')
const triple = option('--target', hostTriple())
// The shipped binary is built for size (Cargo.toml, profile dist-native).
const cargoProfile = profile === 'dist' ? 'dist-native' : profile
const profileDir = cargoProfile === 'dev' ? 'debug' : cargoProfile
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target')
const exe = triple.includes('windows') ? '.exe' : ''

const zig = option('--zig', null)
const cargoArgs = zig
  ? ['zigbuild', '--bin', DAEMON_NAME, '--profile', cargoProfile, '--target', zig]
  : ['build', '--bin', DAEMON_NAME, '--profile', cargoProfile, '--target', triple]
execFileSync('cargo', cargoArgs, { cwd: ROOT, stdio: 'inherit' })

const built = path.join(targetDir, triple, profileDir, DAEMON_NAME + exe)
const dest = path.join(ROOT, `${DAEMON_NAME}.${suffixOf(triple)}${exe}`)
// Copy beside, then rename: a running daemon keeps its (old) file.
const tmp = `${dest}.tmp-${process.pid}`
fs.copyFileSync(built, tmp)
fs.chmodSync(tmp, 0o755)
fs.renameSync(tmp, dest)
console.log(`native daemon: ${path.relative(process.cwd(), dest) || dest}`)
