#!/usr/bin/env node
'use strict'
// Copies the built binaries of one target into its platform package
// npm/<platform>/ (the addon `interactor.<platform>.node` and the native
// daemon `keymetrics-agent-daemon.<platform>`), ready for `npm pack` or
// `npm publish`. The release workflow runs it after `npm run build:dist`;
// the tarball test runs it too.
//
//   node scripts/stage-platform.js [--target <triple>]

const fs = require('fs')
const path = require('path')
const { option, hostTriple, suffixOf } = require('./platform')

const ROOT = path.join(__dirname, '..')

function stage (triple) {
  const platform = suffixOf(triple)
  const dir = path.join(ROOT, 'npm', platform)
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  for (const file of pkg.files) {
    const from = path.join(ROOT, file)
    if (!fs.existsSync(from)) throw new Error(`${file} is missing: run \`npm run build:dist -- --target ${triple}\` first`)
    fs.copyFileSync(from, path.join(dir, file))
    fs.chmodSync(path.join(dir, file), 0o755)
  }
  console.log(`staged ${pkg.files.join(', ')} into npm/${platform}/`)
  return dir
}

module.exports = { stage }
if (require.main === module) stage(option('--target', hostTriple()))
