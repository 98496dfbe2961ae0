import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { segmentFileName } from '../../src/wal/lsn';
import type { PageCheckContext } from '../../src/wal/page-header';
import { SegmentSpool, type CompletedSegment, type OpenSegment } from '../../src/wal/segment-spool';
import { xorshift32 } from '../helpers/seeded-random';
import { buildSegment as buildFixtureSegment } from '../helpers/wal-fixtures';

const SEG_SIZE = 1 << 20;
const BLCKSZ = 8192;
const PAGES = SEG_SIZE / BLCKSZ;
const MAGIC = 0xd113; // PG 16
const SYSID = 7412345678901234567n;
const TLI = 1;
const SEG_NO = 0x21n;
const SEG_START = SEG_NO * BigInt(SEG_SIZE); // 0/2100000
const NAME = '000000010000000000000021';
const NEXT_NAME = '000000010000000000000022';

function buildSegment(segNo: bigint, tli = TLI, seed = Number(segNo) + 1): Buffer {
  return buildFixtureSegment(segNo, tli, seed);
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function isCode(code: ErrorCode, re?: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(isWalvaultError(err, code), `expected ${code}, got ${String(err)}`);
    if (re) assert.match(err.message, re);
    return true;
  };
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Random piece sizes: tiny ones (splitting headers), medium, and multi-page. */
function pieces(total: number, seed: number): number[] {
  const next = xorshift32(seed);
  const out: number[] = [];
  let left = total;
  while (left > 0) {
    const r = next();
    const n = Math.min(left, r % 3 === 0 ? 1 + (r % 40) : 1 + (r % (40 * 1024)));
    out.push(n);
    left -= n;
  }
  return out;
}

describe('SegmentSpool', () => {
  let dir: string;
  let spool: SegmentSpool;
  const contexts: Array<{ tli: number; name: string }> = [];

  function makeSpool(extra: { headerRoom?: number; seal?(size: number, sha: Buffer): Buffer } = {}): SegmentSpool {
    return new SegmentSpool({
      ...extra,
      dir,
      segSize: SEG_SIZE,
      checkContext(tli: number, name: string): PageCheckContext {
        contexts.push({ tli, name });
        return { magic: MAGIC, systemId: SYSID, segSize: SEG_SIZE, blockSize: BLCKSZ, fileTli: tli, label: name };
      },
    });
  }

  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'walvault-spool-test-'));
    contexts.length = 0;
    spool = makeSpool();
  });

  afterEach(async () => {
    await spool.closeOpen().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('a segment written in random pieces is completed: renamed, hashed, positions advance', async () => {
    const data = buildSegment(SEG_NO);
    assert.equal(segmentFileName(TLI, SEG_NO, SEG_SIZE), NAME);
    assert.equal(spool.receivedLsn, null);
    assert.equal(spool.fsyncedLsn, null);
    assert.equal(spool.open, null);

    const opened: OpenSegment[] = [];
    const completed: CompletedSegment[] = [];
    let pos = 0;
    const sizes = pieces(SEG_SIZE, 4242);
    assert.ok(sizes.length > 20);
    for (const [i, n] of sizes.entries()) {
      const done = await spool.write(TLI, SEG_START + BigInt(pos), data.subarray(pos, pos + n), (s) => opened.push(s));
      pos += n;
      assert.equal(spool.receivedLsn, SEG_START + BigInt(pos));
      if (pos < SEG_SIZE) {
        assert.deepEqual(done, [], `piece ${i}`);
        assert.equal(openOf(spool)?.received, pos);
        assert.ok(await exists(spool.partialPath(NAME)));
        assert.equal(await exists(spool.completePath(NAME)), false);
        if (i === 3) {
          // nothing fsynced yet; fsync() makes what was written durable
          assert.equal(spool.fsyncedLsn, SEG_START);
          assert.equal(await spool.fsync(), SEG_START + BigInt(pos));
          assert.equal(spool.fsyncedLsn, SEG_START + BigInt(pos));
          assert.equal(openOf(spool)?.fsynced, pos);
        }
      } else {
        completed.push(...done);
      }
    }
    assert.equal(opened.length, 1);
    assert.deepEqual(opened[0], { tli: TLI, segNo: SEG_NO, name: NAME, startLsn: SEG_START, received: 0, fsynced: 0 });
    assert.deepEqual(contexts, [{ tli: TLI, name: NAME }]);

    assert.deepEqual(completed, [{ tli: TLI, segNo: SEG_NO, name: NAME, startLsn: SEG_START, sha256: sha256(data), crc32c: crc32c(data) }]);
    assert.equal(spool.open, null);
    assert.equal(spool.receivedLsn, SEG_START + BigInt(SEG_SIZE));
    assert.equal(spool.fsyncedLsn, SEG_START + BigInt(SEG_SIZE));
    assert.equal(await exists(spool.partialPath(NAME)), false);
    const onDisk = await fsp.readFile(path.join(dir, NAME));
    assert.equal(onDisk.length, SEG_SIZE);
    assert.ok(onDisk.equals(data));
    assert.deepEqual(await fsp.readdir(dir), [NAME]);
  });

  test('paths', () => {
    assert.equal(spool.dir, dir);
    assert.equal(spool.partialPath(NAME), path.join(dir, NAME + '.partial'));
    assert.equal(spool.completePath(NAME), path.join(dir, NAME));
  });

  test('the segment in one write completes it; the partial file was pre-sized', async () => {
    const data = buildSegment(SEG_NO);
    let sizeAtOpen = -1;
    // first a small write, to look at the open file
    await spool.write(TLI, SEG_START, data.subarray(0, 100));
    sizeAtOpen = (await fsp.stat(spool.partialPath(NAME))).size;
    assert.equal(sizeAtOpen, SEG_SIZE);
    const done = await spool.write(TLI, SEG_START + 100n, data.subarray(100));
    assert.equal(done.length, 1);
    assert.equal(done[0].sha256, sha256(data));
  });

  test('a write spanning two segments completes the first and opens the second', async () => {
    const a = buildSegment(SEG_NO);
    const b = buildSegment(SEG_NO + 1n);
    const both = Buffer.concat([a, b]);
    const opened: string[] = [];
    const onOpen = (s: OpenSegment) => opened.push(s.name);

    assert.deepEqual(await spool.write(TLI, SEG_START, both.subarray(0, SEG_SIZE - 5000), onOpen), []);
    const span = both.subarray(SEG_SIZE - 5000, SEG_SIZE + 3 * BLCKSZ + 17);
    const done = await spool.write(TLI, SEG_START + BigInt(SEG_SIZE - 5000), span, onOpen);

    assert.deepEqual(done, [{ tli: TLI, segNo: SEG_NO, name: NAME, startLsn: SEG_START, sha256: sha256(a), crc32c: crc32c(a) }]);
    assert.deepEqual(opened, [NAME, NEXT_NAME]);
    assert.deepEqual(spool.open, {
      tli: TLI,
      segNo: SEG_NO + 1n,
      name: NEXT_NAME,
      startLsn: SEG_START + BigInt(SEG_SIZE),
      received: 3 * BLCKSZ + 17,
      fsynced: 0,
    });
    assert.equal(spool.receivedLsn, SEG_START + BigInt(SEG_SIZE + 3 * BLCKSZ + 17));
    // the first is complete and durable; the second has nothing fsynced yet
    assert.equal(spool.fsyncedLsn, SEG_START + BigInt(SEG_SIZE));
    assert.ok((await fsp.readFile(spool.completePath(NAME))).equals(a));
    assert.ok(await exists(spool.partialPath(NEXT_NAME)));
    assert.deepEqual((await fsp.readdir(dir)).sort(), [NAME, NEXT_NAME + '.partial']);

    // finish the second one
    const rest = both.subarray(SEG_SIZE + 3 * BLCKSZ + 17);
    const done2 = await spool.write(TLI, SEG_START + BigInt(SEG_SIZE + 3 * BLCKSZ + 17), rest, onOpen);
    assert.equal(done2.length, 1);
    assert.equal(done2[0].name, NEXT_NAME);
    assert.equal(done2[0].sha256, sha256(b));
    assert.deepEqual((await fsp.readdir(dir)).sort(), [NAME, NEXT_NAME]);
  });

  test('one write covering two whole segments returns both, in order', async () => {
    const both = Buffer.concat([buildSegment(SEG_NO), buildSegment(SEG_NO + 1n)]);
    const done = await spool.write(TLI, SEG_START, both);
    assert.deepEqual(
      done.map((d) => [d.name, d.segNo, d.sha256]),
      [
        [NAME, SEG_NO, sha256(both.subarray(0, SEG_SIZE))],
        [NEXT_NAME, SEG_NO + 1n, sha256(both.subarray(SEG_SIZE))],
      ],
    );
    assert.equal(spool.open, null);
    assert.equal(spool.receivedLsn, SEG_START + 2n * BigInt(SEG_SIZE));
  });

  test('a write not continuing at the expected position is WAL_DISCONTINUITY (gap and overlap)', async () => {
    const data = buildSegment(SEG_NO);
    await spool.write(TLI, SEG_START, data.subarray(0, 20000));
    const end = SEG_START + 20000n;
    await assert.rejects(spool.write(TLI, end + 1n, data.subarray(20001, 30000)), isCode('WAL_DISCONTINUITY', /0\/2104E21.*0\/2104E20/));
    await assert.rejects(spool.write(TLI, end - 100n, data.subarray(19900, 30000)), isCode('WAL_DISCONTINUITY'));
    await assert.rejects(spool.write(TLI, end + BigInt(SEG_SIZE), Buffer.alloc(10)), isCode('WAL_DISCONTINUITY'));
    // nothing changed: the right continuation is still accepted and the segment completes intact
    assert.equal(spool.receivedLsn, end);
    assert.equal(openOf(spool)?.received, 20000);
    const done = await spool.write(TLI, end, data.subarray(20000));
    assert.equal(done.length, 1);
    assert.equal(done[0].sha256, sha256(data));
  });

  test('a gap at a segment boundary is WAL_DISCONTINUITY too', async () => {
    await spool.write(TLI, SEG_START, buildSegment(SEG_NO));
    // the next segment after that one is SEG_NO + 1; starting at SEG_NO + 2 leaves a gap
    await assert.rejects(spool.write(TLI, SEG_START + 2n * BigInt(SEG_SIZE), buildSegment(SEG_NO + 2n)), isCode('WAL_DISCONTINUITY'));
    assert.equal(spool.open, null);
  });

  test('the first write not at a segment start is WAL_DISCONTINUITY and creates no file', async () => {
    const data = buildSegment(SEG_NO);
    await assert.rejects(spool.write(TLI, SEG_START + 8192n, data.subarray(8192, 20000)), isCode('WAL_DISCONTINUITY', /0\/2102000/));
    await assert.rejects(spool.write(TLI, SEG_START + 1n, data.subarray(1, 100)), isCode('WAL_DISCONTINUITY'));
    assert.equal(spool.open, null);
    assert.equal(spool.receivedLsn, null);
    assert.deepEqual(await fsp.readdir(dir), []);
    // a write from the segment start is still fine afterwards
    assert.deepEqual(await spool.write(TLI, SEG_START, data.subarray(0, 100)), []);
    assert.equal(openOf(spool)?.name, NAME);
  });

  test('WAL of another timeline while a segment is open is WAL_DISCONTINUITY', async () => {
    const data = buildSegment(SEG_NO);
    await spool.write(TLI, SEG_START, data.subarray(0, 5000));
    await assert.rejects(spool.write(2, SEG_START + 5000n, data.subarray(5000, 6000)), isCode('WAL_DISCONTINUITY', /timeline 2/));
  });

  test('a corrupted page is WAL_BAD_PAGE and the segment is NOT renamed to NAME', async () => {
    const data = buildSegment(SEG_NO);
    data.writeBigUInt64LE(SEG_START - BigInt(SEG_SIZE) + 40n * BigInt(BLCKSZ), 40 * BLCKSZ + 8); // stale page 40
    let err: unknown;
    let pos = 0;
    for (const n of pieces(SEG_SIZE, 77)) {
      try {
        await spool.write(TLI, SEG_START + BigInt(pos), data.subarray(pos, pos + n));
      } catch (e) {
        err = e;
        break;
      }
      pos += n;
    }
    assert.ok(err, 'the corruption was not detected');
    assert.ok(isCodeSync(err, 'WAL_BAD_PAGE'), String(err));
    assert.match((err as Error).message, new RegExp(`${NAME}: page at offset ${40 * BLCKSZ} `));
    assert.ok(pos <= 40 * BLCKSZ + 24, `detected late, at ${pos}`);
    assert.equal(await exists(spool.completePath(NAME)), false);
    assert.ok(await exists(spool.partialPath(NAME)));
    // the position did not advance past the rejected write
    assert.equal(spool.receivedLsn, SEG_START + BigInt(pos));
    const closed = await spool.closeOpen();
    assert.equal(closed?.received, pos);
    assert.deepEqual(await fsp.readdir(dir), [NAME + '.partial']);
  });

  test('a corrupted last page in a single whole-segment write is not completed', async () => {
    const data = buildSegment(SEG_NO);
    data.writeUInt16LE(0x0020, (PAGES - 1) * BLCKSZ + 2);
    await assert.rejects(spool.write(TLI, SEG_START, data), isCode('WAL_BAD_PAGE', new RegExp(`offset ${(PAGES - 1) * BLCKSZ} `)));
    assert.equal(await exists(spool.completePath(NAME)), false);
  });

  test('closeOpen leaves NAME.partial in place with the bytes written', async () => {
    const data = buildSegment(SEG_NO);
    const n = 5 * BLCKSZ + 333;
    await spool.write(TLI, SEG_START, data.subarray(0, n));
    const closed = await spool.closeOpen();
    assert.deepEqual(closed, { tli: TLI, segNo: SEG_NO, name: NAME, startLsn: SEG_START, received: n, fsynced: n });
    assert.equal(spool.open, null);
    assert.equal(spool.receivedLsn, null);
    assert.deepEqual(await fsp.readdir(dir), [NAME + '.partial']);
    const file = await fsp.readFile(spool.partialPath(NAME));
    assert.equal(file.length, SEG_SIZE);
    assert.ok(file.subarray(0, n).equals(data.subarray(0, n)));
    assert.ok(file.subarray(n).equals(Buffer.alloc(SEG_SIZE - n)), 'the rest is zero');
    // closing again is harmless
    assert.equal(await spool.closeOpen(), null);
  });

  test('openDigest is the SHA-256 of the bytes received so far, without stopping the running hash', async () => {
    const data = buildSegment(SEG_NO);
    assert.equal(spool.openDigest(), null, 'nothing open');
    let at = 0;
    for (const n of [3 * BLCKSZ + 17, 2 * BLCKSZ, 40 * BLCKSZ + 5]) {
      await spool.write(TLI, SEG_START + BigInt(at), data.subarray(at, at + n));
      at += n;
      assert.equal(spool.open!.received, at);
      assert.equal(spool.openDigest()!.toString('hex'), sha256(data.subarray(0, at)));
    }
    const done = await spool.write(TLI, SEG_START + BigInt(at), data.subarray(at));
    assert.equal(done[0].sha256, sha256(data), 'the segment hash is unchanged by the copies taken');
    assert.equal(spool.openDigest(), null, 'the segment is complete: nothing open');
  });

  test('after closeOpen a new timeline can start at a segment start (resetPosition)', async () => {
    const data = buildSegment(SEG_NO);
    await spool.write(TLI, SEG_START, data.subarray(0, 10000));
    assert.throws(() => spool.resetPosition());
    await spool.closeOpen();
    spool.resetPosition();
    const tli2 = buildSegment(SEG_NO, 2);
    const done = await spool.write(2, SEG_START, tli2);
    assert.deepEqual(done.map((d) => [d.name, d.tli]), [['000000020000000000000021', 2]]);
    assert.deepEqual((await fsp.readdir(dir)).sort(), ['000000010000000000000021.partial', '000000020000000000000021']);
  });

  test('with header room, WAL starts after it and completion seals the file with the header', async () => {
    const seals: Array<[number, string]> = [];
    const sealing = makeSpool({
      headerRoom: 64,
      seal: (size, sha) => {
        seals.push([size, sha.toString('hex')]);
        return Buffer.concat([Buffer.from('HDR:'), sha, Buffer.alloc(28, 0x2a)]);
      },
    });
    const data = buildSegment(SEG_NO);
    await sealing.write(TLI, SEG_START, data.subarray(0, 5000));
    const open = await fsp.readFile(sealing.partialPath(NAME));
    assert.equal(open.length, 64 + SEG_SIZE, 'pre-sized with the room');
    assert.ok(open.subarray(0, 64).equals(Buffer.alloc(64)), 'the room stays zero while receiving');
    assert.ok(open.subarray(64, 64 + 5000).equals(data.subarray(0, 5000)));
    const done = await sealing.write(TLI, SEG_START + 5000n, data.subarray(5000));
    assert.deepEqual(seals, [[SEG_SIZE, sha256(data)]]);
    assert.equal(done[0].sha256, sha256(data));
    const file = await fsp.readFile(sealing.completePath(NAME));
    assert.ok(file.subarray(0, 4).equals(Buffer.from('HDR:')));
    assert.ok(file.subarray(64).equals(data));
  });

  test('a seal of the wrong length fails the completion instead of damaging the WAL', async () => {
    const sealing = makeSpool({ headerRoom: 64, seal: () => Buffer.alloc(10) });
    await assert.rejects(sealing.write(TLI, SEG_START, buildSegment(SEG_NO)), /seal gave 10 bytes for 64/);
    await sealing.closeOpen().catch(() => undefined);
  });

  test('an old full-size .partial is overwritten in place, unless it has another link', async () => {
    const data = buildSegment(SEG_NO);
    const file = spool.partialPath(NAME);
    // Left by an earlier run: the same WAL, full size.
    await fsp.writeFile(file, data);
    const before = (await fsp.stat(file)).ino;
    await spool.write(TLI, SEG_START, data.subarray(0, 100));
    assert.equal((await fsp.stat(file)).ino, before, 'same inode: reused in place');
    await spool.closeOpen();
    spool.resetPosition();

    const other = path.join(dir, 'elsewhere');
    await fsp.link(file, other);
    const other0 = await fsp.readFile(other);
    const different = buildSegment(SEG_NO, TLI, 999);
    await spool.write(TLI, SEG_START, different.subarray(0, 100));
    assert.notEqual((await fsp.stat(file)).ino, before, 'a new file');
    assert.ok((await fsp.readFile(other)).equals(other0), 'the other link is untouched');
  });

  test('fsync with nothing open returns the received position', async () => {
    assert.equal(await spool.fsync(), null);
    await spool.write(TLI, SEG_START, buildSegment(SEG_NO));
    assert.equal(await spool.fsync(), SEG_START + BigInt(SEG_SIZE));
  });
});

/** Reads `open` through a call so assert.equal(spool.open, null) does not narrow later reads. */
function openOf(s: SegmentSpool): OpenSegment | null {
  return s.open;
}

function isCodeSync(err: unknown, code: ErrorCode): boolean {
  return isWalvaultError(err, code);
}
