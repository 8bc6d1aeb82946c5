'use strict';
// The Rust rpc client and sub-emitter against a real PM2 7 daemon
// (node_modules/pm2) running with a private PM2_HOME in a temp dir.

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { ROOT, buildInterop, runInterop, spawnInterop } = require('./helpers/interop');

const T = { timeout: 30000 };
const PM2_BIN = path.join(ROOT, 'node_modules', 'pm2', 'bin', 'pm2');
const APP = 'ka-interop-app';

const userPm2Home = path.join(os.homedir(), '.pm2');
const userPm2HomeExisted = fs.existsSync(userPm2Home);

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'ka-pm2-'));
const rpcSock = path.join(home, 'rpc.sock');
const pubSock = path.join(home, 'pub.sock');
const appFile = path.join(home, 'app.js');

/** The env every pm2 process gets: our PM2_HOME, no PM2.io keys. */
function pm2Env() {
  const env = { ...process.env, PM2_HOME: home };
  for (const k of Object.keys(env)) {
    if (/^(PM2_(PUBLIC|SECRET)_KEY|PM2_MACHINE_NAME|KEYMETRICS_|NODE_CHANNEL_)/.test(k)) delete env[k];
  }
  return env;
}

function pm2(args, timeout = 30000) {
  return new Promise((resolve) => {
    execFile(process.execPath, [PM2_BIN, ...args], { env: pm2Env(), cwd: home, timeout }, (err, stdout, stderr) =>
      resolve({ err, stdout, stderr }),
    );
  });
}

