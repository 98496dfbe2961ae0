/**
 * The WAL chain `walvault check` follows: which timeline each segment is read from across
 * switches, how far an archive carries recovery, and missing ranges.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { missingRanges, ownerOf, pathContains, scanChain, timelinePath, type ArchivedWal } from '../../src/wal/wal-chain';
import { segmentFileName } from '../../src/wal/lsn';

const SEG = 16 * 1024 * 1024;
const seg = (tli: number, n: number) => segmentFileName(tli, BigInt(n), SEG);
const lsnOf = (n: number, offset = 0) => BigInt(n) * BigInt(SEG) + BigInt(offset);

function archived(names: string[], partials: Record<string, number> = {}): ArchivedWal {
  return { segments: new Set(names), partials: new Map(Object.entries(partials)) };
}

describe('timeline path', () => {
  // Timeline 2 branched from 1 in the middle of segment 5; timeline 3 from 2 at the start of segment 8.
  const path = timelinePath(3, [
    { tli: 1, switchpoint: lsnOf(5, 4096), reason: '' },
    { tli: 2, switchpoint: lsnOf(8), reason: '' },
  ]);

  test('each segment is read from the newest timeline that began at or before it', () => {
    assert.deepEqual([3, 4, 5, 6, 7, 8, 9].map((n) => ownerOf(path, BigInt(n), SEG)), [1, 1, 2, 2, 2, 3, 3]);
  });

  test('positions on the path', () => {
    assert.ok(pathContains(path, 1, lsnOf(5, 100)));
    assert.ok(!pathContains(path, 1, lsnOf(6)), 'timeline 1 after its switch point is another branch');
    assert.ok(pathContains(path, 2, lsnOf(7)));
    assert.ok(pathContains(path, 3, lsnOf(100)));
  });

  test('a scan follows the switches and stops at the first segment missing', () => {
    const wal = archived([seg(1, 3), seg(1, 4), seg(2, 5), seg(2, 6), seg(2, 7), seg(3, 8), seg(3, 9)], { [seg(1, 5)]: 4096 });
    const full = scanChain(path, lsnOf(3, 40), 9n, wal, SEG);
    assert.equal(full.firstMissing, null);
    assert.equal(full.reachedLsn, lsnOf(10));
    assert.equal(full.reachedTli, 3);
    assert.equal(full.lastSegment, seg(3, 9));

    const gap = archived([seg(1, 3), seg(1, 4), seg(2, 5), seg(2, 7), seg(3, 8), seg(3, 9)]);
    const cut = scanChain(path, lsnOf(3), 9n, gap, SEG);
    assert.equal(cut.firstMissing, seg(2, 6));
    assert.equal(cut.reachedLsn, lsnOf(6));
    assert.deepEqual(missingRanges(path, 3n, 9n, gap, SEG), [{ tli: 2, first: seg(2, 6), last: seg(2, 6), count: 1 }]);
  });

  test("the parent's copy of the switch segment is not enough", () => {
    const wal = archived([seg(1, 3), seg(1, 4), seg(1, 5), seg(2, 6)]);
    const scan = scanChain(path, lsnOf(3), 6n, wal, SEG);
    assert.equal(scan.firstMissing, seg(2, 5));
  });
});

describe('the end of the archive', () => {
  const path = timelinePath(1, []);

  test('a partial of the next segment extends recovery by its bytes', () => {
    const wal = archived([seg(1, 1), seg(1, 2)], { [seg(1, 3)]: 8192 });
    const scan = scanChain(path, lsnOf(1), 3n, wal, SEG);
    assert.equal(scan.reachedLsn, lsnOf(3, 8192));
    assert.equal(scan.endPartial, `${seg(1, 3)}.partial`);
    assert.equal(scan.firstMissing, null, 'the newest segment being only a partial is no gap');
    assert.deepEqual(missingRanges(path, 1n, 3n, wal, SEG), []);
  });

  test('consecutive missing segments are one range; a partial inside the range does not bridge it', () => {
    const wal = archived([seg(1, 1), seg(1, 5), seg(1, 6), seg(1, 9)], { [seg(1, 2)]: 100 });
    assert.deepEqual(missingRanges(path, 1n, 9n, wal, SEG), [
      { tli: 1, first: seg(1, 2), last: seg(1, 4), count: 3 },
      { tli: 1, first: seg(1, 7), last: seg(1, 8), count: 2 },
    ]);
    const scan = scanChain(path, lsnOf(1), 9n, wal, SEG);
    assert.equal(scan.reachedLsn, lsnOf(2, 100));
    assert.equal(scan.firstMissing, seg(1, 2));
  });
});
