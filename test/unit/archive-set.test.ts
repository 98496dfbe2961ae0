/**
 * A site's several archives read as one (issue 19, item 3): two real local archives, one
 * plain and one compressed and encrypted, holding the same WAL; objects missing or damaged in
 * the first are read from the second, with a line naming the object and both archives; "not
 * there" only when no archive has it; a damaged copy with no whole one elsewhere is an error.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Archive } from '../../src/archive/archive';
import { ArchiveSet } from '../../src/archive/archive-set';
import type { ClusterInfo } from '../../src/archive/cluster-marker';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { isWalvaultError } from '../../src/errors';
import { fetchWalFile } from '../../src/restore/fetch-wal-file';
import { LocalStorage } from '../../src/storage/local';
import { UnionStorage } from '../../src/storage/union-storage';
import { segmentFileName } from '../../src/wal/lsn';
import { buildSegment, FIXTURE_SEG_SIZE, FIXTURE_SYSID } from '../helpers/wal-fixtures';

const CLUSTER: ClusterInfo = { systemId: String(FIXTURE_SYSID), pgVersionNum: 160000, walSegmentSize: FIXTURE_SEG_SIZE };
const seg = (n: number) => segmentFileName(1, BigInt(n), FIXTURE_SEG_SIZE);

async function setup(t: { after(fn: () => Promise<void>): void }, segments: number[]) {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-archive-set-'));
  t.after(() => fs.rm(root, { recursive: true, force: true }));
  await createKeyPair(path.join(root, 'b.key'), path.join(root, 'b.pub'));
  const dirA = path.join(root, 'a');
  const dirB = path.join(root, 'b');
  const writerA = new Archive(new LocalStorage(dirA));
  const writerB = new Archive(new LocalStorage(dirB), { codec: 'zstd', recipient: loadPublicKey(path.join(root, 'b.pub')) });
  for (const w of [writerA, writerB]) {
    await w.ensureCluster(CLUSTER);
    for (const n of segments) await w.putImmutable(Archive.walKey(seg(n)), buildSegment(BigInt(n)));
  }
  const warnings: string[] = [];
  const a = new Archive(new LocalStorage(dirA));
  const b = new Archive(new LocalStorage(dirB), { privateKey: loadPrivateKey(path.join(root, 'b.key')) });
  const set = new ArchiveSet([a, b], (line) => warnings.push(line));
  t.after(() => set.close());
  return { root, dirA, dirB, set, warnings, a, b };
}

async function fetch(set: Archive, root: string, n: number): Promise<Buffer | null> {
  const dest = path.join(root, `fetched-${n}`);
  const found = await fetchWalFile(set, seg(n), dest, { cluster: async () => CLUSTER });
  return found ? fs.readFile(dest) : null;
}

async function flipByte(file: string, at: number): Promise<void> {
  const h = await fs.open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, at);
    b[0] ^= 0x40;
    await h.write(b, 0, 1, at);
  } finally {
    await h.close();
  }
}

describe('ArchiveSet', () => {
  test('an object in the first archive is read from it, and nothing is said', async (t) => {
    const { root, set, warnings } = await setup(t, [1]);
    assert.deepEqual(await fetch(set, root, 1), buildSegment(1n));
    assert.deepEqual(warnings, []);
  });

  test('missing in the first: read from the second, and the line names the object and both archives', async (t) => {
    const { root, dirA, set, warnings, a, b } = await setup(t, [1, 2]);
    await fs.rm(path.join(dirA, 'wal', seg(2)));
    assert.deepEqual(await fetch(set, root, 2), buildSegment(2n));
    assert.equal(warnings.length, 1);
    for (const s of [`wal/${seg(2)}`, `missing in ${a.storage.description}`, `read from ${b.storage.description}`]) assert.ok(warnings[0].includes(s), warnings[0]);
  });

  test('damaged in the first (one byte flipped): read from the second, saying why', async (t) => {
    const { root, dirA, set, warnings, a, b } = await setup(t, [3]);
    await flipByte(path.join(dirA, 'wal', seg(3)), 200_000);
    assert.deepEqual(await fetch(set, root, 3), buildSegment(3n));
    assert.equal(warnings.length, 1);
    for (const s of [`wal/${seg(3)}`, `unreadable in ${a.storage.description}`, `read from ${b.storage.description}`]) assert.ok(warnings[0].includes(s), warnings[0]);
    // Nothing of the damaged copy was left at the destination: the file is the whole segment.
    assert.equal((await fs.stat(path.join(root, 'fetched-3'))).size, FIXTURE_SEG_SIZE);
  });

  test('missing everywhere: not there, silently; damaged in one and missing in the other: the damage, not a miss', async (t) => {
    const { root, dirA, dirB, set, warnings } = await setup(t, [4]);
    assert.equal(await fetch(set, root, 5), null);
    assert.deepEqual(warnings, []);
    await flipByte(path.join(dirA, 'wal', seg(4)), 300_000);
    await fs.rm(path.join(dirB, 'wal', seg(4)));
    await assert.rejects(fetch(set, root, 4), (err) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && err.message.includes(dirA));
    await assert.rejects(fs.stat(path.join(root, 'fetched-4')), { code: 'ENOENT' });
  });

  test('what the site holds is what any archive holds: listings merged, in order, once each', async (t) => {
    const { dirA, dirB, set } = await setup(t, [1, 2, 3, 4]);
    await fs.rm(path.join(dirA, 'wal', seg(2)));
    await fs.rm(path.join(dirB, 'wal', seg(3)));
    assert.deepEqual(await set.listWal(), [1, 2, 3, 4].map(seg));
    const union = set.storage as UnionStorage;
    assert.deepEqual((await union.list('wal/', { startAfter: `wal/${seg(1)}`, limit: 2 })).map((o) => o.key), [`wal/${seg(2)}`, `wal/${seg(3)}`]);
    assert.ok(await set.exists(`wal/${seg(3)}`));
    await assert.rejects(union.put('wal/x'), (err) => isWalvaultError(err, 'INTERNAL'));
  });

  test('archives of different clusters are refused as one site', async (t) => {
    const { dirB, set } = await setup(t, [1]);
    const other = new LocalStorage(dirB);
    await other.delete('cluster.json');
    await new Archive(other).ensureCluster({ ...CLUSTER, systemId: '7000000000000000042' });
    await assert.rejects(set.readCluster(), (err) => isWalvaultError(err, 'ARCHIVE_OTHER_CLUSTER') && err.message.includes('7000000000000000042'));
  });
});
