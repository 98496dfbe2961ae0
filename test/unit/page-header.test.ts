import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { isWalvaultError } from '../../src/errors';
import {
  detectEndianness,
  PageChecker,
  pageMagicForMajor,
  verifySegmentPages,
  XLP_FIRST_IS_CONTRECORD,
  XLP_LONG_HEADER,
  type PageCheckContext,
} from '../../src/wal/page-header';
import { xorshift32 } from '../helpers/seeded-random';

const SEG_SIZE = 1 << 20;
const BLCKSZ = 8192;
const PAGES = SEG_SIZE / BLCKSZ; // 128
const MAGIC = 0xd110; // PG 15
const SYSID = 7340123456789012345n; // > 2^53 on purpose
const SEG_NO = 0x3a0fn; // segment of 3/A0FF1234 with 1 MiB segments
const SEG_START = SEG_NO * BigInt(SEG_SIZE); // 3/A0F00000
const FILE_TLI = 3;
const LABEL = '000000030000000300000A0F';

type Endian = 'le' | 'be';

interface BuildOptions {
  tli?: number;
  endian?: Endian;
  /** Pages from this index on are all zero (the tail after an XLOG_SWITCH record). */
  switchAtPage?: number;
  segStart?: bigint;
  magic?: number;
  sysid?: bigint;
  seed?: number;
}

function writeHeader(
  buf: Buffer,
  off: number,
  endian: Endian,
  h: { magic: number; info: number; tli: number; pageAddr: bigint; remLen: number },
): void {
  const le = endian === 'le';
  if (le) {
    buf.writeUInt16LE(h.magic, off);
    buf.writeUInt16LE(h.info, off + 2);
    buf.writeUInt32LE(h.tli, off + 4);
    buf.writeBigUInt64LE(h.pageAddr, off + 8);
    buf.writeUInt32LE(h.remLen, off + 16);
  } else {
    buf.writeUInt16BE(h.magic, off);
    buf.writeUInt16BE(h.info, off + 2);
    buf.writeUInt32BE(h.tli, off + 4);
    buf.writeBigUInt64BE(h.pageAddr, off + 8);
    buf.writeUInt32BE(h.remLen, off + 16);
  }
  buf.writeUInt32LE(0, off + 20); // padding
}

function writeLongFields(buf: Buffer, endian: Endian, sysid: bigint, segSize: number, blcksz: number): void {
  if (endian === 'le') {
    buf.writeBigUInt64LE(sysid, 24);
    buf.writeUInt32LE(segSize, 32);
    buf.writeUInt32LE(blcksz, 36);
  } else {
    buf.writeBigUInt64BE(sysid, 24);
    buf.writeUInt32BE(segSize, 32);
    buf.writeUInt32BE(blcksz, 36);
  }
}

/**
 * A 1 MiB segment of 8 KiB pages that looks like real WAL: long header on page 0
 * (LONG_HEADER | BKP_REMOVABLE), short headers elsewhere, some pages starting with a
 * continuation record (FIRST_IS_CONTRECORD + rem_len), record bytes in the page bodies.
 */
function buildSegment(o: BuildOptions = {}): Buffer {
  const endian = o.endian ?? 'le';
  const tli = o.tli ?? FILE_TLI;
  const segStart = o.segStart ?? SEG_START;
  const magic = o.magic ?? MAGIC;
  const buf = Buffer.alloc(SEG_SIZE);
  const next = xorshift32(o.seed ?? 12345);
  const lastPage = o.switchAtPage ?? PAGES;
  for (let p = 0; p < lastPage; p++) {
    const off = p * BLCKSZ;
    const cont = p > 0 && p % 3 !== 0;
    let info = cont ? XLP_FIRST_IS_CONTRECORD : 0;
    if (p === 0) info |= XLP_LONG_HEADER | 0x0004;
    writeHeader(buf, off, endian, {
      magic,
      info,
      tli,
      pageAddr: segStart + BigInt(off),
      remLen: cont ? (next() % 20000) + 1 : 0,
    });
    if (p === 0) writeLongFields(buf, endian, o.sysid ?? SYSID, SEG_SIZE, BLCKSZ);
    const bodyStart = off + (p === 0 ? 40 : 24);
    // Record data: leave the end of the last written page zero like a real partial page.
    const bodyEnd = p === lastPage - 1 ? off + 3000 : off + BLCKSZ;
    for (let i = bodyStart; i < bodyEnd; i += 4) buf.writeUInt32LE(next(), i);
  }
  return buf;
}

