import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { isWalvaultError } from '../../src/errors';
import {
  buildIncrementalFile,
  expandRuns,
  expectedFileSize,
  INCREMENTAL_MAGIC,
  incrementalHeaderNeeds,
  incrementalHeaderSize,
  isIncrementalPath,
  nonIncrementalPath,
  parseIncrementalHeader,
  planReconstruction,
  type ChainEntry,
  type IncrementalHeader,
} from '../../src/restore/incremental-file';

const BLCKSZ = 8192;
const PATH = 'base/5/INCREMENTAL.16384';

/** A block image whose every byte says which backup and block it is, so mix-ups show. */
function image(tag: number, blockNo: number, size = BLCKSZ): Buffer {
  return Buffer.alloc(size, (tag * 31 + blockNo * 7 + 1) & 0xff);
}

function corruptWith(re: RegExp) {
  return (err: unknown) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && re.test(err.message);
}

describe('paths', () => {
  test('INCREMENTAL. prefix on the basename only', () => {
    assert.equal(isIncrementalPath('base/5/INCREMENTAL.16384'), true);
    assert.equal(isIncrementalPath('INCREMENTAL.16384.2'), true);
    assert.equal(isIncrementalPath('base/5/16384'), false);
    assert.equal(isIncrementalPath('INCREMENTAL.dir/16384'), false);
    assert.equal(isIncrementalPath('base/5/INCREMENTAL.'), false);
    assert.equal(nonIncrementalPath('base/5/INCREMENTAL.16384.1'), 'base/5/16384.1');
    assert.equal(nonIncrementalPath('pg_tblspc/16400/PG_17_202406281/5/INCREMENTAL.16401_vm'), 'pg_tblspc/16400/PG_17_202406281/5/16401_vm');
    assert.equal(nonIncrementalPath('INCREMENTAL.1259'), '1259');
    assert.equal(nonIncrementalPath('base/5/16384'), 'base/5/16384');
  });
});

describe('header layout', () => {
  test('no blocks: 12 bytes, no padding, count before truncation length, little-endian', () => {
    const file = buildIncrementalFile({ truncationBlockLength: 5, blocks: [] }, BLCKSZ);
    assert.equal(file.toString('hex'), '0d1faed3' + '00000000' + '05000000');
    assert.equal(incrementalHeaderSize(0, BLCKSZ), 12);
    const h = parseIncrementalHeader(file, BLCKSZ, { path: PATH, fileSize: file.length });
    assert.deepEqual(h, { blockCount: 0, truncationBlockLength: 5, blocks: new Uint32Array(0), headerSize: 12 });
    assert.equal(expectedFileSize(h, BLCKSZ), 12);
    assert.equal(incrementalHeaderNeeds(file, BLCKSZ), 12);
  });

  test('one block: header padded to one block, image right after it', () => {
    const img = image(1, 77);
    const file = buildIncrementalFile({ truncationBlockLength: 100, blocks: [{ blockNo: 77, image: img }] }, BLCKSZ);
    assert.equal(file.length, 2 * BLCKSZ);
    assert.equal(file.subarray(0, 16).toString('hex'), '0d1faed3' + '01000000' + '64000000' + '4d000000');
    assert.ok(file.subarray(16, BLCKSZ).every((b) => b === 0));
    assert.deepEqual(file.subarray(BLCKSZ), img);
    const h = parseIncrementalHeader(file, BLCKSZ, { path: PATH, fileSize: file.length });
    assert.equal(h.blockCount, 1);
    assert.equal(h.truncationBlockLength, 100);
    assert.deepEqual([...h.blocks], [77]);
    assert.equal(h.headerSize, BLCKSZ);
    assert.equal(expectedFileSize(h, BLCKSZ), 2 * BLCKSZ);
  });

  test('many blocks: padding to the next multiple of the block size, none when already aligned', () => {
    const bs = 1024;
    // 12 + 4*253 = 1024: exactly one block, nothing to pad.
    assert.equal(incrementalHeaderSize(253, bs), 1024);
    // 12 + 4*254 = 1028: padded to 2048.
    assert.equal(incrementalHeaderSize(254, bs), 2048);
    assert.equal(incrementalHeaderSize(2045, BLCKSZ), 8192);
    assert.equal(incrementalHeaderSize(2046, BLCKSZ), 16384);

    const blocks = Array.from({ length: 300 }, (_, i) => ({ blockNo: i * 3 + 1, image: image(2, i * 3 + 1, bs) }));
    const file = buildIncrementalFile({ truncationBlockLength: 1000, blocks }, bs);
    const headerSize = 2048; // 12 + 1200 = 1212 -> 2048
    assert.equal(file.length, headerSize + 300 * bs);
    assert.ok(file.subarray(1212, headerSize).every((b) => b === 0));
    assert.equal(file.readUInt32LE(12 + 4 * 299), 898);

    const h = parseIncrementalHeader(file.subarray(0, headerSize), bs, { path: PATH, fileSize: file.length });
    assert.equal(h.headerSize, headerSize);
    assert.equal(h.blockCount, 300);
    assert.deepEqual([...h.blocks], blocks.map((b) => b.blockNo));
    for (const i of [0, 150, 299]) {
      assert.deepEqual(file.subarray(h.headerSize + i * bs, h.headerSize + (i + 1) * bs), blocks[i].image);
    }
  });

  test('a streaming reader learns the header size from the first 12 bytes', () => {
    const bs = 1024;
    const blocks = Array.from({ length: 254 }, (_, i) => ({ blockNo: i, image: image(3, i, bs) }));
    const file = buildIncrementalFile({ truncationBlockLength: 254, blocks }, bs);
    assert.equal(incrementalHeaderNeeds(file.subarray(0, 0), bs), 12);
    assert.equal(incrementalHeaderNeeds(file.subarray(0, 11), bs), 12);
    assert.equal(incrementalHeaderNeeds(file.subarray(0, 12), bs), 2048);
    assert.equal(incrementalHeaderNeeds(file.subarray(0, 5000), bs), 2048);
    const h = parseIncrementalHeader(file.subarray(0, 2048), bs, { fileSize: file.length });
    assert.equal(h.blocks[253], 253);
    // The block list alone is enough; padding is optional input.
    assert.equal(parseIncrementalHeader(file.subarray(0, 12 + 4 * 254), bs).headerSize, 2048);
  });
});