function readPid(file) {
  try {
    const pid = parseInt(fs.readFileSync(file, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** PIDs that belong to this PM2_HOME: the daemon and the apps it started. */
function ownedPids() {
  const pids = [readPid(path.join(home, 'pm2.pid'))];
  const dir = path.join(home, 'pids');
  if (fs.existsSync(dir)) for (const f of fs.readdirSync(dir)) pids.push(readPid(path.join(dir, f)));
  return pids.filter((p) => p && p !== process.pid);
}

let killed = false;
let known = [];

/** `pm2 kill` for our PM2_HOME, then SIGKILL whatever of ours survived. */
function killDaemonSync() {
  if (killed) return;
  killed = true;
  known = [...new Set([...known, ...ownedPids()])];
  spawnSync(process.execPath, [PM2_BIN, 'kill'], { env: pm2Env(), cwd: home, timeout: 20000, stdio: 'ignore' });
  for (const pid of known) {
    if (alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
  }
  fs.rmSync(home, { recursive: true, force: true });
}

// Whatever happens (failed before(), crash, Ctrl-C of the runner), the daemon goes.
process.on('exit', killDaemonSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    killDaemonSync();
    process.exit(1);
  });
}
test.after(() => killDaemonSync());

test.before(async () => {
  buildInterop();
  fs.writeFileSync(appFile, `let n = 0;\nsetInterval(() => console.log('interop-line ' + n++), 200);\n`);
  const r = await pm2(['start', appFile, '--name', APP]);
  known = ownedPids();
  if (r.err) throw new Error(`pm2 start failed: ${r.err.message}\n${r.stdout}\n${r.stderr}`);
  assert.ok(fs.existsSync(rpcSock), 'rpc.sock in the private PM2_HOME');
  assert.ok(fs.existsSync(pubSock), 'pub.sock in the private PM2_HOME');
});

async function rpcCall(t, method, args) {
  const r = await runInterop(t, ['rpc-call', rpcSock, method, JSON.stringify(args), '10000'], { env: { PM2_HOME: home } });
  assert.equal(r.code, 0, `rpc-call ${method}: ${r.stderr}`);
  assert.equal(r.lines.length, 1);
  return r.lines[0];
}

test('pm2: rpc getMonitorData([{}]) lists the app', T, async (t) => {
  const r = await rpcCall(t, 'getMonitorData', [{}]);
  for (const m of ['getMonitorData', 'ping', 'restartProcessId', 'msgProcess', 'deleteProcessId', 'resetMetaProcessId']) {
    assert.ok(r.methods.includes(m), `PM2 exposes ${m}: ${r.methods}`);
  }
  assert.equal(r.error, undefined, JSON.stringify(r));
  assert.equal(r.args.length, 1);
  const list = r.args[0];
  assert.ok(Array.isArray(list));
  const app = list.find((p) => p.name === APP);
  assert.ok(app, `app in ${JSON.stringify(list.map((p) => p.name))}`);
  assert.equal(typeof app.pm_id, 'number');
  assert.equal(typeof app.pid, 'number');
  assert.equal(typeof app.pm2_env, 'object');
  assert.equal(app.pm2_env.name, APP);
  assert.equal(app.pm2_env.pm_exec_path, appFile);
  assert.equal(app.pm2_env.status, 'online');
  assert.equal(app.pm2_env.PM2_HOME, home, 'the daemon runs with the private PM2_HOME');
  assert.equal(typeof app.monit, 'object');
});

test('pm2: rpc ping, errors with stack, unknown method', T, async (t) => {
  const ping = await rpcCall(t, 'ping', [{}]);
  assert.deepEqual(ping.args, [{ msg: 'pong' }]);

  const unknownId = await rpcCall(t, 'msgProcess', [{ id: 4242, msg: 'x' }]);
  assert.equal(unknownId.args, undefined);
  assert.match(unknownId.message, /4242 id unknown/);
  assert.equal(typeof unknownId.stack, 'string', 'PM2 sends an Error → stack');
  assert.match(unknownId.stack, /4242 id unknown/);

  const nope = await rpcCall(t, 'noSuchMethod', []);
  assert.equal(nope.error, 'method "noSuchMethod" does not exist');
});

test('pm2: sub pub.sock log:* receives the app’s stdout lines', T, async (t) => {
  const s = spawnInterop(t, ['sub', pubSock, 'log:*', '100'], { env: { PM2_HOME: home } });
  assert.deepEqual(await s.next(12000), { event: 'connected' });
  const ev = await s.waitFor((l) => l.topic === 'log:out' && l.args[0] && l.args[0].process && l.args[0].process.name === APP, 15000);
  assert.deepEqual(ev.captures, ['out']);
  assert.equal(ev.args.length, 1);
  const packet = ev.args[0];
  assert.match(packet.data, /^interop-line \d+\n$/);
  assert.equal(packet.process.name, APP);
  assert.equal(typeof packet.process.pm_id, 'number');
  assert.equal(typeof packet.at, 'number');
  // Lines keep coming, in order.
  const next = await s.waitFor((l) => l.topic === 'log:out' && l.args[0].process.name === APP, 15000);
  const n1 = Number(/\d+/.exec(packet.data)[0]);
  const n2 = Number(/\d+/.exec(next.args[0].data)[0]);
  assert.ok(n2 > n1, `${n2} after ${n1}`);
});

test('pm2: restartProcessId over rpc → process:event on the bus', T, async (t) => {
  const list = (await rpcCall(t, 'getMonitorData', [{}])).args[0];
  const app = list.find((p) => p.name === APP);
  assert.ok(app);
  const s = spawnInterop(t, ['sub', pubSock, 'process:event', '20'], { env: { PM2_HOME: home } });
  assert.deepEqual(await s.next(12000), { event: 'connected' });
  // The sub's connect() can return before the daemon accepted it (pub drops
  // until then), so restart again if no event came.
  let ev;
  for (let attempt = 0; attempt < 3 && !ev; attempt++) {
    const r = await rpcCall(t, 'restartProcessId', [{ id: app.pm_id }]);
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.args[0].pm_id ?? r.args[0].pm2_env?.pm_id ?? app.pm_id, app.pm_id);
    ev = await s.waitFor((l) => l.args[0] && l.args[0].process && l.args[0].process.name === APP, 5000).catch(() => null);
  }
  assert.ok(ev, `no process:event for ${APP}`);
  assert.equal(ev.topic, 'process:event');
  assert.deepEqual(ev.captures, []);
  assert.ok(['restart', 'exit', 'online', 'start', 'stop'].includes(ev.args[0].event), ev.args[0].event);
  assert.equal(ev.args[0].process.pm_id, app.pm_id);
});

test('pm2: ~/.pm2 was not touched', () => {
  if (!userPm2HomeExisted) assert.equal(fs.existsSync(userPm2Home), false, `${userPm2Home} was created`);
});