function ctx(over: Partial<PageCheckContext> = {}): PageCheckContext {
  return { magic: MAGIC, systemId: SYSID, segSize: SEG_SIZE, blockSize: BLCKSZ, fileTli: FILE_TLI, label: LABEL, ...over };
}

/** Feeds `data` in random-sized chunks (1 byte .. ~3 pages). */
function feedRandom(data: Buffer, c: PageCheckContext, seed: number, segStart = SEG_START): PageChecker {
  const checker = new PageChecker(segStart, c);
  const next = xorshift32(seed);
  let pos = 0;
  while (pos < data.length) {
    const r = next();
    const n = r % 4 === 0 ? 1 + (r % 23) : 1 + (r % (3 * BLCKSZ));
    const end = Math.min(pos + n, data.length);
    checker.feed(data.subarray(pos, end));
    pos = end;
  }
  return checker;
}

/** Splits exactly inside every header: at each page offset + k, for a few k. */
function feedSplitInHeaders(data: Buffer, c: PageCheckContext, k: number): PageChecker {
  const checker = new PageChecker(SEG_START, c);
  let pos = 0;
  for (let p = 0; p < data.length / BLCKSZ; p++) {
    const cut = p * BLCKSZ + k;
    if (cut > pos && cut <= data.length) {
      checker.feed(data.subarray(pos, cut));
      pos = cut;
    }
  }
  checker.feed(data.subarray(pos));
  return checker;
}

function badPageAt(offset: number, extra?: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(isWalvaultError(err, 'WAL_BAD_PAGE'), `expected WAL_BAD_PAGE, got ${String(err)}`);
    assert.ok(err.message.includes(LABEL), err.message);
    assert.ok(err.message.includes(`page at offset ${offset} `), `expected offset ${offset} in: ${err.message}`);
    if (extra) assert.match(err.message, extra);
    return true;
  };
}

/** Runs the check as one chunk, in random chunks and split inside headers; all must agree. */
function assertAllWays(data: Buffer, c: PageCheckContext, expectErr: ((e: unknown) => boolean) | null, validLength = data.length): void {
  const prefix = data.subarray(0, validLength);
  const runs: Array<[string, () => void]> = [
    ['verifySegmentPages', () => verifySegmentPages(data, validLength, SEG_START, c)],
    ['one chunk', () => new PageChecker(SEG_START, c).feed(prefix)],
    ['random chunks seed 1', () => feedRandom(prefix, c, 1)],
    ['random chunks seed 99', () => feedRandom(prefix, c, 99)],
    ['random chunks seed 31337', () => feedRandom(prefix, c, 31337)],
    ['split at header byte 1', () => feedSplitInHeaders(prefix, c, 1)],
    ['split at header byte 13', () => feedSplitInHeaders(prefix, c, 13)],
    ['split at header byte 23', () => feedSplitInHeaders(prefix, c, 23)],
    ['split at long header byte 30', () => feedSplitInHeaders(prefix, c, 30)],
  ];
  for (const [name, run] of runs) {
    if (expectErr) assert.throws(run, expectErr, name);
    else assert.doesNotThrow(run, name);
  }
}

describe('pageMagicForMajor', () => {
  test('supported majors 13..18', () => {
    assert.equal(pageMagicForMajor(13), 0xd106);
    assert.equal(pageMagicForMajor(14), 0xd10d);
    assert.equal(pageMagicForMajor(15), 0xd110);
    assert.equal(pageMagicForMajor(16), 0xd113);
    assert.equal(pageMagicForMajor(17), 0xd116);
    assert.equal(pageMagicForMajor(18), 0xd118);
  });

  for (const major of [9, 10, 19, 0, 150]) {
    test(`major ${major} → PG_UNSUPPORTED_VERSION`, () => {
      assert.throws(
        () => pageMagicForMajor(major),
        (err: unknown) => {
          assert.ok(isWalvaultError(err, 'PG_UNSUPPORTED_VERSION'), String(err));
          assert.match(err.message, new RegExp(`\\b${major}\\b`));
          return true;
        },
      );
    });
  }
});

describe('detectEndianness', () => {
  test('reads the magic both ways', () => {
    const le = Buffer.from([0x10, 0xd1]);
    const be = Buffer.from([0xd1, 0x10]);
    assert.equal(detectEndianness(le, 0xd110), 'le');
    assert.equal(detectEndianness(be, 0xd110), 'be');
    assert.equal(detectEndianness(Buffer.from([0x13, 0xd1]), 0xd110), null);
    assert.equal(detectEndianness(Buffer.from([0x10]), 0xd110), null);
  });
});

