#!/usr/bin/env node
'use strict'
// The `keymetrics-agent` command (package.json `bin`).
//
//   keymetrics-agent use-with-pm2 [--pm2 <dir>]          pm2@7 runs this agent
//   keymetrics-agent use-with-pm2 --revert [--pm2 <dir>]  pm2@7 runs its own again

const { use, revert, locatePm2, UsageError } = require('./useWithPm2')

const USAGE = `usage:
  keymetrics-agent use-with-pm2 [--pm2 <dir>]           make pm2@7 run keymetrics-agent
  keymetrics-agent use-with-pm2 --revert [--pm2 <dir>]  give pm2@7 its own agent back

<dir> is pm2's package directory (default: the pm2 require() finds from here, else $(npm root -g)/pm2).
pm2@6 needs no command: add "overrides": { "@pm2/agent": "npm:keymetrics-agent" } to your package.json.`

function main (argv) {
  const [command, ...rest] = argv
  if (command === '-h' || command === '--help' || command === 'help') {
    console.log(USAGE)
    return 0
  }
  if (command !== 'use-with-pm2') {
    console.error(command ? `unknown command ${JSON.stringify(command)}\n${USAGE}` : USAGE)
    return 2
  }
  let dir = null
  let undo = false
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--revert') undo = true
    else if (rest[i] === '--pm2' && rest[i + 1]) dir = rest[++i]
    else {
      console.error(`unknown option ${JSON.stringify(rest[i])}\n${USAGE}`)
      return 2
    }
  }
  try {
    const pm2Dir = locatePm2(dir)
    console.log(undo ? revert(pm2Dir) : use(pm2Dir))
    return 0
  } catch (e) {
    if (!(e instanceof UsageError)) throw e
    console.error(`keymetrics-agent: ${e.message}`)
    return 1
  }
}

process.exitCode = main(process.argv.slice(2))