describe('header validation', () => {
  const good = () => buildIncrementalFile({ truncationBlockLength: 10, blocks: [{ blockNo: 3, image: image(1, 3) }, { blockNo: 4, image: image(1, 4) }] }, BLCKSZ);

  test('corrupted magic', () => {
    const file = good();
    file[0] ^= 0x01;
    assert.throws(() => parseIncrementalHeader(file, BLCKSZ, { path: PATH }), corruptWith(/base\/5\/INCREMENTAL\.16384.*bad magic 0xd3ae1f0c/));
    assert.throws(() => incrementalHeaderNeeds(file, BLCKSZ, { path: PATH }), corruptWith(/bad magic/));
  });

  test('big-endian magic is recognised and refused', () => {
    const file = good();
    file.writeUInt32BE(INCREMENTAL_MAGIC, 0);
    assert.throws(() => parseIncrementalHeader(file, BLCKSZ, { path: PATH }), corruptWith(/INCREMENTAL\.16384.*big-endian/));
  });

  test('block number not below the segment size', () => {
    const file = good();
    file.writeUInt32LE(131072, 16);
    assert.throws(() => parseIncrementalHeader(file, BLCKSZ, { path: PATH }), corruptWith(/block number 131072 \(entry 1\).*131072 blocks/));
    // 131071 is the last block of a default segment; a smaller RELSEG_SIZE moves the bound.
    file.writeUInt32LE(131071, 16);
    assert.deepEqual([...parseIncrementalHeader(file, BLCKSZ).blocks], [3, 131071]);
    const small = buildIncrementalFile({ truncationBlockLength: 4, blocks: [{ blockNo: 3, image: image(1, 3) }, { blockNo: 4, image: image(1, 4) }] }, BLCKSZ);
    assert.throws(() => parseIncrementalHeader(small, BLCKSZ, { blocksPerSegment: 4 }), corruptWith(/block number 4 \(entry 1\) is not below the segment size of 4 blocks/));
    assert.deepEqual([...parseIncrementalHeader(small, BLCKSZ, { blocksPerSegment: 5 }).blocks], [3, 4]);
  });

  test('block count or truncation length larger than a segment', () => {
    const count = good();
    count.writeUInt32LE(131073, 4);
    assert.throws(() => parseIncrementalHeader(count, BLCKSZ, { path: PATH }), corruptWith(/block count 131073 exceeds/));
    assert.throws(() => incrementalHeaderNeeds(count, BLCKSZ), corruptWith(/block count 131073 exceeds/));
    const trunc = good();
    trunc.writeUInt32LE(131073, 8);
    assert.throws(() => parseIncrementalHeader(trunc, BLCKSZ, { path: PATH }), corruptWith(/truncation block length 131073 exceeds/));
    trunc.writeUInt32LE(131072, 8); // a full segment is allowed
    assert.equal(parseIncrementalHeader(trunc, BLCKSZ).truncationBlockLength, 131072);
  });

  test('truncated header', () => {
    const file = good();
    assert.throws(() => parseIncrementalHeader(file.subarray(0, 8), BLCKSZ, { path: PATH }), corruptWith(/INCREMENTAL\.16384: header truncated: 8 bytes/));
    assert.throws(() => parseIncrementalHeader(file.subarray(0, 19), BLCKSZ, { path: PATH }), corruptWith(/header truncated: 19 bytes.*end at byte 20/));
  });

  test('duplicate block numbers', () => {
    const file = buildIncrementalFile({ truncationBlockLength: 10, blocks: [{ blockNo: 5, image: image(1, 5) }, { blockNo: 2, image: image(1, 2) }, { blockNo: 5, image: image(1, 5) }] }, BLCKSZ);
    assert.throws(() => parseIncrementalHeader(file, BLCKSZ, { path: PATH }), corruptWith(/block 5 is listed more than once/));
    // Unsorted but distinct is readable (pg_combinebackup does not require order).
    const unsorted = buildIncrementalFile({ truncationBlockLength: 10, blocks: [{ blockNo: 5, image: image(1, 5) }, { blockNo: 2, image: image(1, 2) }] }, BLCKSZ);
    assert.deepEqual([...parseIncrementalHeader(unsorted, BLCKSZ).blocks], [5, 2]);
  });

  test('file size must match the header', () => {
    const file = good();
    assert.equal(expectedFileSize(parseIncrementalHeader(file, BLCKSZ), BLCKSZ), 3 * BLCKSZ);
    assert.throws(() => parseIncrementalHeader(file, BLCKSZ, { path: PATH, fileSize: 3 * BLCKSZ - 1 }), corruptWith(/24575 bytes long, but a header of 2 blocks makes it 24576/));
    const none = buildIncrementalFile({ truncationBlockLength: 1, blocks: [] }, BLCKSZ);
    assert.throws(() => parseIncrementalHeader(none, BLCKSZ, { fileSize: BLCKSZ }), corruptWith(/makes it 12/));
  });

  test('non-zero padding', () => {
    const file = good();
    file[100] = 1;
    assert.throws(() => parseIncrementalHeader(file, BLCKSZ, { path: PATH }), corruptWith(/padding byte at offset 100/));
  });

  test('block size must be a PostgreSQL block size', () => {
    assert.throws(() => parseIncrementalHeader(good(), 8000), (err: unknown) => isWalvaultError(err, 'INTERNAL'));
  });
});

