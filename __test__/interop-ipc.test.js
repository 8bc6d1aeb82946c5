'use strict';
// The Rust side of Node's IPC channel (interop ipc-send): a Node parent spawns
// it with an 'ipc' stdio slot and receives the message via child.on('message'),
// with the channel on fd 3 (PM2 7 / @pm2/agent 2.x) and on fd 0 (@pm2/agent 1.0.8).

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');

const fs = require('node:fs');
const path = require('node:path');

const { buildInterop, onCleanup, tmpDir } = require('./helpers/interop');

const T = { timeout: 20000 };

let BIN;
test.before(() => {
  BIN = buildInterop();
});

/**
 * Spawns `interop ipc-send <json>` with `stdio`; resolves with the messages
 * received and the exit status once the child exited and the channel closed.
 */
function ipcSend(t, msg, stdio, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['ipc-send', typeof msg === 'string' ? msg : JSON.stringify(msg)], {
      stdio,
      env: { ...process.env, ...env },
    });
    onCleanup(t, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const messages = [];
    let stderr = '';
    let exit = null;
    let disconnected = false;
    const done = () => {
      if (exit && disconnected) resolve({ messages, ...exit, stderr });
    };
    child.on('message', (m) => messages.push(m));
    child.on('error', reject);
    if (child.stderr) child.stderr.on('data', (d) => (stderr += d));
    child.on('disconnect', () => {
      disconnected = true;
      done();
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      // Without an IPC slot there is no 'disconnect'.
      if (!child.connected) disconnected = true;
      done();
    });
  });
}

const agentMessage = {
  error: false,
  km_data: {
    endpoints: { web: 'http://127.0.0.1', ws: 'ws://127.0.0.1:47022', push: 'x', reverse: 'y' },
    active: true,
    pending: false,
    disabled: false,
  },
  online: true,
  pid: 31445,
  machine_name: 'm1',
  public_key: 'pub',
  secret_key: 'sec',
};

test('ipc-send: channel on fd 3 (stdio [ignore, pipe, pipe, ipc])', T, async (t) => {
  const r = await ipcSend(t, agentMessage, ['ignore', 'pipe', 'pipe', 'ipc']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.messages, [agentMessage]);
});

test('ipc-send: channel on fd 0 (stdio [ipc, pipe, pipe]) like @pm2/agent 1.0.8', T, async (t) => {
  const r = await ipcSend(t, agentMessage, ['ipc', 'pipe', 'pipe']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.messages, [agentMessage]);
});

test('ipc-send: non-ASCII, nested and line-separator content survives', T, async (t) => {
  const msg = { log: 'ligne é€ 🚀\nsecond line \u2028 \u2029', nested: { arr: [1, 'two', null, { deep: true }] }, n: 1.25 };
  const r = await ipcSend(t, msg, ['ignore', 'pipe', 'pipe', 'ipc']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.messages, [msg]);
});

test('ipc-send: the failure message shape ({error:true,msg}) arrives too', T, async (t) => {
  const msg = { error: true, msg: 'Connection refused, you might have hit the limit of agents you can connect' };
  const r = await ipcSend(t, msg, ['ipc', 'pipe', 'pipe']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.messages, [msg]);
});

test('ipc-send: refuses NODE_-prefixed commands (Node would swallow them)', T, async (t) => {
  const r = await ipcSend(t, { cmd: 'NODE_HANDLE', x: 1 }, ['ignore', 'pipe', 'pipe', 'ipc']);
  assert.equal(r.code, 1);
  assert.deepEqual(r.messages, []);
  assert.match(r.stderr, /NODE_/);
});

test('ipc-send: without a channel (or with a bad NODE_CHANNEL_FD) it fails cleanly', T, async (t) => {
  for (const fd of [undefined, 'abc']) {
    const env = { ...process.env };
    delete env.NODE_CHANNEL_FD;
    delete env.NODE_CHANNEL_SERIALIZATION_MODE;
    if (fd !== undefined) env.NODE_CHANNEL_FD = fd;
    const child = spawn(BIN, ['ipc-send', '{"a":1}'], { stdio: ['ignore', 'pipe', 'pipe'], env });
    onCleanup(t, () => child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 1, `NODE_CHANNEL_FD=${fd}`);
    assert.match(stderr, /NODE_CHANNEL_FD/);
  }
});

test('ipc-send: spawned the way @pm2/agent 1.0.8 InteractorClient.daemonize does', T, async (t) => {
  // detached, stdio ['ipc', <log fd>, <log fd>], env merged under the parent's,
  // then once('message') → disconnect(), and exit status 0.
  const dir = tmpDir(t);
  const logFile = path.join(dir, 'agent.log');
  const out = fs.openSync(logFile, 'a');
  const err = fs.openSync(logFile, 'a');
  onCleanup(t, () => {
    fs.closeSync(out);
    fs.closeSync(err);
  });
  const child = spawn(BIN, ['ipc-send', JSON.stringify(agentMessage)], {
    detached: true,
    cwd: dir,
    env: Object.assign({ PM2_HOME: dir, PM2_MACHINE_NAME: 'm1', PM2_SECRET_KEY: 'sec', PM2_PUBLIC_KEY: 'pub' }, process.env),
    stdio: ['ipc', out, err],
  });
  onCleanup(t, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise((resolve) => child.on('exit', (status) => resolve(status)));
  const msg = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within 7 s (the CLI would give up)')), 7000);
    child.once('message', (m) => {
      clearTimeout(timer);
      resolve(m);
    });
  });
  child.disconnect();
  assert.deepEqual(msg, agentMessage);
  assert.equal(await exited, 0);
  assert.equal(fs.readFileSync(logFile, 'utf8'), '', 'nothing on stdout/stderr');
});
