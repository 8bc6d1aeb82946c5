'use strict';
// The Rust nssocket client (interop nssocket) ↔ a real nssocket 0.6 server:
// the legacy reverse channel of the Axon transport.

const test = require('node:test');
const assert = require('node:assert/strict');
const nssocket = require('nssocket');

const { buildInterop, spawnInterop, onCleanup } = require('./helpers/interop');

const T = { timeout: 20000 };

test.before(() => buildInterop());

/**
 * An nssocket server on 127.0.0.1:ephemeral; resolves with the port and a
 * promise of the first accepted NsSocket.
 */
async function server(t) {
  let accept;
  const accepted = new Promise((r) => (accept = r));
  const raw = []; // the net.Sockets: NsSocket.end() forgets its socket, so destroy() could not close it
  const srv = nssocket.createServer((socket) => {
    raw.push(socket.socket);
    accept(socket);
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  onCleanup(t, () => {
    for (const s of raw) s.destroy();
    return new Promise((r) => srv.close(() => r()));
  });
  return { port: srv.address().port, accepted };
}

/** Resolves with the data of the next `event` received by `socket`. */
function nextData(socket, event, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' from the Rust client within ${timeoutMs} ms`)), timeoutMs);
    socket.dataOnce(event, function (data) {
      clearTimeout(timer);
      resolve({ data, event: this.event });
    });
  });
}

test('nssocket: ask / ask:rep handshake, commands, garbage line, close', T, async (t) => {
  const { port, accepted } = await server(t);
  const p = spawnInterop(t, ['nssocket', `127.0.0.1:${port}`]);
  assert.deepEqual(await p.next(), { event: 'connected' });
  const socket = await accepted;

  // Server → agent: ['ask', null]
  socket.send('ask');
  assert.deepEqual(await p.next(), { path: ['ask'], data: null });

  // Agent → server: ask:rep with the metadata object.
  const rep = nextData(socket, 'ask:rep');
  const payload = { data: '20cc88ff46886de5293d36ad4f8ff585', public_key: 'pk', nested: { é: ['€', 1, null] } };
  p.write({ event: 'ask:rep', data: payload });
  const got = await rep;
  assert.deepEqual(got.data, payload);
  assert.deepEqual(got.event, ['data', 'ask:rep']);

  // Server → agent: a command whose data is a (ciphered) hex string.
  const hexCmd =
    '29c1278a35ca413a97a70966f499e037528a7b4455f58e115b0d3eea906b677fddd888f3401ad635d9fa62699ed78e3d66ecb686bece565673fb934ba6c64488';
  socket.send('trigger:pm2:action', hexCmd);
  assert.deepEqual(await p.next(), { path: ['trigger:pm2:action'], data: hexCmd });

  // A garbage line is skipped; later messages still arrive.
  socket.socket.write('not json\n');
  socket.socket.write('{"an":"object, not an array"}\n');
  socket.socket.write('["only-event"]\n');
  socket.send('trigger:action', { action_name: 'hello', process_id: 0 });
  assert.deepEqual(await p.next(), { path: ['trigger:action'], data: { action_name: 'hello', process_id: 0 } });

  // '::' is the path delimiter; a message split across writes is reassembled.
  socket.send('a::b', 1);
  assert.deepEqual(await p.next(), { path: ['a', 'b'], data: 1 });
  socket.socket.write('["split",');
  await new Promise((r) => setTimeout(r, 50));
  socket.socket.write('{"x":1}]\n["two","in-one-write"]\n');
  assert.deepEqual(await p.next(), { path: ['split'], data: { x: 1 } });
  assert.deepEqual(await p.next(), { path: ['two'], data: 'in-one-write' });

  // Agent → server: a trigger result in clear, and an event without data (→ null).
  const result = nextData(socket, 'trigger:pm2:result');
  p.write({ event: 'trigger:pm2:result', data: { ret: { err: null, data: { msg: 'pong' } }, meta: { method_name: 'ping' } } });
  assert.deepEqual((await result).data, { ret: { err: null, data: { msg: 'pong' } }, meta: { method_name: 'ping' } });
  const bare = nextData(socket, 'bare');
  p.write({ event: 'bare' });
  assert.equal((await bare).data, null);

  // Server closes → the driver reports it and exits.
  socket.end();
  assert.deepEqual(await p.next(), { event: 'closed' });
  assert.equal((await p.wait()).code, 0);
});

test('nssocket: wire bytes from the Rust client match nssocket.send', T, async (t) => {
  // Compare what the Rust side writes with what NsSocket.send writes for the
  // same call, byte for byte, using two raw servers.
  const net = require('node:net');
  const capture = async () => {
    const chunks = [];
    const conns = [];
    let conn;
    const connected = new Promise((r) => (conn = r));
    const srv = net.createServer((s) => {
      conns.push(s);
      s.on('data', (d) => chunks.push(d));
      conn(s);
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    onCleanup(t, () => {
      for (const c of conns) c.destroy();
      return new Promise((r) => srv.close(() => r()));
    });
    return { port: srv.address().port, connected, bytes: () => Buffer.concat(chunks) };
  };
  const msgs = [
    ['ask:rep', { data: 'abcd', public_key: 'pk' }],
    ['a::b', 1],
    ['arr', [1, 2]],
    ['trigger:pm2:result', { ret: { err: {} }, s: 'é\n\u2028' }],
  ];

  const rustSide = await capture();
  const p = spawnInterop(t, ['nssocket', `127.0.0.1:${rustSide.port}`]);
  assert.deepEqual(await p.next(), { event: 'connected' });
  const rustConn = await rustSide.connected;
  for (const [event, data] of msgs) p.write({ event, data });

  const jsSide = await capture();
  const client = new nssocket.NsSocket({ reconnect: false, type: 'tcp4' });
  onCleanup(t, () => client.destroy());
  client.connect(jsSide.port, '127.0.0.1');
  await jsSide.connected;
  for (const [event, data] of msgs) client.send(event, data);

  const lineCount = (b) => b.toString().split('\n').length - 1;
  const deadline = Date.now() + 10000;
  while ((lineCount(rustSide.bytes()) < msgs.length || lineCount(jsSide.bytes()) < msgs.length) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(rustSide.bytes().toString('hex'), jsSide.bytes().toString('hex'));
  assert.equal(
    rustSide.bytes().toString(),
    '["ask:rep",{"data":"abcd","public_key":"pk"}]\n["a","b",1]\n["arr",1,2]\n["trigger:pm2:result",{"ret":{"err":{}},"s":"é\\n\u2028"}]\n',
  );
  rustConn.destroy();
  assert.deepEqual(await p.next(), { event: 'closed' });
});

test('nssocket: connection refused is reported as an error line, exit 1', T, async (t) => {
  const net = require('node:net');
  // A port that was just free.
  const port = await new Promise((r) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => r(p));
    });
  });
  const p = spawnInterop(t, ['nssocket', `127.0.0.1:${port}`]);
  const line = await p.next();
  assert.ok(typeof line.error === 'string' && line.error.length > 0, JSON.stringify(line));
  assert.equal((await p.wait()).code, 1);
});
