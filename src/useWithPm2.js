'use strict'
// `keymetrics-agent use-with-pm2 [--pm2 <dir>]` and `--revert`.
//
// pm2@6 depends on `@pm2/agent`, so an npm `overrides` entry puts this agent
// under it. pm2@7 carries its own copy of the JS agent in
// `modules/pm2-io-agent` and requires it by relative path
// (`lib/API.js`, `lib/Client.js`, `lib/API/pm2-plus/link.js` →
// `modules/pm2-io-agent/src/InteractorClient`), which no override reaches.
// This command points that copy's entry points at this package:
//
//  - `modules/pm2-io-agent/src/InteractorClient.js` and `index.js` become
//    two-line stubs requiring this package's `src/InteractorClient.js`;
//  - the files they replace are kept, byte for byte, beside them as
//    `<file>.keymetrics-agent-orig` (same directory, so their relative
//    requires still resolve), listed in `modules/pm2-io-agent/.keymetrics-agent.json`;
//  - running it again only refreshes the stubs (the backup is never
//    overwritten); `--revert` puts the originals back and removes the backup;
//  - a pm2 whose layout is not the one above is refused, nothing touched.
//
// If this package is later removed, the stubs fall back to the kept JS agent
// (with a warning on stderr), so pm2 keeps working.

const fs = require('fs')
const path = require('path')

const AGENT_DIR = path.join('modules', 'pm2-io-agent')
const ENTRY_POINTS = ['src/InteractorClient.js', 'index.js']
// What pm2@7 requires, file by file: the layout this command knows.
const REQUIRERS = {
  'lib/API.js': '../modules/pm2-io-agent/src/InteractorClient',
  'lib/Client.js': '../modules/pm2-io-agent/src/InteractorClient',
  'lib/API/pm2-plus/link.js': '../../../modules/pm2-io-agent/src/InteractorClient'
}
const SUFFIX = '.keymetrics-agent-orig'
const MANIFEST = '.keymetrics-agent.json'
const MARKER = '// keymetrics-agent use-with-pm2 stub'
const OURS = path.join(__dirname, 'InteractorClient.js')

class UsageError extends Error {}

/** Finds pm2's directory: `--pm2 <dir>`, else the `pm2` that `require` sees from the cwd, else the global one. */
function locatePm2 (given) {
  if (given) return path.resolve(given)
  for (const from of [process.cwd(), __dirname]) {
    try {
      return path.dirname(require.resolve('pm2/package.json', { paths: [from] }))
    } catch (e) {}
  }
  try {
    const root = require('child_process').execFileSync('npm', ['root', '-g'], { encoding: 'utf8' }).trim()
    if (fs.existsSync(path.join(root, 'pm2', 'package.json'))) return path.join(root, 'pm2')
  } catch (e) {}
  throw new UsageError('cannot find pm2: pass its directory with --pm2 <dir> (e.g. $(npm root -g)/pm2)')
}

/** Checks that `dir` is a pm2@7 of the known layout; returns its version. */
function checkLayout (dir) {
  let pkg
  try {
    pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  } catch (e) {
    throw new UsageError(`${dir} is not a pm2 directory (no readable package.json)`)
  }
  if (pkg.name !== 'pm2') throw new UsageError(`${dir} holds the package ${JSON.stringify(pkg.name)}, not pm2`)
  const major = parseInt(String(pkg.version).split('.')[0], 10)
  if (!(major >= 7)) {
    throw new UsageError(`pm2 ${pkg.version} depends on @pm2/agent: use an npm "overrides" entry ("@pm2/agent": "npm:keymetrics-agent") instead, see the README`)
  }
  for (const [file, spec] of Object.entries(REQUIRERS)) {
    let text
    try {
      text = fs.readFileSync(path.join(dir, file), 'utf8')
    } catch (e) {
      throw new UsageError(`unknown pm2 ${pkg.version} layout: ${file} is missing; nothing changed`)
    }
    if (!text.includes(`require('${spec}')`)) {
      throw new UsageError(`unknown pm2 ${pkg.version} layout: ${file} does not require ${spec}; nothing changed`)
    }
  }
  for (const entry of ENTRY_POINTS) {
    if (!fs.existsSync(path.join(dir, AGENT_DIR, entry))) {
      throw new UsageError(`unknown pm2 ${pkg.version} layout: ${path.join(AGENT_DIR, entry)} is missing; nothing changed`)
    }
  }
  return pkg.version
}

function stub (entry) {
  const backup = './' + path.posix.basename(entry) + SUFFIX
  return `${MARKER}: this file was replaced; \`keymetrics-agent use-with-pm2 --revert\` restores the original.
let agent
try {
  agent = require(${JSON.stringify(OURS)})
} catch (e) {
  if (e.code !== 'MODULE_NOT_FOUND' || !String(e.message).includes(${JSON.stringify(OURS)})) throw e
  process.emitWarning('keymetrics-agent is gone (' + ${JSON.stringify(OURS)} + '): using the JS agent pm2 shipped with')
  agent = require(${JSON.stringify(backup)})
}
module.exports = agent
`
}

function writeAtomic (file, text) {
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, text)
  fs.renameSync(tmp, file)
}

/** Points pm2@7's agent entry points at this package. */
function use (pm2Dir) {
  const version = checkLayout(pm2Dir)
  const agentDir = path.join(pm2Dir, AGENT_DIR)
  const manifest = path.join(agentDir, MANIFEST)
  if (!fs.existsSync(manifest)) {
    for (const entry of ENTRY_POINTS) {
      if (fs.readFileSync(path.join(agentDir, entry), 'utf8').startsWith(MARKER)) {
        throw new UsageError(`${path.join(agentDir, entry)} is a stub but its backup is gone: reinstall pm2; nothing changed`)
      }
    }
    for (const entry of ENTRY_POINTS) fs.copyFileSync(path.join(agentDir, entry), path.join(agentDir, entry + SUFFIX))
    fs.writeFileSync(manifest, JSON.stringify({ pm2: version, files: ENTRY_POINTS, backupSuffix: SUFFIX, at: new Date().toISOString() }, null, 2) + '\n')
  }
  for (const entry of ENTRY_POINTS) writeAtomic(path.join(agentDir, entry), stub(entry))
  return `pm2 ${version} (${pm2Dir}) now runs keymetrics-agent (${path.dirname(__dirname)}); \`keymetrics-agent use-with-pm2 --revert\` undoes it`
}

/** Restores pm2@7's own agent entry points. */
function revert (pm2Dir) {
  checkLayout(pm2Dir)
  const agentDir = path.join(pm2Dir, AGENT_DIR)
  const manifestFile = path.join(agentDir, MANIFEST)
  let manifest
  try {
    manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'))
  } catch (e) {
    return `pm2 (${pm2Dir}) already runs its own agent: nothing to revert`
  }
  for (const entry of manifest.files) {
    const file = path.join(agentDir, entry)
    fs.renameSync(file + SUFFIX, file)
  }
  fs.rmSync(manifestFile)
  return `pm2 (${pm2Dir}) runs its own agent again`
}

module.exports = { use, revert, locatePm2, checkLayout, UsageError, MARKER, SUFFIX, MANIFEST, ENTRY_POINTS }
