'use strict';
// Rust req + rpc client (interop rpc-call / rpc-session) against a real
// pm2-axon `rep` socket + pm2-axon-rpc Server bound on a unix path.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const axon = require('pm2-axon');
const rpc = require('pm2-axon-rpc');

const { buildInterop, runInterop, spawnInterop, tmpDir, onCleanup, once } = require('./helpers/interop');

const T = { timeout: 20000 };

test.before(() => buildInterop());

/** Binds a rep socket + rpc.Server on `sockPath`, exposing `methods`. */
async function jsServer(t, sockPath, methods) {
  const rep = axon.socket('rep');
  const server = new rpc.Server(rep);
  server.expose(methods);
  const bound = once(rep, 'bind');
  rep.bind(sockPath);
  await bound;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    rep.close();
  };
  onCleanup(t, close);
  return { rep, server, close };
}

// pm2-axon-rpc reads parameter names from `function (…)` source text, so
// exposed methods must be function expressions (not method shorthand).
const baseMethods = () => ({
  multi: function (a, b, c, cb) {
    cb(null, { sum: a + b }, `${c}!`, [a, b, c], null, true);
  },
  none: function (cb) {
    cb();
  },
  echo: function (v, cb) {
    cb(null, v);
  },
  fail: function (cb) {
    const e = new Error('boom from js');
    e.stack = 'Error: boom from js\n    at jsServer (fake.js:1:1)';
    cb(e);
  },
  failValue: function (cb) {
    cb({ code: 42, why: 'nope' });
  },
  failString: function (cb) {
    cb('plain string error');
  },
});

async function rustCall(t, sockPath, method, args, timeoutMs) {
  const argv = ['rpc-call', sockPath, method, JSON.stringify(args)];
  if (timeoutMs) argv.push(String(timeoutMs));
  const r = await runInterop(t, argv);
  assert.equal(r.code, 0, `rpc-call exited with ${r.code}: ${r.stderr}`);
  assert.equal(r.lines.length, 1, `one line expected, got ${JSON.stringify(r.lines)}`);
  return r.lines[0];
}

test('rpc-call: success with several args both ways, and the discovered method list', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  await jsServer(t, sock, baseMethods());

  const r = await rustCall(t, sock, 'multi', [2, 3, 'c']);
  assert.deepEqual(r.args, [{ sum: 5 }, 'c!', [2, 3, 'c'], null, true]);
  assert.deepEqual([...r.methods].sort(), ['echo', 'fail', 'failString', 'failValue', 'multi', 'none']);
  assert.equal(r.error, undefined);

  const none = await rustCall(t, sock, 'none', []);
  assert.deepEqual(none.args, []);

  // Non-ASCII and nested values survive the round trip unchanged.
  const value = { s: 'é€ \u2028 "q"\n', n: -1.5, big: 1e21, arr: [{}, [], ''], nul: null, t: false };
  const echo = await rustCall(t, sock, 'echo', [value]);
  assert.deepEqual(echo.args, [value]);
});

test('rpc-call: an Error reply carries message and stack', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  await jsServer(t, sock, baseMethods());
  const r = await rustCall(t, sock, 'fail', []);
  assert.equal(r.args, undefined);
  assert.equal(r.error, 'boom from js');
  assert.equal(r.message, 'boom from js');
  assert.equal(r.stack, 'Error: boom from js\n    at jsServer (fake.js:1:1)');
});

test('rpc-call: a non-Error error value is passed through as a value', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  await jsServer(t, sock, baseMethods());

  const r = await rustCall(t, sock, 'failValue', []);
  assert.deepEqual(r.error, { code: 42, why: 'nope' });
  assert.equal(r.message, '[object Object]'); // String(value), as the JS client builds new Error(value)
  assert.equal(r.stack, null);

  const s = await rustCall(t, sock, 'failString', []);
  assert.equal(s.error, 'plain string error');
  assert.equal(s.message, 'plain string error');
  assert.equal(s.stack, null);
});

test('rpc-call: unknown method gets the server error text', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  await jsServer(t, sock, baseMethods());
  const r = await rustCall(t, sock, 'nope', [1]);
  assert.equal(r.error, 'method "nope" does not exist');
  assert.equal(r.message, 'method "nope" does not exist');
  assert.equal(r.args, undefined);
});

test('rpc-call: nobody listening → "not ready", exit 1', T, async (t) => {
  const dir = tmpDir(t);
  const r = await runInterop(t, ['rpc-call', path.join(dir, 'absent.sock'), 'x', '[]', '500']);
  assert.equal(r.code, 1);
  assert.deepEqual(r.lines, [{ error: 'not ready' }]);
});

