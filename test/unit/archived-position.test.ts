import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ArchivedPosition } from '../../src/daemon/archived-position';

const SEG = 0x1000000n; // 16 MiB
const seg = (n: number | bigint): bigint => BigInt(n) * SEG;

describe('ArchivedPosition', () => {
  test('starts at the given position', () => {
    assert.equal(new ArchivedPosition(0n).lsn, 0n);
    assert.equal(new ArchivedPosition(seg(5)).lsn, seg(5));
  });

  test('in-order ranges move the position each time', () => {
    const a = new ArchivedPosition(seg(1));
    assert.equal(a.add(seg(1), seg(2)), true);
    assert.equal(a.lsn, seg(2));
    assert.equal(a.add(seg(2), seg(3)), true);
    assert.equal(a.lsn, seg(3));
    assert.equal(a.add(seg(3), seg(3) + 0x1234n), true, 'a partial range moves it too');
    assert.equal(a.lsn, seg(3) + 0x1234n);
  });

  test('out-of-order ranges wait for the gap, then the run jumps to the end', () => {
    const a = new ArchivedPosition(seg(0));
    assert.equal(a.add(seg(2), seg(3)), false);
    assert.equal(a.lsn, seg(0));
    assert.equal(a.add(seg(3), seg(4)), false);
    assert.equal(a.add(seg(1), seg(2)), false);
    assert.equal(a.lsn, seg(0), 'still held by the gap [0, 1)');
    assert.equal(a.add(seg(0), seg(1)), true);
    assert.equal(a.lsn, seg(4));
  });

  test('reverse order of many ranges', () => {
    const a = new ArchivedPosition(0n);
    for (let i = 9; i >= 1; i--) {
      assert.equal(a.add(seg(i), seg(i + 1)), false, `range ${i}`);
      assert.equal(a.lsn, 0n);
    }
    assert.equal(a.add(0n, seg(1)), true);
    assert.equal(a.lsn, seg(10));
  });

  test('a gap holds the position until it is filled; later ranges keep accumulating', () => {
    const a = new ArchivedPosition(seg(10));
    assert.equal(a.add(seg(10), seg(11)), true);
    assert.equal(a.add(seg(12), seg(13)), false); // gap [11, 12)
    assert.equal(a.add(seg(13), seg(14)), false);
    assert.equal(a.lsn, seg(11));
    assert.equal(a.add(seg(15), seg(16)), false); // second gap [14, 15)
    assert.equal(a.add(seg(11), seg(12)), true);
    assert.equal(a.lsn, seg(14), 'stops at the second gap');
    assert.equal(a.add(seg(14), seg(15)), true);
    assert.equal(a.lsn, seg(16));
  });

  test('overlapping ranges', () => {
    const a = new ArchivedPosition(0n);
    assert.equal(a.add(0n, 100n), true);
    assert.equal(a.add(50n, 150n), true, 'overlap extending past the position');
    assert.equal(a.lsn, 150n);
    assert.equal(a.add(100n, 120n), false, 'contained in what is archived');
    assert.equal(a.lsn, 150n);
    assert.equal(a.add(300n, 400n), false);
    assert.equal(a.add(250n, 350n), false);
    assert.equal(a.add(140n, 260n), true, 'overlaps both sides of the gap');
    assert.equal(a.lsn, 400n);
  });

  test('overlapping pending ranges do not shorten the run', () => {
    const a = new ArchivedPosition(0n);
    assert.equal(a.add(20n, 100n), false);
    assert.equal(a.add(30n, 40n), false); // inside the first, ends earlier
    assert.equal(a.add(0n, 20n), true);
    assert.equal(a.lsn, 100n);
  });

  test('ranges below the position do not move it (or move it back)', () => {
    const a = new ArchivedPosition(seg(5));
    assert.equal(a.add(seg(1), seg(2)), false);
    assert.equal(a.add(seg(4), seg(5)), false, 'ends exactly at the position');
    assert.equal(a.add(0n, seg(3)), false);
    assert.equal(a.lsn, seg(5));
    // ... and they are not kept around to confuse later additions
    assert.equal(a.add(seg(5), seg(6)), true);
    assert.equal(a.lsn, seg(6));
  });

  test('a duplicate of an already counted range does not move the position', () => {
    const a = new ArchivedPosition(0n);
    assert.equal(a.add(0n, seg(1)), true);
    assert.equal(a.add(0n, seg(1)), false);
    assert.equal(a.lsn, seg(1));
  });

  test('an empty range at the position does not move it', () => {
    const a = new ArchivedPosition(seg(2));
    assert.equal(a.add(seg(2), seg(2)), false);
    assert.equal(a.lsn, seg(2));
  });

  test('returns true only when the position moved', () => {
    const a = new ArchivedPosition(0n);
    const results: boolean[] = [];
    const ops: Array<[number, number]> = [
      [3, 4],
      [1, 2],
      [0, 1], // moves to 2
      [2, 3], // moves to 4 (through the pending [3, 4))
      [0, 4], // nothing new
      [5, 6], // gap
      [4, 5], // moves to 6
    ];
    for (const [s, e] of ops) results.push(a.add(seg(s), seg(e)));
    assert.deepEqual(results, [false, false, true, true, false, false, true]);
    assert.equal(a.lsn, seg(6));
  });

  test('positions above 2^53 are exact', () => {
    const base = (1n << 60n) + 1n;
    const a = new ArchivedPosition(base);
    assert.equal(a.add(base + 1n, base + 2n), false);
    assert.equal(a.add(base, base + 1n), true);
    assert.equal(a.lsn, base + 2n);
  });

  test('random completion order always ends at the end of the run', () => {
    let x = 987654321;
    const rand = (n: number) => {
      x = (x * 1103515245 + 12345) >>> 0;
      return x % n;
    };
    for (let round = 0; round < 20; round++) {
      const n = 30;
      const order = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = rand(i + 1);
        [order[i], order[j]] = [order[j], order[i]];
      }
      const a = new ArchivedPosition(0n);
      const done = new Set<number>();
      for (const i of order) {
        const before = a.lsn;
        done.add(i);
        let expectedEnd = 0;
        while (done.has(expectedEnd)) expectedEnd++;
        const moved = a.add(seg(i), seg(i + 1));
        assert.equal(a.lsn, seg(expectedEnd));
        assert.equal(moved, a.lsn > before);
      }
      assert.equal(a.lsn, seg(n));
    }
  });
});
