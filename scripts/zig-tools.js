'use strict'
// cargo-zigbuild and zig, the cross linker of the shipped Linux builds.
//
// Linking through `zig cc` lets one Linux machine build binaries that load on
// an older glibc than its own (`x86_64-unknown-linux-gnu.2.28` asks for the
// glibc 2.28 symbol versions: RHEL 8, Ubuntu 20.04, Debian 10, every Linux
// Node 20 supports) and for musl. Both tools come from PyPI (`ziglang` ships
// the zig compiler as a wheel, `cargo-zigbuild` the cargo subcommand), so no
// system package and no download outside the registries is needed.
//
// `ensure()` returns the environment to build with: the tools already on PATH,
// or a private virtualenv under `.tools/zig` that it creates on first use
// (pinned versions, ~100 MB, git-ignored).

const { execFileSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const ROOT = path.join(__dirname, '..')
const VENV = path.join(ROOT, '.tools', 'zig')
const PINS = ['ziglang==0.17.1', 'cargo-zigbuild==0.24.1']
const BIN = process.platform === 'win32' ? 'Scripts' : 'bin'

function works (cmd, args, env) {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', env })
    return true
  } catch (e) {
    return false
  }
}

function python () {
  for (const cmd of ['python3', 'python']) {
    if (works(cmd, ['--version'])) return cmd
  }
  throw new Error('building the Linux binaries needs Python 3 (pip installs ziglang and cargo-zigbuild): none on PATH')
}

/** The environment in which `cargo zigbuild` and `napi build -x` find their tools. */
function ensure () {
  if (works('cargo-zigbuild', ['--version']) && (works('zig', ['version']) || works('python3', ['-m', 'ziglang', 'version']))) {
    return process.env
  }
  const bin = path.join(VENV, BIN)
  const env = Object.assign({}, process.env, { PATH: bin + path.delimiter + process.env.PATH })
  if (!fs.existsSync(path.join(bin, 'cargo-zigbuild'))) {
    console.log(`zig tools: installing ${PINS.join(' ')} into ${path.relative(process.cwd(), VENV)}`)
    fs.mkdirSync(path.dirname(VENV), { recursive: true })
    execFileSync(python(), ['-m', 'venv', VENV], { stdio: 'inherit' })
    execFileSync(path.join(bin, 'python'), ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...PINS], { stdio: 'inherit' })
  }
  // cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH: the
  // virtualenv's python3 comes first on this PATH.
  if (!works('cargo-zigbuild', ['--version'], env) || !works('python3', ['-m', 'ziglang', 'version'], env)) {
    throw new Error(`zig tools in ${VENV} do not run; remove that directory and try again`)
  }
  return env
}

module.exports = { ensure }