// ---------------------------------------------------------------------------------------

/** An incremental entry whose header went through the real bytes. */
function inc(backup: string, truncationBlockLength: number, blockNos: number[], tag = 9): ChainEntry {
  const file = buildIncrementalFile({ truncationBlockLength, blocks: blockNos.map((b) => ({ blockNo: b, image: image(tag, b) })) }, BLCKSZ);
  return { backup, kind: 'incremental', header: parseIncrementalHeader(file, BLCKSZ, { path: `${backup}/${PATH}`, fileSize: file.length }) };
}
function full(backup: string, blocks: number): ChainEntry {
  return { backup, kind: 'full', length: blocks * BLCKSZ };
}
const F = (backup: string, block: number) => ({ source: 'full' as const, backup, block });
const I = (backup: string, index: number) => ({ source: 'incremental' as const, backup, index });
const Z = { source: 'zero' as const };

function perBlock(chain: ChainEntry[], compat = false) {
  const plan = planReconstruction(PATH, chain, BLCKSZ, { pgCombinebackupCompat: compat });
  assert.equal(plan.kind, 'reconstruct');
  if (plan.kind !== 'reconstruct') throw new Error('unreachable');
  const blocks = expandRuns(plan.runs);
  assert.equal(blocks.length, plan.blockCount);
  return { plan, blocks };
}

