'use strict';
// The Rust Cipher (interop cipher) against Node's crypto: EVP_BytesToKey(MD5,
// no salt, 1 round) + AES-256-CBC/PKCS#7, hex, i.e. the old
// crypto.createCipher('aes256', secret) the agent and backend use.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { buildInterop, runInterop } = require('./helpers/interop');

const T = { timeout: 20000 };

test.before(() => buildInterop());

/** OpenSSL EVP_BytesToKey with MD5, no salt, count 1: 32-byte key + 16-byte IV. */
function bytesToKey(secret) {
  const pw = Buffer.from(secret, 'utf8');
  const blocks = [];
  let prev = Buffer.alloc(0);
  while (Buffer.concat(blocks).length < 48) {
    prev = crypto.createHash('md5').update(Buffer.concat([prev, pw])).digest();
    blocks.push(prev);
  }
  const all = Buffer.concat(blocks);
  return { key: all.subarray(0, 32), iv: all.subarray(32, 48) };
}

function nodeEncrypt(secret, text) {
  const { key, iv } = bytesToKey(secret);
  const c = crypto.createCipheriv('aes-256-cbc', key, iv);
  return Buffer.concat([c.update(text, 'utf8'), c.final()]).toString('hex');
}

function nodeDecrypt(secret, hex) {
  const { key, iv } = bytesToKey(secret);
  const d = crypto.createDecipheriv('aes-256-cbc', key, iv);
  return Buffer.concat([d.update(Buffer.from(hex, 'hex')), d.final()]).toString('utf8');
}

async function rust(t, op, secret, text) {
  const r = await runInterop(t, ['cipher', op, secret, text]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.lines.length, 1);
  return r.lines[0];
}

const SECRET = 'secret-key-123';

test('cipher: EVP_BytesToKey in the test matches docs/protocols.md', () => {
  const { key, iv } = bytesToKey(SECRET);
  assert.equal(key.toString('hex'), '30b7081680c1c64494e213492601b75f34b241624496a94d0fd0d370e6e0629e');
  assert.equal(iv.toString('hex'), '7e73f5d10dcbee8f94a1b3a96e8afaf7');
});

test('cipher: docs/protocols.md test vectors, both directions', T, async (t) => {
  const vectors = [
    ['{"machine_name":"m1"}', '20cc88ff46886de5293d36ad4f8ff585db9214355001f419c7ef37409caa3665'],
    ['hello', '47fce5eea52120b285f62c79da28e85a'],
    ['', '525935fbc88bb0587df6f7cdddc5eac8'],
    ['0123456789abcdef', '26ca778d349cfed068d4e8af1341688e2a398f5d5ead29b629c95de83d3b7345'],
    ['é€', 'c8dd9680a9ff7c6cc1b80fc7b95cd31c'],
  ];
  for (const [plain, hex] of vectors) {
    assert.equal(nodeEncrypt(SECRET, plain), hex, `node sanity for ${JSON.stringify(plain)}`);
    assert.deepEqual(await rust(t, 'encrypt', SECRET, plain), { hex }, `rust encrypt ${JSON.stringify(plain)}`);
    assert.deepEqual(await rust(t, 'decrypt', SECRET, hex), { text: plain }, `rust decrypt ${JSON.stringify(plain)}`);
  }
  // The captured reverse-channel command.
  const cmd =
    '29c1278a35ca413a97a70966f499e037528a7b4455f58e115b0d3eea906b677fddd888f3401ad635d9fa62699ed78e3d66ecb686bece565673fb934ba6c64488';
  const d = await rust(t, 'decrypt', SECRET, cmd);
  assert.deepEqual(JSON.parse(d.text), { method_name: 'ping', parameters: { name: 'app' } });
});

test('cipher: Rust ciphertext equals Node’s; each side deciphers the other', T, async (t) => {
  const longJson = JSON.stringify({
    machine_name: 'machine-ü',
    public_key: 'pub',
    recycle: false,
    pm2_version: '7.0.4',
    memory: 25276.510208,
    hostname: 'host',
    cpus: Array.from({ length: 40 }, (_, i) => ({ model: `CPU ${i} “quoted”`, speed: 2400 + i, times: { user: i, nice: 0, sys: 1, idle: 99, irq: 0 } })),
  });
  const samples = [
    'ascii text',
    'unicode: é€ 日本語 🚀 \u2028',
    '',
    'x',
    '0123456789abcde', // 15 bytes: one pad byte
    '0123456789abcdef0123456789abcdef', // two full blocks: a whole pad block
    longJson,
  ];
  const secrets = [SECRET, 'another secret with spaces', 'clé-🔑', 'a'.repeat(100)];
  for (const secret of secrets) {
    for (const plain of samples) {
      const expected = nodeEncrypt(secret, plain);
      const { hex } = await rust(t, 'encrypt', secret, plain);
      assert.equal(hex, expected, `ciphertext of ${JSON.stringify(plain.slice(0, 40))} with ${JSON.stringify(secret)}`);
      assert.match(hex, /^([0-9a-f]{32})+$/);
      assert.equal(nodeDecrypt(secret, hex), plain);
      assert.deepEqual(await rust(t, 'decrypt', secret, expected), { text: plain });
    }
  }
});

test('cipher: matches crypto.createCipher where Node still has it', T, async (t) => {
  if (typeof crypto.createCipher !== 'function') {
    t.skip('crypto.createCipher removed in this Node version');
    return;
  }
  // Silence DEP0106 for this one check.
  const emitWarning = process.emitWarning;
  process.emitWarning = () => {};
  try {
    for (const plain of ['hello', '{"a":1}', 'é€']) {
      const c = crypto.createCipher('aes256', SECRET);
      const hex = c.update(plain, 'utf8', 'hex') + c.final('hex');
      assert.deepEqual(await rust(t, 'encrypt', SECRET, plain), { hex });
    }
  } finally {
    process.emitWarning = emitWarning;
  }
});

test('cipher: wrong key, bad hex and truncated input are errors, not garbage', T, async (t) => {
  const hex = nodeEncrypt(SECRET, 'some secret payload');
  const wrong = await rust(t, 'decrypt', 'not the key', hex);
  assert.equal(typeof wrong.error, 'string', JSON.stringify(wrong));
  assert.equal(wrong.text, undefined);
  const notHex = await rust(t, 'decrypt', SECRET, 'zz-not-hex');
  assert.equal(typeof notHex.error, 'string');
  const truncated = await rust(t, 'decrypt', SECRET, hex.slice(0, hex.length - 2));
  assert.equal(typeof truncated.error, 'string');
  // Upper-case hex (what a hand-written backend might send) still deciphers.
  assert.deepEqual(await rust(t, 'decrypt', SECRET, hex.toUpperCase()), { text: 'some secret payload' });
});
