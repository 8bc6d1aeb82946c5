'use strict'
// The demo app `npm start` runs in the PM2 it starts (README, "The local
// dashboard"). With no dependency it does what an app with @pm2/io does, over
// PM2's IPC channel (`process.send`), so the agent has something to report:
//  - logs a line every second (stdout) and now and then a warning (stderr);
//  - serves HTTP on 127.0.0.1 (an ephemeral port), calls itself a few times a
//    second and reports each request as an `axm:trace` (the shape @pm2/io's
//    tracing sent), which the agent aggregates into `axm:transaction`;
//  - sends a custom event (`human:event`) every 5 s;
//  - declares a custom action, `say-hello`, answered with `axm:reply`;
//  - throws an uncaught exception KM_DEMO_THROW_MS ms after it starts
//    (default 60 s): PM2 reports it (`process:exception`, which the agent
//    completes with the source context) and restarts the app.

const http = require('http')

const send = (msg) => { if (process.send) process.send(msg) }
const THROW_MS = Number(process.env.KM_DEMO_THROW_MS) > 0 ? Number(process.env.KM_DEMO_THROW_MS) : 60000

let tick = 0
setInterval(() => {
  tick++
  console.log(`demo tick ${tick}: all good, ${Math.round(process.memoryUsage().rss / 1048576)} MB resident`)
  if (tick % 10 === 0) console.error(`demo warning: tick ${tick} is a multiple of 10`)
}, 1000)

// A custom action, declared the way @pm2/io declares one.
send({ type: 'axm:action', data: { action_name: 'say-hello', action_type: 'custom', arity: 0 } })
process.on('message', (msg) => {
  const name = typeof msg === 'string' ? msg : msg && msg.msg
  if (name !== 'say-hello') return
  console.log('demo: someone clicked say-hello')
  send({ type: 'axm:reply', data: { return: { hello: 'world', at: new Date().toISOString() }, action_name: 'say-hello' } })
})

let events = 0
setInterval(() => {
  events++
  send({ type: 'human:event', data: { __name: 'demo:heartbeat', count: events, mood: events % 3 ? 'fine' : 'great' } })
}, 5000)

// HTTP: a tiny server, called by ourselves; each request traced.
let spanId = 0
const iso = (ms) => new Date(ms).toISOString()
const server = http.createServer((req, res) => {
  const delay = req.url.startsWith('/slow') ? 40 + Math.random() * 40 : Math.random() * 5
  setTimeout(() => {
    res.writeHead(req.url === '/missing' ? 404 : 200, { 'Content-Type': 'text/plain' })
    res.end('ok\n')
  }, delay)
})
server.listen(0, '127.0.0.1', () => {
  const port = server.address().port
  const paths = ['/users/1', '/users/2', '/health', '/slow/report', '/missing']
  let i = 0
  setInterval(() => {
    const p = paths[i++ % paths.length]
    const start = Date.now()
    http.get({ host: '127.0.0.1', port, path: p }, (res) => {
      res.resume()
      res.on('end', () => {
        const end = Math.max(Date.now(), start + 1)
        send({
          type: 'axm:trace',
          data: {
            projectId: 0,
            traceId: `demo-${++spanId}`,
            spans: [{
              name: p,
              kind: 'RPC_SERVER',
              spanId: String(spanId),
              parentSpanId: '0',
              labels: { 'http/method': 'GET', 'http/path': p, 'http/status_code': String(res.statusCode) },
              startTime: iso(start),
              endTime: iso(end)
            }]
          }
        })
      })
    }).on('error', () => {})
  }, 250)
})

function parseConfig (text) {
  // Thrown from here, so the exception's context shows this function.
  const conf = JSON.parse(text)
  return conf.settings.retries
}

setTimeout(() => {
  console.log('demo: about to read a config that has no settings')
  parseConfig('{"name":"demo"}')
}, THROW_MS)
