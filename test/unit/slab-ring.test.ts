import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { SlabRing } from '../../src/restore/slab-ring';

describe('SlabRing', () => {
  test('acquire waits below the limit; take does not; any view of a slab holds it', async () => {
    const ring = new SlabRing(2, 4096);
    const a = ring.take();
    const b = await ring.acquire();
    assert.ok(a.buffer instanceof SharedArrayBuffer);
    assert.equal(a.length, 4096);
    assert.equal(ring.held, 2);
    const got: { third: Buffer | null } = { third: null };
    const waiting = ring.acquire().then((s) => (got.third = s));
    const extra = ring.take(); // beyond the limit, at once
    assert.equal(ring.held, 3);
    await new Promise((r) => setImmediate(r));
    assert.equal(got.third, null, 'acquire waits while the limit is reached');

    // A view holds its slab: released through another view, the slab is still held once.
    const view = a.subarray(512, 1024);
    ring.retain(view);
    ring.release(a);
    ring.release(extra);
    await new Promise((r) => setImmediate(r));
    assert.equal(got.third, null, 'still two held (a through its view, and b)');
    ring.release(view);
    const third = await waiting;
    assert.equal(ring.held, 2);
    assert.ok([a.buffer, extra.buffer].includes(third.buffer), 'a free slab is reused');
    ring.release(b);
    ring.release(third);
    assert.equal(ring.held, 0);
  });

  test('below(n) resolves once fewer than n are held, in order with acquire', async () => {
    const ring = new SlabRing(3, 1024);
    const held = [ring.take(), ring.take(), ring.take()];
    const order: string[] = [];
    const first = ring.below(2).then(() => order.push('below 2'));
    const second = ring.acquire().then((s) => {
      order.push('acquire');
      return s;
    });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, []);
    ring.release(held[0]);
    await new Promise((r) => setImmediate(r));
    // Two held: below(2) still waits, and acquire, behind it, waits too.
    assert.deepEqual(order, []);
    ring.release(held[1]);
    await first;
    const s = await second;
    assert.deepEqual(order, ['below 2', 'acquire']);
    ring.release(s);
    ring.release(held[2]);
    assert.equal(ring.held, 0);
  });
});
