/**
 * The gap rule wal-fetch applies on a miss (src/wal/wal-gap.ts): the miss of T/n is a gap
 * when the archive holds WAL after n that recovery through T/n would read, on T or on a later
 * timeline whose path reads n from T; otherwise it is the end.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeGap, gapAfterMiss, readsSegmentFrom, type GapFacts } from '../../src/wal/wal-gap';
import { historyFileName, segmentFileName } from '../../src/wal/lsn';
import type { TimelineHistoryEntry } from '../../src/wal/timeline-history';

const SEG = 1024 * 1024;
const seg = (tli: number, n: number) => segmentFileName(tli, BigInt(n), SEG);
const lsnOf = (n: number, offset = 0) => BigInt(n) * BigInt(SEG) + BigInt(offset);

// Timeline 2 left 1 in the middle of segment 5; timeline 3 left 2 at the start of segment 8.
const H2: TimelineHistoryEntry[] = [{ tli: 1, switchpoint: lsnOf(5, 4096), reason: '' }];
const H3: TimelineHistoryEntry[] = [...H2, { tli: 2, switchpoint: lsnOf(8), reason: '' }];

function facts(names: string[], histories: Record<number, TimelineHistoryEntry[] | null> = {}): GapFacts {
  return { names, histories: new Map(Object.entries(histories).map(([k, v]) => [Number(k), v])) };
}

describe('the miss of a segment: gap or end', () => {
  test('nothing after it: the end', () => {
    assert.equal(gapAfterMiss(seg(1, 4), SEG, facts([])), null);
  });

  test('only its own partial after it (the receiver still writing it): the end', () => {
    assert.equal(gapAfterMiss(seg(1, 4), SEG, facts([`${seg(1, 4)}.partial`])), null);
  });

  test('a later segment on the same timeline: a gap up to it', () => {
    const g = gapAfterMiss(seg(1, 4), SEG, facts([`${seg(1, 4)}.partial`, seg(1, 7), seg(1, 6)]));
    assert.ok(g);
    assert.equal(g.missing, seg(1, 4));
    assert.equal(g.next, seg(1, 6), 'the nearest object after the miss');
    assert.equal(g.from, lsnOf(4));
    assert.equal(g.to, lsnOf(6));
    assert.equal(g.via, 1);
    assert.equal(g.unplacedTimeline, false);
  });

  test('a later partial on the same timeline is WAL after it too', () => {
    const g = gapAfterMiss(seg(1, 4), SEG, facts([`${seg(1, 5)}.partial`]));
    assert.equal(g?.next, `${seg(1, 5)}.partial`);
    assert.equal(g?.to, lsnOf(5));
  });

  test('a finished segment is preferred to a partial of the same segment', () => {
    assert.equal(gapAfterMiss(seg(1, 4), SEG, facts([`${seg(1, 5)}.partial`, seg(1, 5)]))?.next, seg(1, 5));
  });

  test("older timelines' WAL after it is another branch: the end", () => {
    assert.equal(gapAfterMiss(seg(2, 9), SEG, facts([seg(1, 10), seg(1, 11)])), null);
  });

  test('a later timeline whose path reads the segment from this one: a gap', () => {
    // Timeline 2 left 1 in segment 5, so recovery along 2 reads segments up to 4 from timeline 1.
    const g = gapAfterMiss(seg(1, 3), SEG, facts([seg(2, 5), seg(2, 6)], { 2: H2 }));
    assert.ok(g);
    assert.equal(g.via, 2);
    assert.equal(g.next, seg(2, 5));
    assert.equal(g.to, lsnOf(5));
    assert.equal(g.unplacedTimeline, false);
    assert.match(describeGap(g, 'file:///a'), new RegExp(`^${seg(1, 3)} is missing from file:///a, but it holds WAL after it on timeline 2, which goes on from here \\(${seg(2, 5)}\\): WAL 0/300000 to 0/500000 on timeline 1 is a gap$`));
  });

  test("the parent's last segment (only a partial of it is archived) is the end of the parent, not a gap", () => {
    // Timeline 2 begins in segment 5: recovery along it reads 2/5, never 1/5.
    assert.equal(gapAfterMiss(seg(1, 5), SEG, facts([`${seg(1, 5)}.partial`, seg(2, 5), seg(2, 6)], { 2: H2 })), null);
    // Past the parent's end (recovery falls back to it on a miss of the child's segment): the end.
    assert.equal(gapAfterMiss(seg(1, 6), SEG, facts([seg(2, 6), seg(2, 7)], { 2: H2 })), null);
  });

  test('a later timeline that left this one at or before the segment does not make a gap', () => {
    // Timeline 1 went on after 2 branched off (an old primary that kept archiving): its
    // segment 7 missing, with timeline 2 holding segments 7 and 8, is no gap of timeline 1.
    assert.equal(gapAfterMiss(seg(1, 7), SEG, facts([seg(2, 7), seg(2, 8)], { 2: H2 })), null);
  });

  test('through several switches: timeline 3 reads segment 6 from timeline 2', () => {
    assert.ok(readsSegmentFrom(3, H3, 2, 6n, SEG));
    assert.ok(!readsSegmentFrom(3, H3, 2, 8n, SEG));
    assert.ok(readsSegmentFrom(3, H3, 1, 4n, SEG));
    const g = gapAfterMiss(seg(2, 6), SEG, facts([seg(3, 8), seg(3, 9)], { 3: H3 }));
    assert.equal(g?.via, 3);
    assert.equal(g?.to, lsnOf(8));
    // 2/8 is after timeline 3 began: a miss of it is the end of timeline 2.
    assert.equal(gapAfterMiss(seg(2, 8), SEG, facts([seg(3, 9)], { 3: H3 })), null);
  });

  test('a sibling branch that never passed through this timeline does not count', () => {
    // Timeline 3 branched from 1 at segment 2; timeline 2 is not on its path.
    const h3: TimelineHistoryEntry[] = [{ tli: 1, switchpoint: lsnOf(2), reason: '' }];
    assert.equal(gapAfterMiss(seg(2, 6), SEG, facts([seg(3, 7)], { 3: h3 })), null);
  });

  test('a later timeline without its history file counts as going on from here (assumed, named)', () => {
    const g = gapAfterMiss(seg(1, 3), SEG, facts([seg(2, 6)], { 2: null }));
    assert.ok(g);
    assert.equal(g.unplacedTimeline, true);
    assert.match(describeGap(g, 'x'), new RegExp(`${historyFileName(2)} is missing or damaged`));
    // Absent from the map is the same as missing.
    assert.equal(gapAfterMiss(seg(1, 3), SEG, facts([seg(2, 6)]))?.unplacedTimeline, true);
    // Its segments at or before the miss are not WAL after it.
    assert.equal(gapAfterMiss(seg(1, 3), SEG, facts([seg(2, 3), seg(2, 2)], { 2: null })), null);
  });

  test('a proven gap is named before an assumed one', () => {
    const g = gapAfterMiss(seg(1, 3), SEG, facts([seg(3, 4), seg(1, 9)], { 3: null }));
    assert.equal(g?.next, seg(1, 9));
    assert.equal(g?.unplacedTimeline, false);
  });

  test('names that are not segments of this size are ignored', () => {
    assert.equal(gapAfterMiss(seg(1, 3), SEG, facts(['00000002.history', 'junk', '000000010000000000001000'])), null, 'the low part 0x1000 does not exist with 1 MiB segments');
  });
});
