'use strict';
// The Rust pub socket → a real pm2-axon `sub` (decoded by amp-message):
// connect mode (the agent's legacy push socket, interop pub) and bind mode
// (interop pub-bind).

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const axon = require('pm2-axon');

const { buildInterop, spawnInterop, runInterop, tmpDir, onCleanup, once, until, sleep } = require('./helpers/interop');

const T = { timeout: 20000 };

test.before(() => buildInterop());

/** A pm2-axon sub socket recording every message (args without the net socket). */
function recorder(sub) {
  const messages = [];
  sub.on('message', (...args) => {
    args.pop(); // pm2-axon appends the net.Socket
    messages.push(args);
  });
  return messages;
}

async function boundSub(t, where) {
  const sub = axon.socket('sub');
  const messages = recorder(sub);
  const bound = once(sub, 'bind');
  if (typeof where === 'string') sub.bind(where);
  else sub.bind(0, '127.0.0.1');
  await bound;
  onCleanup(t, () => sub.close());
  return { sub, messages, port: typeof where === 'string' ? null : sub.server.address().port };
}

test('pub (connect) → JS sub bound on TCP 127.0.0.1:ephemeral: strings, JSON, raw buffers', T, async (t) => {
  const { messages, port } = await boundSub(t);
  const frames = [
    ['hello'],
    [{ a: 1, nested: { list: [1, 'two', null] } }],
    ['log:out', { $raw: 'dead' }, 42, null, true, 'é€'],
    ['{"k":"v"}'], // a JSON *string* stays a string (sendv2 of the push channel)
    [{ $raw: '' }, 'after-empty-buffer'],
    [[1, 2, 3], 1.5, -7, false],
  ];
  const r = await runInterop(t, ['pub', `tcp://127.0.0.1:${port}`, JSON.stringify(frames)]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.lines, frames.map(() => ({ sent: true })));
  await until(() => messages.length >= frames.length, { what: 'all frames at the JS sub' });
  assert.equal(messages.length, frames.length);

  assert.deepEqual(messages[0], ['hello']);
  assert.deepEqual(messages[1], [{ a: 1, nested: { list: [1, 'two', null] } }]);
  const [topic, buf, n, nul, bool, uni] = messages[2];
  assert.equal(topic, 'log:out');
  assert.ok(Buffer.isBuffer(buf), 'raw arg must arrive as a Buffer');
  assert.equal(buf.toString('hex'), 'dead');
  assert.equal(n, 42);
  assert.equal(nul, null);
  assert.equal(bool, true);
  assert.equal(uni, 'é€');
  assert.equal(typeof messages[3][0], 'string');
  assert.equal(messages[3][0], '{"k":"v"}');
  assert.ok(Buffer.isBuffer(messages[4][0]));
  assert.equal(messages[4][0].length, 0);
  assert.equal(messages[4][1], 'after-empty-buffer');
  assert.deepEqual(messages[5], [[1, 2, 3], 1.5, -7, false]);
});

test('pub (connect) → JS sub bound on a unix path; the subscriber may come up late', T, async (t) => {
  const sock = path.join(tmpDir(t), 'push.sock');
  // Start the publisher first: it retries (axon backoff) until the sub binds.
  const p = spawnInterop(t, ['pub', sock, JSON.stringify([['late', { ok: true }]])]);
  p.end();
  await sleep(300);
  const { messages } = await boundSub(t, sock);
  assert.deepEqual(await p.next(10000), { sent: true });
  assert.equal((await p.wait()).code, 0);
  await until(() => messages.length >= 1, { what: 'frame at the JS sub' });
  assert.deepEqual(messages, [['late', { ok: true }]]);
});

