'use strict';
// Helpers for the interop tests: build the Rust `interop` example once, spawn
// it, read its JSON stdout lines / write stdin lines, and clean everything up
// (processes, temp dirs, JS sockets) when a test ends.

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const TARGET = 'x86_64-unknown-linux-gnu';
// INTEROP_BIN=<path> runs the tests against another build of the driver
// (e.g. a mutated copy of the crate, to check that the tests can fail) and
// skips the cargo build.
const BINARY = process.env.INTEROP_BIN
  ? path.resolve(process.env.INTEROP_BIN)
  : path.join(process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target'),
    TARGET, 'release', 'examples', 'interop');

let built = !!process.env.INTEROP_BIN;

/** Builds the example (a fast no-op when up to date) and returns its path. */
function buildInterop() {
  if (built) return BINARY;
  try {
    execFileSync('cargo', ['build', '--release', '--target', TARGET, '--example', 'interop'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 15 * 60 * 1000,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    const err = new Error(`cargo build of the interop example failed:\n${e.stderr || e.message}`);
    err.cause = e;
    throw err;
  }
  if (!fs.existsSync(BINARY)) throw new Error(`interop binary missing after build: ${BINARY}`);
  built = true;
  return BINARY;
}

// Safety net: once every test of the file is done, a leaked handle (socket,
// server, child) must not keep the test file alive forever. The timer is
// unref'd, so it only fires when something else keeps the loop running; that
// is a bug in a test's cleanup, so the file fails loudly.
require('node:test').after(() => {
  setTimeout(() => {
    process.stderr.write('# open handles kept this test file alive after its tests ended; exiting with failure\n');
    process.exit(1);
  }, 5000).unref();
});

// Every process spawned here, killed at process exit whatever happens.
const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {}
  }
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const cleanups = new WeakMap();

async function runCleanup(fn, timeoutMs) {
  let timer;
  const limit = new Promise((resolve) => {
    timer = setTimeout(() => {
      process.stderr.write(`# cleanup still pending after ${timeoutMs} ms, moving on: ${fn.toString().slice(0, 120)}\n`);
      resolve();
    }, timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(fn), limit]);
  } catch (e) {
    process.stderr.write(`# cleanup failed: ${e && e.stack}\n`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `fn` when the test `t` ends (pass or fail), last registered first
 * (like `defer`: clients go before the servers they talk to, processes before
 * their temp dirs). A cleanup that hangs is abandoned after `timeoutMs`
 * (hooks have no timeout of their own; a hanging one would stall the file).
 */
function onCleanup(t, fn, timeoutMs = 5000) {
  if (!t || typeof t.after !== 'function') return;
  let stack = cleanups.get(t);
  if (!stack) {
    stack = [];
    cleanups.set(t, stack);
    t.after(async () => {
      while (stack.length) {
        const { fn: f, timeoutMs: ms } = stack.pop();
        await runCleanup(f, ms);
      }
    });
  }
  stack.push({ fn, timeoutMs });
}

/**
 * A temp directory (fs.mkdtempSync under os.tmpdir()) removed when `t` ends.
 * Kept short: unix socket paths are limited to ~107 bytes.
 */
function tmpDir(t, prefix = 'ka-io-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  onCleanup(t, () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A spawned interop process. `next()` resolves with the next stdout line
 * parsed as JSON (rejects on a non-JSON line, on exit before a line, or on
 * timeout); `waitFor(pred)` skips lines until one satisfies `pred`.
 */
class Interop {
  constructor(args, opts = {}) {
    this.args = args;
    this.lines = []; // parsed lines not consumed yet
    this.all = []; // every parsed line, for diagnostics
    this.waiters = [];
    this.stderr = '';
    this.exitInfo = null;
    this.proc = spawn(buildInterop(), args, {
      cwd: opts.cwd || ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(this.proc);
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', () => live.delete(this.proc));
      // 'close' (not 'exit'): only once stdout is drained, so no line printed
      // just before exiting can be missed.
      this.proc.on('close', (code, signal) => {
        this.exitInfo = { code, signal };
        this._flush();
        resolve(this.exitInfo);
      });
    });
    this.proc.on('error', (e) => {
      this.spawnError = e;
      this._flush();
    });
    this.proc.stdin.on('error', () => {}); // EPIPE after the child exited
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', (d) => {
      if (this.stderr.length < 1 << 20) this.stderr += d;
    });
    this.proc.stdout.setEncoding('utf8');
    let buf = '';
    this.proc.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim() === '') continue;
        let item;
        try {
          item = { value: JSON.parse(line) };
          this.all.push(item.value);
        } catch (e) {
          item = { error: new Error(`interop ${args[0]} printed a non-JSON line: ${JSON.stringify(line)}`) };
          this.all.push({ $nonJson: line });
        }
        this.lines.push(item);
      }
      this._flush();
    });
  }

  get pid() {
    return this.proc.pid;
  }

  _describe() {
    return `interop ${this.args.join(' ')}\n  lines so far: ${JSON.stringify(this.all)}\n  stderr: ${this.stderr.slice(-4000)}`;
  }

  _flush() {
    while (this.waiters.length && this.lines.length) {
      const w = this.waiters.shift();
      const item = this.lines.shift();
      clearTimeout(w.timer);
      if (item.error) w.reject(item.error);
      else w.resolve(item.value);
    }
    if (this.exitInfo || this.spawnError) {
      for (const w of this.waiters.splice(0)) {
        clearTimeout(w.timer);
        const why = this.spawnError ? `failed to spawn: ${this.spawnError.message}` : `exited (${JSON.stringify(this.exitInfo)})`;
        w.reject(new Error(`${why} before the next line\n${this._describe()}`));
      }
    }
  }

  /** The next JSON line. */
  next(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for a line\n${this._describe()}`));
      }, timeoutMs);
      this.waiters.push(w);
      this._flush();
    });
  }

  /** Skips lines until `pred(line)` is true; returns that line. */
  async waitFor(pred, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for a matching line\n${this._describe()}`);
      const line = await this.next(left);
      if (pred(line)) return line;
    }
  }

  /** Writes one stdin line (objects/arrays are JSON-encoded). */
  write(line) {
    const text = typeof line === 'string' ? line : JSON.stringify(line);
    this.proc.stdin.write(text + '\n');
  }

  /** Closes stdin (most long-running commands then exit). */
  end() {
    this.proc.stdin.end();
  }

  /** Resolves with {code, signal}; kills the process after `timeoutMs`. */
  async wait(timeoutMs = 10000) {
    let timer;
    const t = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const r = await Promise.race([this.exited, t]);
    clearTimeout(timer);
    if (r === 'timeout') {
      this.kill();
      throw new Error(`still running after ${timeoutMs} ms\n${this._describe()}`);
    }
    return r;
  }

  /** Kills the process (no-op when it already exited) and waits for it. */
  async kill() {
    if (!this.exitInfo && !this.spawnError) {
      try {
        this.proc.kill('SIGKILL');
      } catch {}
      await this.exited;
    }
  }
}

