import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { isWalvaultError } from '../../src/errors';
import { crc32 } from '@node-rs/crc32';
import { encodeEnvelope, readEnvelopeHeader, sha256 } from '../../src/archive/envelope';
import { decodeEnvelope } from '../../src/archive/read/decode-object';

const LABEL = 'wal/000000010000000000000007';

function corruptNamingLabel(err: unknown): boolean {
  assert.ok(isWalvaultError(err, 'ARCHIVE_CORRUPT'), `expected ARCHIVE_CORRUPT, got ${String(err)}`);
  assert.ok(err.message.startsWith(`${LABEL}: `), err.message);
  return true;
}

/** Rewrites the header CRC so a test can reach the checks behind it. */
function fixCrc(obj: Buffer): Buffer {
  const extLength = obj.readUInt32BE(56);
  obj.writeUInt32BE(crc32(obj.subarray(0, 60 + extLength)), 60 + extLength);
  return obj;
}

describe('envelope', () => {
  for (const [name, size] of [
    ['empty', 0],
    ['small', 37],
    ['16 MiB', 16 << 20],
  ] as const) {
    test(`round trip: ${name}`, async () => {
      const plaintext = randomBytes(size);
      const obj = encodeEnvelope(plaintext);
      const { header, plaintext: out } = await decodeEnvelope(obj, LABEL);
      assert.ok(out.equals(plaintext));
      assert.equal(header.version, 1);
      assert.equal(header.codec, 'none');
      assert.equal(header.encryption, 'none');
      assert.equal(header.plaintextSize, size);
      assert.deepEqual(header.sha256, createHash('sha256').update(plaintext).digest());
      assert.equal(header.headerLength, 64);
      assert.equal(header.bodyLength, size);
      assert.equal(obj.length, 64 + size);
      assert.equal(obj.subarray(0, 4).toString('ascii'), 'WVLT');
      assert.deepEqual(header.extension, {});
    });
  }

  test('encoding is deterministic (re-uploads produce identical bytes)', () => {
    const p = randomBytes(500);
    assert.ok(encodeEnvelope(p).equals(encodeEnvelope(Buffer.from(p))));
  });

  test('extension round trip', async () => {
    const ext = { keyId: 'site-a/2025', wrapped: [1, 2, 3] };
    const obj = encodeEnvelope(Buffer.from('hello'), ext);
    const json = Buffer.from(JSON.stringify(ext));
    const { header, plaintext } = await decodeEnvelope(obj, LABEL);
    assert.deepEqual(header.extension, ext);
    assert.equal(header.headerLength, 64 + json.length);
    assert.equal(plaintext.toString(), 'hello');
  });

  test('the header can be read from the header bytes alone', () => {
    const plaintext = randomBytes(4096);
    const obj = encodeEnvelope(plaintext, { k: 'v' });
    const full = readEnvelopeHeader(obj, LABEL);
    const prefix = readEnvelopeHeader(obj.subarray(0, full.headerLength), LABEL);
    assert.deepEqual(prefix, full);
    assert.deepEqual(prefix.sha256, sha256(plaintext));
    assert.throws(() => readEnvelopeHeader(obj.subarray(0, full.headerLength - 1), LABEL), corruptNamingLabel);
  });

  test('every single flipped byte of a small object is detected', async () => {
    const obj = encodeEnvelope(randomBytes(100), { keyId: 'k' });
    for (let i = 0; i < obj.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const bad = Buffer.from(obj);
        bad[i] ^= mask;
        await assert.rejects(decodeEnvelope(bad, LABEL), corruptNamingLabel, `byte ${i} ^ ${mask}`);
      }
    }
  });

  test('every single flipped header bit is detected by readEnvelopeHeader alone', () => {
    const obj = encodeEnvelope(randomBytes(10));
    const { headerLength } = readEnvelopeHeader(obj, LABEL);
    for (let bit = 0; bit < headerLength * 8; bit++) {
      const bad = Buffer.from(obj);
      bad[bit >> 3] ^= 1 << (bit & 7);
      assert.throws(() => readEnvelopeHeader(bad, LABEL), corruptNamingLabel, `bit ${bit}`);
    }
  });

  test('flipped bytes in a 16 MiB body are detected', async () => {
    const obj = encodeEnvelope(randomBytes(16 << 20));
    const positions = [64, 65, 1000, 8 << 20, obj.length - 2, obj.length - 1];
    for (let i = 0; i < 10; i++) positions.push(64 + Math.floor(Math.random() * (16 << 20)));
    for (const pos of positions) {
      obj[pos] ^= 0x10;
      await assert.rejects(decodeEnvelope(obj, LABEL), (err: unknown) => corruptNamingLabel(err) && /checksum mismatch/.test((err as Error).message));
      obj[pos] ^= 0x10;
    }
    await assert.doesNotReject(decodeEnvelope(obj, LABEL));
  });

  test('truncated or extended objects are detected', async () => {
    const obj = encodeEnvelope(randomBytes(200), { a: 1 });
    for (let len = 0; len < obj.length; len++) {
      await assert.rejects(decodeEnvelope(obj.subarray(0, len), LABEL), corruptNamingLabel, `length ${len}`);
    }
    await assert.rejects(decodeEnvelope(Buffer.concat([obj, Buffer.alloc(1)]), LABEL), (err: unknown) => corruptNamingLabel(err) && /1 unexpected bytes after the body/.test((err as Error).message));

    const big = encodeEnvelope(randomBytes(16 << 20));
    await assert.rejects(decodeEnvelope(big.subarray(0, big.length - 1), LABEL), (err: unknown) => corruptNamingLabel(err) && /truncated/.test((err as Error).message));
  });

  test('foreign files are reported as not ours', async () => {
    await assert.rejects(decodeEnvelope(Buffer.from('{"systemId": "1"}'), LABEL), (err: unknown) => corruptNamingLabel(err) && /not a walvault archive object/.test((err as Error).message));
    await assert.rejects(decodeEnvelope(Buffer.alloc(0), LABEL), corruptNamingLabel);
  });

  test('well-formed headers this version cannot decode are refused with a reason', () => {
    const obj = encodeEnvelope(Buffer.from('x'));
    const cases: Array<[number, number, RegExp]> = [
      [4, 2, /version 2/],
      [5, 3, /must be framed/],
      [5, 200, /codec "unknown id 200"/],
      [6, 1, /must be framed/],
      [6, 9, /encryption "unknown id 9"/],
      [7, 0x02, /flags/],
    ];
    for (const [offset, value, reason] of cases) {
      const bad = Buffer.from(obj);
      bad[offset] = value;
      fixCrc(bad);
      assert.throws(() => readEnvelopeHeader(bad, LABEL), (err: unknown) => corruptNamingLabel(err) && reason.test((err as Error).message), reason.source);
    }
  });

  test('a consistent header over the wrong body fails the size or checksum check', async () => {
    const obj = encodeEnvelope(Buffer.from('abcdef'));
    const otherSize = Buffer.from(obj);
    otherSize.writeBigUInt64BE(5n, 8);
    fixCrc(otherSize);
    await assert.rejects(decodeEnvelope(otherSize, LABEL), (err: unknown) => corruptNamingLabel(err) && /size mismatch/.test((err as Error).message));
  });

  test('sha256 is SHA-256', () => {
    const b = randomBytes(999);
    assert.deepEqual(sha256(b), createHash('sha256').update(b).digest());
    assert.equal(sha256(Buffer.alloc(0)).toString('hex'), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
});
