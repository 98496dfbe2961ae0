/**
 * The check that a WAL file's plaintext is the file its name says (issue 14, item 1):
 * another segment's, timeline's or cluster's WAL under a name is refused naming what it
 * holds; the legitimate shapes (a new timeline's first segment holding parent pages, a
 * partial, a partial served zero-padded, a switch-padded segment) pass.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { segmentFileName } from '../../src/wal/lsn';
import { checkWalIdentity } from '../../src/wal/wal-identity';
import { buildSegment, FIXTURE_BLCKSZ, FIXTURE_SEG_SIZE, FIXTURE_SYSID } from '../helpers/wal-fixtures';

const CLUSTER = { systemId: FIXTURE_SYSID.toString(), walSegmentSize: FIXTURE_SEG_SIZE };
const name = (segNo: bigint, tli = 1) => segmentFileName(tli, segNo, FIXTURE_SEG_SIZE);
const check = (n: string, data: Buffer, cluster = CLUSTER) => checkWalIdentity(n, data, cluster, `wal/${n} in test`);

function isCode(code: ErrorCode, ...parts: string[]) {
  return (err: unknown) => {
    assert.ok(isWalvaultError(err, code), `expected ${code}, got ${String(err)}`);
    for (const p of parts) assert.ok(err.message.includes(p), `message lacks "${p}": ${err.message}`);
    return true;
  };
}

describe('a WAL segment against its name', () => {
  test('the segment itself passes', () => {
    assert.doesNotThrow(() => check(name(0xa3n), buildSegment(0xa3n)));
  });

  test("another segment's bytes are refused naming the segment they hold", () => {
    const held = buildSegment(0xa1n);
    assert.throws(() => check(name(0xa3n), held), isCode('ARCHIVE_MISPLACED', `wal/${name(0xa3n)} in test`, `holds the WAL of ${name(0xa1n)}`, '0/A1', "put that name's own object back"));
  });

  test("another cluster's segment is refused naming its system", () => {
    const other = { ...CLUSTER, systemId: '7000000000000000001' };
    assert.throws(() => check(name(0xa3n), buildSegment(0xa3n), other), isCode('ARCHIVE_MISPLACED', String(FIXTURE_SYSID), '7000000000000000001', 'another cluster'));
  });

  test('a segment of a segment size other than the archive\'s is refused', () => {
    assert.throws(() => check(name(0xa3n), buildSegment(0xa3n), { ...CLUSTER, walSegmentSize: 2 * FIXTURE_SEG_SIZE }), isCode('ARCHIVE_MISPLACED', 'segments are'));
  });

  test('a later timeline\'s segment under an earlier timeline\'s name is refused', () => {
    assert.throws(() => check(name(0xa3n, 1), buildSegment(0xa3n, 2)), isCode('ARCHIVE_MISPLACED', 'timeline 2', 'timeline 1'));
  });

  test("a new timeline's first segment holds the parent's pages up to the switch, then its own", () => {
    const seg = buildSegment(0xa3n, 1);
    // Pages from the middle on were written on timeline 2 (the switch point).
    for (let off = FIXTURE_SEG_SIZE / 2; off < FIXTURE_SEG_SIZE; off += FIXTURE_BLCKSZ) seg.writeUInt32LE(2, off + 4);
    assert.doesNotThrow(() => check(name(0xa3n, 2), seg));
    // Its parent's copy of the segment is not timeline 3's: a page never goes back.
    seg.writeUInt32LE(1, FIXTURE_SEG_SIZE - FIXTURE_BLCKSZ + 4);
    assert.throws(() => check(name(0xa3n, 2), seg), isCode('WAL_BAD_PAGE', 'timeline 1 after a page of timeline 2'));
  });

  test('a stale page in the middle (a recycled file) is refused naming the page', () => {
    const seg = buildSegment(0xa3n);
    const off = 40 * FIXTURE_BLCKSZ;
    buildSegment(0x13n).copy(seg, off, off, off + FIXTURE_BLCKSZ);
    assert.throws(() => check(name(0xa3n), seg), isCode('WAL_BAD_PAGE', `offset ${off}`, 'misplaced page'));
  });

  test('a partial: its bytes checked, ending anywhere; a partial of another segment is refused', () => {
    const seg = buildSegment(0xa3n);
    assert.doesNotThrow(() => check(`${name(0xa3n)}.partial`, seg.subarray(0, 5 * FIXTURE_BLCKSZ + 1000)));
    assert.throws(() => check(`${name(0xa3n)}.partial`, buildSegment(0xa2n).subarray(0, 3 * FIXTURE_BLCKSZ)), isCode('ARCHIVE_MISPLACED', `holds the WAL of ${name(0xa2n)}`));
  });

  test('a partial served zero-padded is checked over the bytes it holds', () => {
    const padded = Buffer.alloc(FIXTURE_SEG_SIZE);
    buildSegment(0xa3n).copy(padded, 0, 0, 7 * FIXTURE_BLCKSZ + 333);
    assert.doesNotThrow(() => check(name(0xa3n), padded));
    const wrong = Buffer.alloc(FIXTURE_SEG_SIZE);
    buildSegment(0xa4n).copy(wrong, 0, 0, 7 * FIXTURE_BLCKSZ + 333);
    assert.throws(() => check(name(0xa3n), wrong), isCode('ARCHIVE_MISPLACED', `holds the WAL of ${name(0xa4n)}`));
  });

  test('not WAL at all, or not a whole segment, is refused as such', () => {
    assert.throws(() => check(name(0xa3n), Buffer.from('hello, not WAL'.repeat(100))), isCode('WAL_BAD_PAGE', 'pass a WAL segment file'));
    assert.throws(() => check(name(0xa3n), Buffer.alloc(0)), isCode('WAL_BAD_PAGE', 'empty'));
    assert.throws(() => check(name(0xa3n), buildSegment(0xa3n).subarray(0, FIXTURE_SEG_SIZE - FIXTURE_BLCKSZ)), isCode('WAL_BAD_PAGE', 'not a whole segment'));
  });
});

describe('a timeline history file against its name', () => {
  const history3 = Buffer.from('1\t0/A3000000\tno recovery target specified\n\n2\t0/A5800000\tno recovery target specified\n');

  test('parents below its timeline pass', () => {
    assert.doesNotThrow(() => check('00000003.history', history3));
    assert.doesNotThrow(() => check('00000004.history', history3), 'a later timeline with the same parents is plausible');
  });

  test("a later timeline's history under an earlier name is refused", () => {
    assert.throws(() => check('00000002.history', history3), isCode('ARCHIVE_MISPLACED', 'timeline 2 as a parent', 'later timeline than 2'));
  });

  test('something that is not a history file is refused', () => {
    assert.throws(() => check('00000002.history', buildSegment(3n)), isCode('ARCHIVE_CORRUPT', 'not a timeline history file'));
    assert.throws(() => check('00000002.history', Buffer.from('# nothing\n')), isCode('ARCHIVE_CORRUPT', 'no parent timeline'));
    assert.throws(() => check('00000003.history', Buffer.from('1\t0/A5000000\tx\n2\t0/A3000000\ty\n')), isCode('ARCHIVE_CORRUPT', 'before it began'));
  });
});

test('other WAL archive files (backup history) are not judged', () => {
  assert.doesNotThrow(() => check('000000010000000000000002.00000028.backup', Buffer.from('START WAL LOCATION: 0/2000028\n')));
});