/** Spawns `interop <args…>`, killed when the test `t` ends. */
function spawnInterop(t, args, opts) {
  const p = new Interop(args, opts);
  onCleanup(t, () => p.kill());
  return p;
}

/**
 * Runs a command that exits by itself; resolves with
 * {code, signal, lines, stderr}.
 */
async function runInterop(t, args, { timeoutMs = 15000, ...opts } = {}) {
  const p = spawnInterop(t, args, opts);
  p.end();
  const { code, signal } = await p.wait(timeoutMs);
  const bad = p.lines.find((l) => l.error);
  if (bad) throw bad.error;
  return { code, signal, lines: p.lines.map((l) => l.value), stderr: p.stderr };
}

/** Polls `fn` until it returns a truthy value. */
async function until(fn, { timeoutMs = 10000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Resolves when `emitter` emits `event` (rejects after `timeoutMs`). */
function once(emitter, event, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, on);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${event}'`));
    }, timeoutMs);
    function on(...args) {
      clearTimeout(timer);
      resolve(args);
    }
    emitter.once(event, on);
  });
}

module.exports = {
  ROOT,
  BINARY,
  buildInterop,
  spawnInterop,
  runInterop,
  tmpDir,
  onCleanup,
  sleep,
  until,
  once,
  Interop,
};