describe('reconstruction plan', () => {
  test('full file only: copied', () => {
    assert.deepEqual(planReconstruction(PATH, [full('B0', 10)], BLCKSZ), { kind: 'copy', backup: 'B0', length: 10 * BLCKSZ });
    // Older backups are not consulted once the newest has the full file, even if absent there.
    assert.deepEqual(planReconstruction(PATH, [full('B2', 3), { backup: 'B1', kind: 'absent' }, full('B0', 10)], BLCKSZ), { kind: 'copy', backup: 'B2', length: 3 * BLCKSZ });
  });

  test('full + one incremental changing some blocks', () => {
    const { plan, blocks } = perBlock([inc('B1', 8, [2, 5]), full('B0', 8)]);
    assert.deepEqual(plan, {
      kind: 'reconstruct',
      blockCount: 8,
      runs: [
        { start: 0, count: 2, source: 'full', backup: 'B0', from: 0 },
        { start: 2, count: 1, source: 'incremental', backup: 'B1', from: 0 },
        { start: 3, count: 2, source: 'full', backup: 'B0', from: 3 },
        { start: 5, count: 1, source: 'incremental', backup: 'B1', from: 1 },
        { start: 6, count: 2, source: 'full', backup: 'B0', from: 6 },
      ],
    });
    assert.deepEqual(blocks, [F('B0', 0), F('B0', 1), I('B1', 0), F('B0', 3), F('B0', 4), I('B1', 1), F('B0', 6), F('B0', 7)]);
  });

  test('three incrementals: the newest image of each block wins', () => {
    const chain = [inc('B3', 6, [3, 4]), inc('B2', 6, [2, 3]), inc('B1', 6, [1, 2, 4]), full('B0', 6)];
    const { plan, blocks } = perBlock(chain);
    assert.deepEqual(blocks, [F('B0', 0), I('B1', 0), I('B2', 0), I('B3', 0), I('B3', 1), F('B0', 5)]);
    assert.deepEqual(plan.runs.map((r) => [r.start, r.count]), [[0, 1], [1, 1], [2, 1], [3, 2], [5, 1]]);
  });

  test('nothing changed since an older full file of the right length: copy it', () => {
    assert.deepEqual(planReconstruction(PATH, [inc('B2', 8, []), inc('B1', 8, []), full('B0', 8)], BLCKSZ), { kind: 'copy', backup: 'B0', length: 8 * BLCKSZ });
  });

  test('truncation in the newest backup: blocks past it are gone', () => {
    const { plan } = perBlock([inc('B1', 4, []), full('B0', 10)]);
    assert.deepEqual(plan, { kind: 'reconstruct', blockCount: 4, runs: [{ start: 0, count: 4, source: 'full', backup: 'B0', from: 0 }] });
    // An older incremental's image past the newest truncation length is not used either.
    const { blocks } = perBlock([inc('B2', 5, [1]), inc('B1', 10, [4, 7]), full('B0', 10)]);
    assert.deepEqual(blocks, [F('B0', 0), I('B2', 0), F('B0', 2), F('B0', 3), I('B1', 0)]);
  });

  test('shrank in a middle backup, then grew again: older blocks past the truncation point do not come back', () => {
    // B1: VACUUM cut the file from 10 blocks to 4. B2: it grew to 8; blocks 4 and 5 were
    // WAL-logged, 6 and 7 were extended but never written (zero pages on the server).
    const chain = [inc('B2', 8, [4, 5]), inc('B1', 4, []), full('B0', 10)];
    const { plan, blocks } = perBlock(chain);
    assert.equal(plan.blockCount, 8);
    assert.deepEqual(blocks, [F('B0', 0), F('B0', 1), F('B0', 2), F('B0', 3), I('B2', 0), I('B2', 1), Z, Z]);
    assert.deepEqual(plan.runs, [
      { start: 0, count: 4, source: 'full', backup: 'B0', from: 0 },
      { start: 4, count: 2, source: 'incremental', backup: 'B2', from: 0 },
      { start: 6, count: 2, source: 'zero' },
    ]);
    // pg_combinebackup limits older backups by the newest truncation length only, so it
    // takes B0's stale blocks 6 and 7; the compat mode reproduces that.
    assert.deepEqual(perBlock(chain, true).blocks.slice(6), [F('B0', 6), F('B0', 7)]);
    // The same limit applies to an older incremental's images and stops a whole-file copy.
    assert.deepEqual(perBlock([inc('B3', 8, [4]), inc('B2', 3, []), inc('B1', 8, [5, 6]), full('B0', 10)]).blocks, [F('B0', 0), F('B0', 1), F('B0', 2), Z, I('B3', 0), Z, Z, Z]);
    assert.deepEqual(perBlock([inc('B2', 8, []), inc('B1', 5, []), full('B0', 8)]).blocks, [F('B0', 0), F('B0', 1), F('B0', 2), F('B0', 3), F('B0', 4), Z, Z, Z]);
    assert.deepEqual(planReconstruction(PATH, [inc('B2', 8, []), inc('B1', 5, []), full('B0', 8)], BLCKSZ, { pgCombinebackupCompat: true }), { kind: 'copy', backup: 'B0', length: 8 * BLCKSZ });
  });

  test('file absent in the middle backup: the chain is broken', () => {
    const chain: ChainEntry[] = [inc('B2', 4, [1]), { backup: 'B1', kind: 'absent' }, full('B0', 4)];
    assert.throws(() => planReconstruction(PATH, chain, BLCKSZ), corruptWith(/INCREMENTAL\.16384: backup B2 holds it as an incremental file, but the backup before it \(B1\) has neither/));
    // A new full file in the middle backup ends the search there, whatever is older.
    const { blocks } = perBlock([inc('B2', 4, [1]), full('B1', 4), { backup: 'B0', kind: 'absent' }]);
    assert.deepEqual(blocks, [F('B1', 0), I('B2', 0), F('B1', 2), F('B1', 3)]);
  });

  test('chain without a full file, empty chain, file absent in the newest backup', () => {
    assert.throws(() => planReconstruction(PATH, [inc('B2', 4, [1]), inc('B1', 4, [])], BLCKSZ), corruptWith(/chain ends at backup B1 with an incremental file/));
    assert.throws(() => planReconstruction(PATH, [], BLCKSZ), (err: unknown) => isWalvaultError(err, 'INTERNAL'));
    assert.throws(() => planReconstruction(PATH, [{ backup: 'B1', kind: 'absent' }, full('B0', 1)], BLCKSZ), (err: unknown) => isWalvaultError(err, 'INTERNAL'));
  });

  test('relation extended in the newest backup', () => {
    const { plan, blocks } = perBlock([inc('B1', 7, [1, 4, 5, 6]), full('B0', 4)]);
    assert.equal(plan.blockCount, 7);
    assert.deepEqual(blocks, [F('B0', 0), I('B1', 0), F('B0', 2), F('B0', 3), I('B1', 1), I('B1', 2), I('B1', 3)]);
    // Images past the truncation length still count and stretch the file (find_reconstructed_block_length).
    const past = perBlock([inc('B1', 3, [5]), full('B0', 10)]);
    assert.equal(past.plan.blockCount, 6);
    assert.deepEqual(past.blocks, [F('B0', 0), F('B0', 1), F('B0', 2), Z, Z, I('B1', 0)]);
  });

  test('blocks nobody has become zero', () => {
    const { plan, blocks } = perBlock([inc('B2', 6, [4]), inc('B1', 5, []), full('B0', 3)]);
    assert.deepEqual(blocks, [F('B0', 0), F('B0', 1), F('B0', 2), Z, I('B2', 0), Z]);
    assert.deepEqual(plan.runs.filter((r) => r.source === 'zero'), [{ start: 3, count: 1, source: 'zero' }, { start: 5, count: 1, source: 'zero' }]);
    // A trailing partial block in a full file is not a block.
    assert.deepEqual(perBlock([inc('B1', 3, [0]), { backup: 'B0', kind: 'full', length: 2 * BLCKSZ + 100 }]).blocks, [I('B1', 0), F('B0', 1), Z]);
  });

  test('a 1 GiB segment plans into a few runs, quickly', () => {
    const n = 131072;
    const half = new Uint32Array(n / 2).map((_, i) => i * 2); // every even block changed
    const header: IncrementalHeader = { blockCount: half.length, truncationBlockLength: n, blocks: half, headerSize: incrementalHeaderSize(half.length, BLCKSZ) };
    const contiguous = new Uint32Array(1000).map((_, i) => 5000 + i);
    const older: IncrementalHeader = { blockCount: 1000, truncationBlockLength: n, blocks: contiguous, headerSize: incrementalHeaderSize(1000, BLCKSZ) };
    const t0 = process.hrtime.bigint();
    const plan = planReconstruction(PATH, [{ backup: 'B2', kind: 'incremental', header: older }, { backup: 'B1', kind: 'incremental', header }, full('B0', n)], BLCKSZ);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(plan.kind, 'reconstruct');
    if (plan.kind !== 'reconstruct') return;
    assert.equal(plan.blockCount, n);
    // 5000 alternating blocks, one run of 1000 from B2, then alternating again.
    assert.equal(plan.runs.length, 5000 + 1 + (n - 6000));
    assert.deepEqual(plan.runs[5000], { start: 5000, count: 1000, source: 'incremental', backup: 'B2', from: 0 });
    assert.deepEqual(plan.runs[5001], { start: 6000, count: 1, source: 'incremental', backup: 'B1', from: 3000 });
    assert.deepEqual(plan.runs[5002], { start: 6001, count: 1, source: 'full', backup: 'B0', from: 6001 });
    assert.ok(ms < 2000, `planning took ${ms} ms`);
  });
});
