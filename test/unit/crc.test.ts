/**
 * The CRCs walvault takes from @node-rs/crc32: CRC-32 (zlib/gzip, the envelope header's
 * checksum: a different result would make every stored object unreadable) and CRC-32C
 * (Castagnoli: spool files, backup manifests). Checked against published values and against
 * a table implementation written here from the polynomials, on random buffers.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { crc32, crc32c } from '@node-rs/crc32';

/** A reflected CRC-32 by table: initial value and final xor 0xFFFFFFFF. */
function tableCrc(poly: number): (buf: Uint8Array) => number {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? poly ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return (buf) => {
    let c = 0xffffffff;
    for (let i = 0; i < buf.length; i++) c = table[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
}

const crc32Reference = tableCrc(0xedb88320);
const crc32cReference = tableCrc(0x82f63b78);

/** Lengths around the sizes the library's wide paths switch at, and a header's. */
const LENGTHS = [0, 1, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 65, 100, 255, 256, 1000, 4096, 8191, 65536 + 3];

describe('CRC-32 (zlib polynomial, the envelope header)', () => {
  test('published check values', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(crc32(Buffer.alloc(0)), 0);
    assert.equal(crc32(Buffer.from('The quick brown fox jumps over the lazy dog')), 0x414fa339);
    assert.equal(crc32(Buffer.from('WVLT')), crc32Reference(Buffer.from('WVLT')));
  });

  test('equals the table implementation on random buffers, unsigned', () => {
    for (const n of LENGTHS) {
      for (let i = 0; i < 5; i++) {
        const b = randomBytes(n);
        const got = crc32(b);
        assert.ok(got >= 0 && got <= 0xffffffff && Number.isInteger(got), `${got} is a uint32`);
        assert.equal(got, crc32Reference(b), `${n} bytes`);
        // A view into a larger buffer (a header is a subarray of the object).
        const inner = Buffer.concat([randomBytes(5), b, randomBytes(3)]).subarray(5, 5 + n);
        assert.equal(crc32(inner), crc32Reference(b), `${n} bytes at an offset`);
      }
    }
  });
});

describe('CRC-32C (Castagnoli: spool files, backup manifests)', () => {
  test('published check values (RFC 3720, B.4)', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c);
  });

  test('equals the table implementation on random buffers, and carries on from a previous CRC', () => {
    for (const n of LENGTHS) {
      const b = randomBytes(n);
      assert.equal(crc32c(b) >>> 0, crc32cReference(b), `${n} bytes`);
      const cut = n >> 1;
      assert.equal(crc32c(b.subarray(cut), crc32c(b.subarray(0, cut))) >>> 0, crc32cReference(b), `${n} bytes in two calls`);
    }
  });
});
