import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { crc32c } from '@node-rs/crc32';
import { crc32cCombine, crc32cCombiner, crc32cOfZeros } from '../../src/util/crc32c-combine';

describe('CRC-32C of a concatenation from its parts', () => {
  test('equals the CRC of the whole, for lengths from 0 to megabytes', () => {
    for (const [la, lb] of [[0, 0], [0, 5], [7, 0], [1, 1], [13, 8192], [8192, 8193], [100000, 1 << 20], [3, (1 << 20) + 17]]) {
      const a = randomBytes(la);
      const b = randomBytes(lb);
      const whole = crc32c(Buffer.concat([a, b])) >>> 0;
      assert.equal(crc32cCombine(crc32c(a), crc32c(b), lb), whole, `${la} + ${lb} bytes`);
    }
  });

  test('many pieces folded left give the CRC of the whole', () => {
    const pieces = Array.from({ length: 50 }, (_, i) => randomBytes(1 + ((i * 7919) % 20000)));
    let crc = 0;
    for (const p of pieces) crc = crc32cCombine(crc, crc32c(p), p.length);
    assert.equal(crc, crc32c(Buffer.concat(pieces)) >>> 0);
  });

  test('a combiner for one length gives what crc32cCombine gives, and the CRC of the whole', () => {
    for (const lb of [0, 1, 3, 8192, 8193, 1 << 20]) {
      const combine = crc32cCombiner(lb);
      for (let i = 0; i < 20; i++) {
        const a = randomBytes(1 + i * 97);
        const b = randomBytes(lb);
        assert.equal(combine(crc32c(a), crc32c(b)), crc32cCombine(crc32c(a), crc32c(b), lb), `${a.length} + ${lb} bytes`);
        assert.equal(combine(crc32c(a), crc32c(b)), crc32c(Buffer.concat([a, b])) >>> 0, `${a.length} + ${lb} bytes, the whole`);
      }
    }
  });

  test('zero runs, as a sparse file reads them', () => {
    for (const n of [1, 8192, 100001, 3 << 20]) assert.equal(crc32cOfZeros(n), crc32c(Buffer.alloc(n)) >>> 0, `${n} zero bytes`);
    assert.equal(crc32cOfZeros(0), 0);
  });
});