describe('PageChecker: valid segments', () => {
  test('the synthetic segment looks like WAL (sanity check of the builder)', () => {
    const seg = buildSegment();
    assert.equal(seg.length, SEG_SIZE);
    assert.equal(seg.readUInt16LE(0), MAGIC);
    assert.equal(seg.readUInt16LE(2) & XLP_LONG_HEADER, XLP_LONG_HEADER);
    assert.equal(seg.readBigUInt64LE(8), SEG_START);
    assert.equal(seg.readBigUInt64LE(24), SYSID);
    assert.equal(seg.readUInt32LE(32), SEG_SIZE);
    assert.equal(seg.readUInt32LE(36), BLCKSZ);
    assert.equal(seg.readBigUInt64LE(5 * BLCKSZ + 8), SEG_START + 5n * BigInt(BLCKSZ));
    assert.equal(seg.readUInt16LE(5 * BLCKSZ + 2) & XLP_LONG_HEADER, 0);
  });

  test('a valid segment passes, fed in one chunk or in any chunking', () => {
    const seg = buildSegment();
    assertAllWays(seg, ctx(), null);
    const checker = feedRandom(seg, ctx(), 7);
    assert.equal(checker.checkedBytes, SEG_SIZE);
  });

  test('byte-by-byte over the first pages (every header split at every byte)', () => {
    const seg = buildSegment();
    const checker = new PageChecker(SEG_START, ctx());
    for (let i = 0; i < 3 * BLCKSZ + 100; i++) checker.feed(seg.subarray(i, i + 1));
    assert.equal(checker.checkedBytes, 3 * BLCKSZ + 100);
    checker.feed(seg.subarray(3 * BLCKSZ + 100));
    assert.equal(checker.checkedBytes, SEG_SIZE);
  });

  test('checkedBytes follows the fed bytes; feeding past the segment is a RangeError', () => {
    const seg = buildSegment();
    const checker = new PageChecker(SEG_START, ctx());
    assert.equal(checker.checkedBytes, 0);
    checker.feed(seg.subarray(0, 10));
    assert.equal(checker.checkedBytes, 10);
    checker.feed(Buffer.alloc(0));
    assert.equal(checker.checkedBytes, 10);
    checker.feed(seg.subarray(10));
    assert.equal(checker.checkedBytes, SEG_SIZE);
    assert.throws(() => checker.feed(Buffer.alloc(1)), RangeError);
  });

  test('a segment at LSN 0/0 on timeline 1 passes', () => {
    const seg = buildSegment({ segStart: 0n, tli: 1 });
    assert.doesNotThrow(() => verifySegmentPages(seg, SEG_SIZE, 0n, ctx({ fileTli: 1 })));
  });

  test('zero-filled tail after XLOG_SWITCH (pages 10.. all zero) passes', () => {
    const seg = buildSegment({ switchAtPage: 10 });
    assert.ok(seg.subarray(10 * BLCKSZ).every((b) => b === 0));
    assertAllWays(seg, ctx(), null);
  });

  test('pages with a timeline LOWER than the file timeline pass (first segment of a new timeline)', () => {
    const seg = buildSegment({ tli: 1 });
    assertAllWays(seg, ctx({ fileTli: 3 }), null);
  });

  test('parent timeline pages followed by new timeline pages pass (tli increases)', () => {
    const seg = buildSegment({ tli: 2 });
    for (let p = 40; p < PAGES; p++) seg.writeUInt32LE(3, p * BLCKSZ + 4);
    assertAllWays(seg, ctx({ fileTli: 3 }), null);
  });

  test('big-endian pages pass when consistently big-endian', () => {
    const seg = buildSegment({ endian: 'be' });
    assert.equal(seg.readUInt16BE(0), MAGIC);
    assert.notEqual(seg.readUInt16LE(0), MAGIC);
    assertAllWays(seg, ctx(), null);
  });

  test('big-endian segment with a zero tail passes', () => {
    const seg = buildSegment({ endian: 'be', switchAtPage: 64 });
    assertAllWays(seg, ctx(), null);
  });

  test('a partial segment passes: validLength mid-page', () => {
    const seg = buildSegment();
    const validLength = 7 * BLCKSZ + 1234;
    // bytes beyond the received end are zero in a .partial file
    seg.fill(0, validLength);
    assertAllWays(seg, ctx(), null, validLength);
  });

  test('a partial segment passes: validLength mid-header (short and long)', () => {
    const seg = buildSegment();
    for (const validLength of [7 * BLCKSZ + 10, 7 * BLCKSZ + 1, 30, 1, 0, 24, 39, 40, BLCKSZ + 23]) {
      assertAllWays(seg, ctx(), null, validLength);
    }
  });

  test('a partial segment with only a torn header does not hide corruption before it', () => {
    const seg = buildSegment();
    seg.writeUInt16LE(0xbeef, 6 * BLCKSZ);
    assertAllWays(seg, ctx(), badPageAt(6 * BLCKSZ, /magic 0xbeef/), 7 * BLCKSZ + 10);
  });

  test('the corrupt part of a header that was not received yet is not checked', () => {
    const seg = buildSegment();
    seg.writeBigUInt64LE(0n, 7 * BLCKSZ + 8); // bad pageaddr on page 7
    assertAllWays(seg, ctx(), null, 7 * BLCKSZ + 8);
    assertAllWays(seg, ctx(), badPageAt(7 * BLCKSZ, /address/), 7 * BLCKSZ + 24);
  });

  test('validLength larger than the buffer is a RangeError', () => {
    assert.throws(() => verifySegmentPages(Buffer.alloc(100), 101, SEG_START, ctx()), RangeError);
  });
});