test('pub (connect): exact AMP bytes as captured from pm2-axon', T, async (t) => {
  // A raw TCP server, to compare bytes with docs/protocols.md §1.
  const chunks = [];
  const conns = [];
  const server = net.createServer((s) => {
    conns.push(s);
    s.on('data', (d) => chunks.push(d));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  onCleanup(t, () => {
    for (const c of conns) c.destroy();
    return new Promise((r) => server.close(() => r()));
  });
  const frames = [['hi'], ['log:out', { a: 1 }], ['x', { $raw: 'dead' }, 42, null, true], ['é']];
  const r = await runInterop(t, ['pub', `tcp://127.0.0.1:${server.address().port}`, JSON.stringify(frames)]);
  assert.equal(r.code, 0, r.stderr);
  const expected = [
    '11 00000004 733a6869',
    '12 00000009 733a6c6f673a6f7574 00000009 6a3a7b2261223a317d',
    '15 00000003 733a78 00000002 dead 00000004 6a3a3432 00000006 6a3a6e756c6c 00000006 6a3a74727565',
    '11 00000004 733ac3a9',
  ]
    .join('')
    .replace(/ /g, '');
  await until(() => Buffer.concat(chunks).length >= expected.length / 2, { what: 'all bytes' });
  assert.equal(Buffer.concat(chunks).toString('hex'), expected);
});

test('pub (connect): frames that AMP cannot carry are refused, not sent', T, async (t) => {
  const { messages, port } = await boundSub(t);
  const sixteen = Array.from({ length: 16 }, (_, i) => i);
  const frames = [['ok-1'], [], sixteen, ['ok-2']];
  const r = await runInterop(t, ['pub', `tcp://127.0.0.1:${port}`, JSON.stringify(frames)]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.lines, [{ sent: true }, { sent: false }, { sent: false }, { sent: true }]);
  await until(() => messages.length >= 2, { what: 'two frames' });
  await sleep(100);
  // The stream stayed in sync: exactly the two valid frames, in order.
  assert.deepEqual(messages, [['ok-1'], ['ok-2']]);
});

test('pub-bind → JS sub connecting (unix path), two subscribers', T, async (t) => {
  const sock = path.join(tmpDir(t), 'pub.sock');
  const p = spawnInterop(t, ['pub-bind', sock]);
  assert.deepEqual(await p.next(), { event: 'bound' });

  const subs = [];
  for (let i = 0; i < 2; i++) {
    const sub = axon.socket('sub');
    const messages = recorder(sub);
    const connected = once(sub, 'connect');
    sub.connect(sock);
    onCleanup(t, () => sub.close());
    await connected;
    subs.push({ sub, messages });
  }
  // The JS 'connect' fires before the Rust side accepted: probe until both
  // peers are counted (probes reach the subscribers too; ignored below).
  await until(
    async () => {
      p.write(['probe']);
      return (await p.next()).peers === 2;
    },
    { what: 'pub-bind to count two peers' },
  );
  p.write(['process:event', { event: 'online' }, { $raw: '0102ff' }]);
  assert.deepEqual(await p.next(), { peers: 2 });
  p.write(['done']);
  assert.deepEqual(await p.next(), { peers: 2 });

  for (const { messages } of subs) {
    await until(() => messages.some((m) => m[0] === 'done'), { what: 'done at each subscriber' });
    const real = messages.filter((m) => m[0] !== 'probe');
    assert.equal(real.length, 2);
    assert.equal(real[0][0], 'process:event');
    assert.deepEqual(real[0][1], { event: 'online' });
    assert.ok(Buffer.isBuffer(real[0][2]));
    assert.equal(real[0][2].toString('hex'), '0102ff');
    assert.deepEqual(real[1], ['done']);
  }

  // One subscriber leaves: the publisher notices and counts one peer.
  subs[0].sub.close();
  await until(
    async () => {
      p.write(['probe']);
      return (await p.next()).peers === 1;
    },
    { what: 'pub-bind to count one peer' },
  );
  p.end();
  assert.equal((await p.wait()).code, 0);
});

test('pub-bind with no subscriber drops (0 peers), like axon', T, async (t) => {
  const sock = path.join(tmpDir(t), 'pub.sock');
  const p = spawnInterop(t, ['pub-bind', sock]);
  assert.deepEqual(await p.next(), { event: 'bound' });
  p.write(['nobody']);
  assert.deepEqual(await p.next(), { peers: 0 });
  p.end();
  assert.equal((await p.wait()).code, 0);
});
