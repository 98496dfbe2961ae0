import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SlabCopier } from '../../src/util/slab-copier';
import { BufferPool } from '../../src/util/buffer-pool';

describe('SlabCopier', () => {
  test('copies are exact and independent of their source', () => {
    const copier = new SlabCopier(1024);
    const srcs = Array.from({ length: 20 }, (_, i) => randomBytes(1 + ((i * 37) % 256)));
    const copies = srcs.map((s) => copier.copy(s));
    const expected = srcs.map((s) => Buffer.from(s));
    srcs.forEach((s) => s.fill(0));
    copies.forEach((c, i) => assert.ok(c.equals(expected[i]), `copy ${i}`));
  });

  test('a slab is reused only after every copy in it was released', () => {
    const copier = new SlabCopier(4096, 4); // copies of up to 1024 bytes go into slabs
    const fill = (byte: number) => copier.copy(Buffer.alloc(1024, byte));
    const first = [fill(1), fill(2), fill(3), fill(4)]; // exactly one slab
    const second = [fill(5), fill(6), fill(7), fill(8)];
    assert.notEqual(second[0].buffer, first[0].buffer);
    assert.equal(copier.liveSlabs, 2);
    for (const c of first.slice(0, 3)) copier.release(c);
    const third = fill(9); // the first slab still holds one copy: a new slab
    assert.notEqual(third.buffer, first[0].buffer);
    assert.ok(first[3].equals(Buffer.alloc(1024, 4)), 'the copy still held is intact');
    copier.release(first[3]);
    for (const c of second) copier.release(c);
    assert.equal(copier.liveSlabs, 1);
    // Two slabs are free now; filling past the current one must reuse them, not allocate.
    const later = [fill(10), fill(11), fill(12), fill(13)];
    assert.ok(later[3].buffer === first[0].buffer || later[3].buffer === second[0].buffer);
    assert.ok(third.equals(Buffer.alloc(1024, 9)), 'live copies untouched by reuse');
  });

  test('the slab being filled starts over once it is empty', () => {
    const copier = new SlabCopier(4096);
    const a = copier.copy(Buffer.alloc(600, 1));
    copier.release(a);
    const b = copier.copy(Buffer.alloc(600, 2));
    assert.equal(b.buffer, a.buffer);
    assert.equal(b.byteOffset, a.byteOffset);
    assert.equal(copier.liveSlabs, 1);
  });

  test('large sources get buffers of their own; releasing foreign buffers is harmless', () => {
    const copier = new SlabCopier(1024);
    const big = randomBytes(600);
    const copy = copier.copy(big.subarray(0, 300)); // over a quarter of a slab
    assert.equal(copy.byteLength, 300);
    assert.equal(copier.liveSlabs, 0);
    copier.release(copy);
    copier.release(Buffer.alloc(10));
    assert.ok(copy.equals(big.subarray(0, 300)));
  });
});

describe('BufferPool', () => {
  test('hands back released buffers, keeps at most `keep`, refuses views and strangers', () => {
    const pool = new BufferPool(64, 2);
    const a = pool.acquire();
    const b = pool.acquire();
    const c = pool.acquire();
    assert.equal(a.length, 64);
    pool.release(a);
    pool.release(b);
    pool.release(c); // over the limit: dropped
    assert.equal(pool.idle, 2);
    pool.release(a); // twice: still once
    assert.equal(pool.idle, 2);
    const d = pool.acquire();
    assert.ok(d === a || d === b);
    pool.release(Buffer.alloc(32));
    pool.release(c.subarray(1));
    assert.equal(pool.idle, 1);
  });
});
