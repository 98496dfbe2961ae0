/**
 * What wal-fetch reads on a miss (src/restore/wal-miss.ts), over a real local archive: it
 * decides gap or end from a few names after the missing one per timeline and the later
 * timelines' history files, never a listing of the whole archive. A standby at the end of
 * the archive misses every few seconds, so that case costs one listing of two keys.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Archive } from '../../src/archive/archive';
import { findGap } from '../../src/restore/wal-miss';
import { LocalStorage } from '../../src/storage/local';
import type { ListOptions, ObjectBody, ObjectInfo, Storage } from '../../src/storage/storage';
import { formatLsn, historyFileName, segmentFileName, segmentStartOfNumber } from '../../src/wal/lsn';

const SEG = 1 << 20;
const seg = (tli: number, n: number) => segmentFileName(tli, BigInt(n), SEG);

/** A real local storage that records the reads made through it. */
class RecordingStorage implements Storage {
  readonly lists: Array<{ prefix: string } & ListOptions> = [];
  /** Whole-object reads (get, or openRead: one request each). */
  readonly gets: string[] = [];
  constructor(private readonly inner: LocalStorage) {}
  get description() {
    return this.inner.description;
  }
  put(key: string, body: ObjectBody) {
    return this.inner.put(key, body);
  }
  get(key: string) {
    this.gets.push(key);
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number, into?: Buffer) {
    return this.inner.getRange(key, offset, length, into);
  }
  head(key: string) {
    return this.inner.head(key);
  }
  openRead(key: string, into?: Buffer) {
    this.gets.push(key);
    return this.inner.openRead(key, into);
  }
  list(prefix: string, opts: ListOptions = {}): Promise<ObjectInfo[]> {
    this.lists.push({ prefix, ...opts });
    return this.inner.list(prefix, opts);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  close() {
    return this.inner.close();
  }
  reset() {
    this.lists.length = 0;
    this.gets.length = 0;
  }
}

describe('the reads of a miss', () => {
  test('bounded by the timelines, not by the size of the archive', async (t) => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-wal-miss-'));
    t.after(() => fs.rm(root, { recursive: true, force: true }));
    const storage = new RecordingStorage(new LocalStorage(root));
    const archive = new Archive(storage);
    await archive.ensureCluster({ systemId: '7321487932742317001', pgVersionNum: 150000, walSegmentSize: SEG });
    const put = (name: string, text = 'x') => archive.putImmutable(`wal/${name}`, Buffer.from(text));
    // Timeline 1: segments 1..200 without 50. Timeline 2 left it at segment 150, timeline 3 at 20.
    for (let n = 1; n <= 200; n++) if (n !== 50) await put(seg(1, n));
    await put(historyFileName(2), `1\t${formatLsn(segmentStartOfNumber(150n, SEG) + 100n)}\tno recovery target specified\n`);
    for (let n = 150; n <= 160; n++) await put(seg(2, n));
    await put(historyFileName(3), `1\t${formatLsn(segmentStartOfNumber(20n, SEG))}\tno recovery target specified\n`);
    for (let n = 20; n <= 30; n++) await put(seg(3, n));
    await put(`${seg(3, 31)}.partial`);
    storage.reset();

    // The end of the newest timeline (a standby polling): one listing of two keys, nothing read.
    assert.equal(await findGap(archive, seg(3, 31)), null);
    assert.deepEqual(storage.lists, [{ prefix: 'wal/', startAfter: `wal/${seg(3, 31)}`, limit: 2 }]);
    assert.deepEqual(storage.gets, []);

    // A hole on timeline 1: decided by the first listing.
    storage.reset();
    const gap = await findGap(archive, seg(1, 50));
    assert.equal(gap?.next, seg(1, 51));
    assert.equal(storage.lists.length, 1);

    // Past timeline 1's end: each later timeline's first name and history file, no more.
    storage.reset();
    assert.equal(await findGap(archive, seg(1, 201)), null);
    assert.ok(storage.lists.length <= 4, `${storage.lists.length} listings`);
    assert.ok(storage.lists.every((l) => l.startAfter !== undefined && l.limit !== undefined && l.limit <= 2), JSON.stringify(storage.lists));
    assert.deepEqual(storage.gets.sort(), ['cluster.json', `wal/${historyFileName(2)}`, `wal/${historyFileName(3)}`]);

    // Timeline 2 reads segment 149 from timeline 1: its hole there is a gap, though 1/150.. exist too.
    await storage.delete(`wal/${seg(1, 149)}`);
    for (let n = 150; n <= 200; n++) await storage.delete(`wal/${seg(1, n)}`);
    storage.reset();
    const viaTl2 = await findGap(archive, seg(1, 149));
    assert.equal(viaTl2?.via, 2);
    assert.equal(viaTl2?.next, seg(2, 150));
    assert.ok(storage.lists.every((l) => l.limit !== undefined && l.limit <= 2), JSON.stringify(storage.lists));
  });
});