describe('PageChecker: corruption is caught with WAL_BAD_PAGE naming the offset', () => {
  test('wrong magic on page 0', () => {
    const seg = buildSegment({ magic: 0xd113 });
    assertAllWays(seg, ctx(), badPageAt(0, /magic 0xd113, expected 0xd110/));
  });

  test('wrong magic on page 9', () => {
    const seg = buildSegment();
    seg.writeUInt16LE(0xd10d, 9 * BLCKSZ);
    assertAllWays(seg, ctx(), badPageAt(9 * BLCKSZ, /magic/));
  });

  test('one big-endian page in a little-endian segment', () => {
    const seg = buildSegment();
    const be = buildSegment({ endian: 'be' });
    be.copy(seg, 20 * BLCKSZ, 20 * BLCKSZ, 21 * BLCKSZ);
    assertAllWays(seg, ctx(), badPageAt(20 * BLCKSZ, /magic/));
  });

  test('unknown flag bit 0x0010', () => {
    const seg = buildSegment();
    seg.writeUInt16LE(0x0010 | XLP_FIRST_IS_CONTRECORD, 4 * BLCKSZ + 2);
    assertAllWays(seg, ctx(), badPageAt(4 * BLCKSZ, /flag/));
  });

  test('unknown flag bit 0x0010 on a big-endian page', () => {
    const seg = buildSegment({ endian: 'be' });
    seg.writeUInt16BE(0x0010, 4 * BLCKSZ + 2);
    assertAllWays(seg, ctx(), badPageAt(4 * BLCKSZ, /flag/));
  });

  test('all known flags 0x000F are accepted', () => {
    const seg = buildSegment();
    seg.writeUInt16LE(0x000d, 4 * BLCKSZ + 2); // every flag except LONG_HEADER
    seg.writeUInt16LE(0x000f, 0 + 2);
    assertAllWays(seg, ctx(), null);
  });

  test('timeline greater than the file timeline', () => {
    const seg = buildSegment();
    seg.writeUInt32LE(FILE_TLI + 1, 12 * BLCKSZ + 4);
    assertAllWays(seg, ctx(), badPageAt(12 * BLCKSZ, /timeline 4/));
  });

  test('timeline greater than the file timeline on page 0', () => {
    const seg = buildSegment({ tli: 4 });
    assertAllWays(seg, ctx(), badPageAt(0, /timeline 4/));
  });

  test('timeline 0', () => {
    const seg = buildSegment();
    seg.writeUInt32LE(0, 2 * BLCKSZ + 4);
    assertAllWays(seg, ctx(), badPageAt(2 * BLCKSZ, /timeline 0/));
  });

  test('timeline 0 on page 0 (no earlier page to compare with)', () => {
    const seg = buildSegment({ tli: 0 });
    assertAllWays(seg, ctx(), badPageAt(0, /timeline 0/));
  });

  test('timeline decreasing between pages', () => {
    const seg = buildSegment();
    seg.writeUInt32LE(2, 33 * BLCKSZ + 4);
    assertAllWays(seg, ctx(), badPageAt(33 * BLCKSZ, /timeline 2 after a page of timeline 3/));
  });

  test('wrong pageaddr on page 5 (stale/recycled page)', () => {
    const seg = buildSegment();
    // what a recycled segment holds: the address of the same page one segment earlier
    seg.writeBigUInt64LE(SEG_START - BigInt(SEG_SIZE) + 5n * BigInt(BLCKSZ), 5 * BLCKSZ + 8);
    assertAllWays(seg, ctx(), badPageAt(5 * BLCKSZ, /address 3\/A0E0A000, expected 3\/A0F0A000/));
  });

  test('a whole segment built for another position fails on page 0', () => {
    const seg = buildSegment({ segStart: SEG_START + BigInt(SEG_SIZE) });
    assertAllWays(seg, ctx(), badPageAt(0, /address/));
  });

  test('missing long header on page 0', () => {
    const seg = buildSegment();
    seg.writeUInt16LE(seg.readUInt16LE(2) & ~XLP_LONG_HEADER, 2);
    assertAllWays(seg, ctx(), badPageAt(0, /long header/));
  });

  test('long header in the middle of the segment', () => {
    const seg = buildSegment();
    seg.writeUInt16LE(XLP_LONG_HEADER, 50 * BLCKSZ + 2);
    assertAllWays(seg, ctx(), badPageAt(50 * BLCKSZ, /long header in the middle/));
  });

  test('wrong system identifier', () => {
    const seg = buildSegment({ sysid: SYSID + 1n });
    assertAllWays(seg, ctx(), badPageAt(0, new RegExp(`${SYSID + 1n}, expected ${SYSID}`)));
  });

  test('system identifier differing only above 2^53 is still caught', () => {
    const seg = buildSegment({ sysid: SYSID ^ (1n << 60n) });
    assertAllWays(seg, ctx(), badPageAt(0, /database system/));
  });

  test('wrong segment size in the long header', () => {
    const seg = buildSegment();
    seg.writeUInt32LE(16 << 20, 32);
    assertAllWays(seg, ctx(), badPageAt(0, /segment size 16777216, expected 1048576/));
  });

  test('wrong block size in the long header', () => {
    const seg = buildSegment();
    seg.writeUInt32LE(16384, 36);
    assertAllWays(seg, ctx(), badPageAt(0, /block size 16384, expected 8192/));
  });

  test('zero header on page 0', () => {
    const seg = buildSegment();
    seg.fill(0, 0, 40);
    assertAllWays(seg, ctx(), badPageAt(0, /empty header/));
  });

  test('an entirely zero segment fails on page 0', () => {
    assertAllWays(Buffer.alloc(SEG_SIZE), ctx(), badPageAt(0));
  });

  test('non-zero bytes after a zero-filled tail: in a later header', () => {
    const seg = buildSegment({ switchAtPage: 10 });
    seg[20 * BLCKSZ + 4] = 1;
    assertAllWays(seg, ctx(), badPageAt(20 * BLCKSZ, /non-zero bytes after the zero-filled end/));
  });

  test('non-zero bytes after a zero-filled tail: in a page body', () => {
    const seg = buildSegment({ switchAtPage: 10 });
    seg[SEG_SIZE - 1] = 0x80;
    assertAllWays(seg, ctx(), badPageAt(SEG_SIZE - BLCKSZ, /non-zero/));
  });

  test('non-zero bytes after a zero-filled tail: in the body of the first zero page', () => {
    const seg = buildSegment({ switchAtPage: 10 });
    seg[10 * BLCKSZ + 100] = 7;
    assertAllWays(seg, ctx(), badPageAt(10 * BLCKSZ, /non-zero/));
  });

  test('a valid-looking page after a zero-filled tail is rejected', () => {
    const seg = buildSegment({ switchAtPage: 10 });
    const full = buildSegment();
    full.copy(seg, 11 * BLCKSZ, 11 * BLCKSZ, 12 * BLCKSZ);
    assertAllWays(seg, ctx(), badPageAt(11 * BLCKSZ, /non-zero/));
  });

  test('the first error wins: an earlier corrupt page is reported, not a later one', () => {
    const seg = buildSegment();
    seg.writeBigUInt64LE(0n, 8 * BLCKSZ + 8);
    seg.writeUInt16LE(0x1234, 30 * BLCKSZ);
    assertAllWays(seg, ctx(), badPageAt(8 * BLCKSZ));
  });

  test('the message names the LSN of the bad page', () => {
    const seg = buildSegment();
    seg.writeUInt16LE(0x0100, 5 * BLCKSZ + 2);
    assert.throws(
      () => verifySegmentPages(seg, SEG_SIZE, SEG_START, ctx()),
      (err: unknown) => {
        assert.ok(isWalvaultError(err, 'WAL_BAD_PAGE'));
        assert.ok(err.message.includes('(3/A0F0A000)'), err.message);
        return true;
      },
    );
  });

  test('corruption in a page body is not a header error', () => {
    const seg = buildSegment();
    seg.fill(0xff, 3 * BLCKSZ + 24, 4 * BLCKSZ);
    assertAllWays(seg, ctx(), null);
  });
});