test('rpc-call: connects to a server bound after the client started (axon reconnect)', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  const p = spawnInterop(t, ['rpc-call', sock, 'echo', '["late"]', '8000']);
  p.end();
  await new Promise((r) => setTimeout(r, 400));
  await jsServer(t, sock, baseMethods());
  const line = await p.next(10000);
  assert.deepEqual(line.args, ['late']);
  assert.equal((await p.wait()).code, 0);
});

test('rpc-session: JS server restarted → client reconnects and rediscovers methods', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  const first = await jsServer(t, sock, {
    version: function (cb) {
      cb(null, 1);
    },
  });
  const s = spawnInterop(t, ['rpc-session', sock]);

  const ready1 = await s.waitFor((l) => l.event === 'ready');
  assert.deepEqual(ready1.methods, ['version']);
  s.write({ id: 1, method: 'version', args: [] });
  const r1 = await s.waitFor((l) => l.id === 1);
  assert.deepEqual(r1.args, [1]);

  // Restart: close everything, rebind on the same path with a new method.
  first.close();
  await s.waitFor((l) => l.event === 'disconnected');
  await jsServer(t, sock, {
    version: function (cb) {
      cb(null, 2);
    },
    added: function (x, cb) {
      cb(null, `added:${x}`);
    },
  });
  const ready2 = await s.waitFor((l) => l.event === 'ready', 15000);
  assert.deepEqual([...ready2.methods].sort(), ['added', 'version']);

  s.write({ id: 2, method: 'added', args: ['y'] });
  s.write({ id: 3, method: 'version', args: [] });
  const replies = {};
  while (!(replies[2] && replies[3])) {
    const l = await s.waitFor((x) => x.id === 2 || x.id === 3);
    replies[l.id] = l;
  }
  assert.deepEqual(replies[2].args, ['added:y']);
  assert.deepEqual(replies[3].args, [2]);
  assert.deepEqual([...replies[2].methods].sort(), ['added', 'version']);

  s.end();
  assert.equal((await s.wait()).code, 0);
});

test('rpc-session: concurrent calls are correlated by message id', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  await jsServer(t, sock, {
    // Replies out of order: later calls answer first.
    delayed: function (n, cb) {
      setTimeout(() => cb(null, n * 10), (10 - n) * 20);
    },
  });
  const s = spawnInterop(t, ['rpc-session', sock]);
  await s.waitFor((l) => l.event === 'ready');
  for (let n = 0; n < 10; n++) s.write({ id: n, method: 'delayed', args: [n] });
  const got = new Map();
  while (got.size < 10) {
    const l = await s.waitFor((x) => typeof x.id === 'number');
    got.set(l.id, l.args);
  }
  for (let n = 0; n < 10; n++) assert.deepEqual(got.get(n), [n * 10], `reply of call ${n}`);
});

test('rpc-session: a pending call fails fast when the server goes away; calls made while down are queued', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  const first = await jsServer(t, sock, {
    hang: function (cb) {
      // never answers
    },
  });
  const s = spawnInterop(t, ['rpc-session', sock]);
  await s.waitFor((l) => l.event === 'ready');
  s.write({ id: 'h', method: 'hang', args: [], timeout: 15000 });
  await new Promise((r) => setTimeout(r, 200));
  first.close();
  // Both lines come, in either order.
  let lost;
  let disconnected = false;
  while (!lost || !disconnected) {
    const l = await s.waitFor((x) => x.id === 'h' || x.event === 'disconnected', 5000);
    if (l.id === 'h') lost = l;
    else disconnected = true;
  }
  assert.equal(lost.args, undefined);
  assert.match(lost.failure, /connection lost/);

  // While nobody listens, a call waits in the offline queue…
  s.write({ id: 'q', method: 'version', args: [], timeout: 15000 });
  await new Promise((r) => setTimeout(r, 300));
  await jsServer(t, sock, {
    version: function (cb) {
      cb(null, 'v2');
    },
  });
  // …and is sent once the client reconnected.
  const queued = await s.waitFor((l) => l.id === 'q', 15000);
  assert.deepEqual(queued.args, ['v2']);
});

test('rpc-call: a large reply (2 MiB) arrives intact', T, async (t) => {
  const dir = tmpDir(t);
  const sock = path.join(dir, 'rpc.sock');
  const big = 'é'.repeat(1 << 20);
  await jsServer(t, sock, {
    big: function (cb) {
      cb(null, { big }, [1, 2, 3]);
    },
  });
  const r = await rustCall(t, sock, 'big', []);
  assert.equal(r.args[0].big.length, big.length);
  assert.ok(r.args[0].big === big);
  assert.deepEqual(r.args[1], [1, 2, 3]);
});
