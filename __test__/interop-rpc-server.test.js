'use strict';
// A real pm2-axon `req` + pm2-axon-rpc Client against the Rust rep + rpc
// server (interop rpc-serve), on a unix path and on TCP.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const net = require('node:net');
const axon = require('pm2-axon');
const rpc = require('pm2-axon-rpc');

const { buildInterop, spawnInterop, tmpDir, onCleanup, once } = require('./helpers/interop');

const T = { timeout: 20000 };

test.before(() => buildInterop());

/** Starts `interop rpc-serve <endpoint>` and waits for its "bound" line. */
async function rustServer(t, endpoint) {
  const p = spawnInterop(t, ['rpc-serve', endpoint]);
  const bound = await p.next();
  assert.equal(bound.event, 'bound', JSON.stringify(bound));
  return { p, bound };
}

/** A connected JS req socket + rpc.Client. */
async function jsClient(t, endpoint) {
  const req = axon.socket('req');
  const client = new rpc.Client(req);
  onCleanup(t, () => req.close());
  const connected = once(req, 'connect');
  req.connect(endpoint);
  await connected;
  const call = (...args) =>
    new Promise((resolve) => {
      client.call(...args, (err, ...rest) => resolve({ err, rest }));
    });
  const methods = () =>
    new Promise((resolve, reject) => {
      client.methods((err, m) => (err ? reject(err) : resolve(m)));
    });
  return { req, client, call, methods };
}

test('rpc-serve: methods discovery lists ping/add/fail/failValue with params', T, async (t) => {
  const sock = path.join(tmpDir(t), 'rpc.sock');
  const { bound } = await rustServer(t, sock);
  assert.equal(bound.endpoint, sock);
  const c = await jsClient(t, sock);
  const m = await c.methods();
  assert.deepEqual(m, {
    ping: { name: 'ping', params: ['data', 'cb'] },
    add: { name: 'add', params: ['a', 'b', 'cb'] },
    fail: { name: 'fail', params: ['cb'] },
    failValue: { name: 'failValue', params: ['cb'] },
  });
});

test('rpc-serve: ping and add return the callback arguments', T, async (t) => {
  const sock = path.join(tmpDir(t), 'rpc.sock');
  await rustServer(t, sock);
  const c = await jsClient(t, sock);

  const ping = await c.call('ping', { hello: 'wörld', n: [1, 2] });
  assert.equal(ping.err, null);
  assert.deepEqual(ping.rest, [{ msg: 'pong', got: { hello: 'wörld', n: [1, 2] } }]);

  const add = await c.call('add', 2, 3);
  assert.equal(add.err, null);
  assert.deepEqual(add.rest, [5, 'sum']);

  const addf = await c.call('add', 0.5, 0.25);
  assert.deepEqual(addf.rest, [0.75, 'sum']);
});

test('rpc-serve: fail → Error with message "boom" and the sent stack', T, async (t) => {
  const sock = path.join(tmpDir(t), 'rpc.sock');
  await rustServer(t, sock);
  const c = await jsClient(t, sock);
  const r = await c.call('fail');
  assert.ok(r.err instanceof Error);
  assert.equal(r.err.message, 'boom');
  assert.equal(r.err.stack, 'Error: boom\n    at rust');
  assert.deepEqual(r.rest, []);
});

test('rpc-serve: failValue → error built from the value', T, async (t) => {
  const sock = path.join(tmpDir(t), 'rpc.sock');
  await rustServer(t, sock);
  const c = await jsClient(t, sock);
  // Look at the raw reply object too, not only at what the client makes of it.
  const raw = await new Promise((resolve) => c.req.send({ type: 'call', method: 'failValue', args: [] }, resolve));
  assert.deepEqual(raw, { error: { code: 42 } });
  const r = await c.call('failValue');
  assert.ok(r.err instanceof Error);
  assert.equal(r.err.message, '[object Object]');
});

test('rpc-serve: unknown method and malformed calls get pm2-axon-rpc error texts', T, async (t) => {
  const sock = path.join(tmpDir(t), 'rpc.sock');
  await rustServer(t, sock);
  const c = await jsClient(t, sock);
  const r = await c.call('nope', 1);
  assert.ok(r.err instanceof Error);
  assert.equal(r.err.message, 'method "nope" does not exist');

  const send = (msg) => new Promise((resolve) => c.req.send(msg, resolve));
  assert.deepEqual(await send({ type: 'call' }), { error: '.method required' });
  assert.deepEqual(await send({ type: 'call', method: 'ping' }), { error: '.args required' });
  assert.deepEqual(await send({ type: 'methods' }).then((m) => Object.keys(m.methods)), ['ping', 'add', 'fail', 'failValue']);
});

test('rpc-serve: many concurrent calls from two JS clients are answered to the right caller', T, async (t) => {
  const sock = path.join(tmpDir(t), 'rpc.sock');
  await rustServer(t, sock);
  const a = await jsClient(t, sock);
  const b = await jsClient(t, sock);
  const calls = [];
  for (let i = 0; i < 50; i++) {
    calls.push(a.call('add', i, 1000).then((r) => assert.deepEqual(r.rest, [i + 1000, 'sum'])));
    calls.push(b.call('add', i, 2000).then((r) => assert.deepEqual(r.rest, [i + 2000, 'sum'])));
  }
  await Promise.all(calls);
});

test('rpc-serve: works over TCP too', T, async (t) => {
  // Pick a free loopback port, then let the Rust side bind it.
  const port = await new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  await rustServer(t, `tcp://127.0.0.1:${port}`);
  const c = await jsClient(t, `tcp://127.0.0.1:${port}`);
  const r = await c.call('add', 40, 2);
  assert.deepEqual(r.rest, [42, 'sum']);
});

test('rpc-serve: a stale socket file is replaced; a live one is refused', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  // Stale: a process that bound the path and died without unlinking it.
  const { spawnSync } = require('node:child_process');
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  assert.ok(require('node:fs').existsSync(sock), 'stale socket file left behind');

  const first = await rustServer(t, sock);
  const c = await jsClient(t, sock);
  assert.deepEqual((await c.call('add', 1, 1)).rest, [2, 'sum']);

  const second = spawnInterop(t, ['rpc-serve', sock]);
  const line = await second.next();
  assert.match(String(line.error), /Process already listening on socket .*rpc\.sock/);
  assert.equal((await second.wait()).code, 1);
  // The first server is unaffected.
  assert.deepEqual((await c.call('add', 2, 2)).rest, [4, 'sum']);
  first.p.end();
  assert.equal((await first.p.wait()).code, 0);
});

test(
  'rpc-serve: unknown method without args → "does not exist" (checked before .args, as pm2-axon-rpc does)',
  T,
  async (t) => {
    const sock = path.join(tmpDir(t), 'rpc.sock');
    await rustServer(t, sock);
    const c = await jsClient(t, sock);
    const reply = await new Promise((resolve) => c.req.send({ type: 'call', method: 'nope' }, resolve));
    assert.deepEqual(reply, { error: 'method "nope" does not exist' });
  },
);
