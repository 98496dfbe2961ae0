import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { Archive } from '../../src/archive/archive';
import type { ClusterInfo } from '../../src/archive/cluster-marker';
import { crc32c } from '@node-rs/crc32';
import { encodeEnvelope, encodePlainHeader, hex32, sha256 } from '../../src/archive/envelope';
import { decodeEnvelope } from '../../src/archive/read/decode-object';
import { fileSource, WINDOW } from '../../src/archive/body-source';
import { LocalStorage } from '../../src/storage/local';
import type { ObjectBody, ObjectChunk, ObjectInfo, Storage } from '../../src/storage/storage';
import { historyFileName, segmentFileName } from '../../src/wal/lsn';

const SEG = 16 << 20;
const OURS: ClusterInfo = { systemId: '7321487932742317001', pgVersionNum: 170004, walSegmentSize: SEG };

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-archive-'));
  t.after(() => fs.rm(root, { recursive: true, force: true }));
  const storage = new LocalStorage(root);
  return { root, storage, archive: new Archive(storage) };
}

/** Relative path -> bytes of every file under root: the whole archive as seen on disk. */
async function snapshot(root: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  async function walk(rel: string): Promise<void> {
    for (const e of await fs.readdir(path.join(root, rel), { withFileTypes: true })) {
      const name = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(name);
      else out.set(name, await fs.readFile(path.join(root, name)));
    }
  }
  await walk('');
  return out;
}

function isCode(code: ErrorCode, ...patterns: Array<RegExp | string>) {
  return (err: unknown) => {
    assert.ok(isWalvaultError(err, code), `expected ${code}, got ${String(err)}`);
    for (const p of patterns) {
      if (typeof p === 'string') assert.ok(err.message.includes(p), `message lacks "${p}": ${err.message}`);
      else assert.match(err.message, p);
    }
    return true;
  };
}

const seg = (n: number) => segmentFileName(1, BigInt(n), SEG);

describe('Archive cluster marker', () => {
  test('ensureCluster writes the marker once, then accepts the same cluster', async (t) => {
    const { root, archive } = await setup(t);
    assert.equal(await archive.readCluster(), null);

    const first = await archive.ensureCluster(OURS);
    assert.equal(first.systemId, OURS.systemId);
    assert.equal(first.pgVersionNum, OURS.pgVersionNum);
    assert.equal(first.walSegmentSize, SEG);
    assert.ok(first.createdAt && !Number.isNaN(Date.parse(first.createdAt)));

    const file = path.join(root, 'cluster.json');
    const bytes = await fs.readFile(file);
    const stat = await fs.stat(file);
    const marker = JSON.parse((await decodeEnvelope(bytes, 'cluster.json')).plaintext.toString());
    // The settings this archive writes with are recorded too (./archive-settings.test.ts).
    assert.deepEqual(marker, { ...OURS, createdAt: first.createdAt, settings: { compression: 'none', encryption: null } });
    assert.deepEqual(await archive.readCluster(), first);

    await new Promise((r) => setTimeout(r, 20));
    const again = await new Archive(new LocalStorage(root)).ensureCluster({ ...OURS, pgVersionNum: 170006 });
    assert.deepEqual(again, first);
    assert.ok((await fs.readFile(file)).equals(bytes));
    const stat2 = await fs.stat(file);
    assert.equal(stat2.ino, stat.ino);
    assert.equal(stat2.mtimeMs, stat.mtimeMs);
  });

  test('a given createdAt is kept', async (t) => {
    const { archive } = await setup(t);
    const info = await archive.ensureCluster({ ...OURS, createdAt: '2024-01-02T03:04:05.000Z' });
    assert.equal(info.createdAt, '2024-01-02T03:04:05.000Z');
    assert.equal((await archive.readCluster())?.createdAt, '2024-01-02T03:04:05.000Z');
  });

  test('another system identifier is refused, naming both, and nothing is written', async (t) => {
    const { root, archive } = await setup(t);
    await archive.ensureCluster(OURS);
    await archive.putImmutable(Archive.walKey(seg(1)), randomBytes(1000));
    const before = await snapshot(root);

    const other = '6999999999999999999';
    await assert.rejects(
      archive.ensureCluster({ ...OURS, systemId: other }),
      isCode(
        'ARCHIVE_OTHER_CLUSTER',
        `archive file://${root} belongs to database system ${OURS.systemId}, but the server is ${other}: use a separate archive for each cluster`,
      ),
    );
    assert.deepEqual(await snapshot(root), before);
  });

  test('ids differing only past 2^53 are still different clusters', async (t) => {
    const { archive } = await setup(t);
    await archive.ensureCluster({ ...OURS, systemId: '9007199254740993' });
    await assert.rejects(archive.ensureCluster({ ...OURS, systemId: '9007199254740992' }), isCode('ARCHIVE_OTHER_CLUSTER'));
    assert.equal((await archive.readCluster())?.systemId, '9007199254740993');
  });

  test('another wal_segment_size is refused and nothing is written', async (t) => {
    const { root, archive } = await setup(t);
    await archive.ensureCluster(OURS);
    const before = await snapshot(root);
    await assert.rejects(archive.ensureCluster({ ...OURS, walSegmentSize: 64 << 20 }), isCode('ARCHIVE_OTHER_CLUSTER', String(SEG), String(64 << 20)));
    assert.deepEqual(await snapshot(root), before);
  });

  test('a damaged marker is reported, not replaced', async (t) => {
    const { root, archive } = await setup(t);
    await archive.ensureCluster(OURS);
    const file = path.join(root, 'cluster.json');
    const bytes = await fs.readFile(file);
    bytes[bytes.length - 3] ^= 0x20;
    await fs.writeFile(file, bytes);
    await assert.rejects(archive.ensureCluster(OURS), isCode('ARCHIVE_CORRUPT', 'cluster.json'));
    assert.ok((await fs.readFile(file)).equals(bytes));
  });

  test('invalid identities are refused before touching the archive', async (t) => {
    const { root, archive } = await setup(t);
    for (const bad of [{ ...OURS, systemId: '12ab' }, { ...OURS, systemId: '18446744073709551616' }, { ...OURS, walSegmentSize: 1000 }]) {
      await assert.rejects(archive.ensureCluster(bad), isCode('INTERNAL'));
    }
    assert.equal((await snapshot(root)).size, 0);
  });
});

describe('Archive objects', () => {
  test('putImmutable stores a verified envelope that get returns', async (t) => {
    const { root, archive } = await setup(t);
    const key = Archive.walKey(seg(3));
    const body = randomBytes(SEG);
    assert.equal(await archive.putImmutable(key, body), 'stored');
    const onDisk = await fs.readFile(path.join(root, 'wal', seg(3)));
    const decoded = await decodeEnvelope(onDisk, key);
    assert.ok(decoded.plaintext.equals(body));
    assert.deepEqual(decoded.header.sha256, sha256(body));
    assert.ok((await archive.get(key))?.equals(body));
    assert.equal(await archive.exists(key), true);
  });

  test('putImmutable with the same bytes is a no-op that leaves the object untouched', async (t) => {
    const { root, archive } = await setup(t);
    const key = Archive.walKey(historyFileName(2));
    const body = Buffer.from('1\t0/3000000\tno recovery target specified\n');
    await archive.putImmutable(key, body);
    const file = path.join(root, key);
    const bytes = await fs.readFile(file);
    const st = await fs.stat(file);
    await new Promise((r) => setTimeout(r, 20));

    assert.equal(await archive.putImmutable(key, Buffer.from(body)), 'unchanged');
    const st2 = await fs.stat(file);
    assert.ok((await fs.readFile(file)).equals(bytes));
    assert.equal(st2.mtimeMs, st.mtimeMs);
    assert.equal(st2.ino, st.ino);
  });

  test('putImmutable with different bytes is refused, naming the key and both checksums', async (t) => {
    const { root, archive } = await setup(t);
    const key = Archive.walKey(seg(4));
    const original = randomBytes(4096);
    const different = Buffer.from(original);
    different[4000] ^= 1;
    await archive.putImmutable(key, original);
    const file = path.join(root, key);
    const bytes = await fs.readFile(file);

    await assert.rejects(
      archive.putImmutable(key, different),
      isCode('ARCHIVE_CONFLICT', key, sha256(original).toString('hex'), sha256(different).toString('hex')),
    );
    assert.ok((await fs.readFile(file)).equals(bytes));
    assert.ok((await archive.get(key))?.equals(original));
    // A longer object with the same prefix is a conflict too.
    await assert.rejects(archive.putImmutable(key, Buffer.concat([original, Buffer.alloc(1)])), isCode('ARCHIVE_CONFLICT'));
  });

  test('putImmutable over a torn stored object (truncated, empty, bad header) repairs it instead of calling it unchanged', async (t) => {
    const { root, archive } = await setup(t);
    const key = Archive.walKey(seg(5));
    const body = randomBytes(1000);
    await archive.putImmutable(key, body);
    const file = path.join(root, key);
    const bytes = await fs.readFile(file);
    const flipped = Buffer.from(bytes);
    flipped[3] ^= 0xff;
    // What a store that is not atomic leaves when it dies mid-PUT (s3rver writes in place).
    for (const torn of [bytes.subarray(0, bytes.length - 10), Buffer.alloc(0), flipped]) {
      await fs.writeFile(file, torn);
      assert.equal(await archive.putImmutable(key, body), 'repaired');
      assert.ok((await fs.readFile(file)).equals(bytes), 'the object is whole again');
    }
    // A whole object with other content is still never replaced.
    await assert.rejects(archive.putImmutable(key, randomBytes(1000)), isCode('ARCHIVE_CONFLICT', key));
  });

  test('putSealedFile over a torn object repairs it, also where it would hard-link', async (t) => {
    const { root, archive } = await setup(t);
    const key = Archive.walKey(seg(9));
    const body = randomBytes(SEG);
    const digest = createHash('sha256').update(body).digest();
    const sealed = path.join(root, 'sealed');
    await fs.writeFile(sealed, Buffer.concat([encodePlainHeader(body.length, digest), body]));
    await fs.mkdir(path.dirname(path.join(root, key)), { recursive: true });
    await fs.writeFile(path.join(root, key), Buffer.alloc(0));
    assert.equal(await archive.putSealedFile(key, sealed, body.length, digest), 'repaired');
    assert.ok((await archive.get(key))?.equals(body));
  });

  test('putPartial replaces the previous partial', async (t) => {
    const { archive } = await setup(t);
    const key = Archive.walKey(seg(6) + '.partial');
    const first = randomBytes(SEG);
    const second = randomBytes(SEG);
    await archive.putPartial(key, first);
    assert.ok((await archive.get(key))?.equals(first));
    await archive.putPartial(key, second);
    assert.ok((await archive.get(key))?.equals(second));
  });

  test('putPartial with the checksum the bytes arrived with: stored when the file still holds them, refused and removed when not', async (t) => {
    const { root, storage } = await setup(t);
    const file = path.join(root, '..', `${path.basename(root)}-partial`);
    t.after(() => fs.rm(file, { force: true }));
    const received = randomBytes(2 * WINDOW + 77);
    for (const codec of ['none', 'zstd'] as const) {
      const archive = new Archive(storage, { codec });
      const key = Archive.walKey(seg(7) + `.${codec}.partial`);
      await fs.writeFile(file, received);
      assert.ok((await archive.putPartial(key, fileSource(file, received.length), sha256(received))).equals(sha256(received)));
      assert.ok((await archive.get(key))?.equals(received));
      const changed = Buffer.from(received);
      changed[WINDOW + 5] ^= 0x20;
      await fs.writeFile(file, changed);
      const other = Archive.walKey(seg(8) + `.${codec}.partial`);
      await assert.rejects(archive.putPartial(other, fileSource(file, received.length), sha256(received)), isCode('ARCHIVE_CORRUPT', file));
      assert.equal(await storage.head(other), null, `${codec}: nothing stays stored`);
    }
  });

  test('putPartial refuses keys of finished objects', async (t) => {
    const { archive } = await setup(t);
    const key = Archive.walKey(seg(6));
    await archive.putImmutable(key, Buffer.from('final'));
    await assert.rejects(archive.putPartial(key, Buffer.from('other')), isCode('INTERNAL'));
    assert.equal((await archive.get(key))?.toString(), 'final');
  });

  test('get of an object damaged on disk is ARCHIVE_CORRUPT naming the key', async (t) => {
    const { root, archive } = await setup(t);
    const key = Archive.walKey(seg(7));
    await archive.putImmutable(key, randomBytes(8192));
    const file = path.join(root, key);
    const good = await fs.readFile(file);
    for (const pos of [2, 20, 63, 64, 5000, good.length - 1]) {
      const bad = Buffer.from(good);
      bad[pos] ^= 0x04;
      await fs.writeFile(file, bad);
      await assert.rejects(archive.get(key), isCode('ARCHIVE_CORRUPT', key), `byte ${pos}`);
    }
    await fs.writeFile(file, good.subarray(0, 3000));
    await assert.rejects(archive.get(key), isCode('ARCHIVE_CORRUPT', key));
  });

  test('get, exists and delete of missing objects', async (t) => {
    const { archive } = await setup(t);
    const key = Archive.walKey(seg(8));
    assert.equal(await archive.get(key), null);
    assert.equal(await archive.exists(key), false);
    await archive.putImmutable(key, Buffer.from('x'));
    assert.equal(await archive.exists(key), true);
    await archive.delete(key);
    assert.equal(await archive.exists(key), false);
    assert.equal(await archive.get(key), null);
    await assert.doesNotReject(archive.delete(key));
  });

  test('listWal returns the names under wal/, sorted, without the prefix', async (t) => {
    const { archive } = await setup(t);
    await archive.ensureCluster(OURS);
    const names = [seg(0x10), historyFileName(2), seg(2), seg(0x100) + '.partial', seg(0xff)];
    for (const n of names) {
      if (n.endsWith('.partial')) await archive.putPartial(Archive.walKey(n), Buffer.from(n));
      else await archive.putImmutable(Archive.walKey(n), Buffer.from(n));
    }
    assert.deepEqual(await archive.listWal(), [...names].sort());
    assert.deepEqual((await archive.listWal()).slice(0, 3), [seg(2), seg(0x10), seg(0xff)]);
  });

  test('walKey', () => {
    assert.equal(Archive.walKey(seg(1)), `wal/${seg(1)}`);
    assert.throws(() => Archive.walKey('a/b'), isCode('WAL_BAD_NAME'));
    assert.throws(() => Archive.walKey(''), isCode('WAL_BAD_NAME'));
  });
});

/** Wraps a real storage and damages what it writes, as a faulty disk or network might. */
class DamagingStorage implements Storage {
  constructor(
    private readonly inner: Storage,
    private readonly damage: (body: Buffer) => Buffer | null,
  ) {}
  get description() {
    return this.inner.description;
  }
  async put(key: string, body: ObjectBody): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of Buffer.isBuffer(body) ? [body] : Array.isArray(body) ? [body as readonly Buffer[]] : (body as AsyncIterable<ObjectChunk>)) {
      // Chunks are valid only until the next is asked for: copy them.
      for (const piece of Buffer.isBuffer(c) ? [c] : c) chunks.push(Buffer.from(piece));
    }
    const damaged = this.damage(Buffer.concat(chunks));
    if (damaged !== null) await this.inner.put(key, damaged);
  }
  get(key: string): Promise<Buffer | null> {
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    return this.inner.getRange(key, offset, length, into);
  }
  head(key: string): Promise<ObjectInfo | null> {
    return this.inner.head(key);
  }
  openRead(key: string, into?: Buffer): ReturnType<Storage['openRead']> {
    return this.inner.openRead(key, into);
  }
  list(prefix: string): Promise<ObjectInfo[]> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('Archive read-back verification', () => {
  test('a write damaged in storage is caught, removed, and a retry stores it', async (t) => {
    const { storage, archive } = await setup(t);
    const flipping = new Archive(
      new DamagingStorage(storage, (b) => {
        b[b.length - 1] ^= 0x01;
        return b;
      }),
    );
    const key = Archive.walKey(seg(9));
    const body = randomBytes(10000);
    await assert.rejects(flipping.putImmutable(key, body), isCode('ARCHIVE_CORRUPT', key));
    assert.equal(await storage.head(key), null);

    const partialKey = key + '.partial';
    await assert.rejects(flipping.putPartial(partialKey, body), isCode('ARCHIVE_CORRUPT', partialKey));

    assert.equal(await archive.putImmutable(key, body), 'stored');
    assert.ok((await archive.get(key))?.equals(body));
  });

  test('a framed write damaged in storage (header, a frame, the trailer, truncated) is caught by the one-hash read-back and removed', async (t) => {
    const { storage } = await setup(t);
    const body = Buffer.alloc(3 * WINDOW + 999, 'compressible WAL-ish text 0123456789 ');
    const cases: Array<[string, (b: Buffer) => Buffer, string]> = [
      ['header', (b) => (b[10] ^= 0x01, b), 'sha256'],
      ['a frame', (b) => (b[Math.floor(b.length / 2)] ^= 0x01, b), 'sha256'],
      ['the trailer checksum', (b) => (b[b.length - 1] ^= 0x01, b), 'its trailer differs when read back'],
      ['the trailer frame count', (b) => (b[b.length - 48 + 7] ^= 0x01, b), 'its trailer differs when read back'],
      ['the last byte before the trailer', (b) => (b[b.length - 49] ^= 0x01, b), 'sha256'],
      ['truncated', (b) => b.subarray(0, b.length - 1), 'instead of'],
    ];
    for (const [i, [what, damage, says]] of cases.entries()) {
      const flipping = new Archive(new DamagingStorage(storage, damage), { codec: 'zstd' });
      const key = Archive.walKey(seg(20 + i));
      await assert.rejects(flipping.putImmutable(key, body), isCode('ARCHIVE_CORRUPT', key, 'read back', says), what);
      assert.equal(await storage.head(key), null, `${what}: removed`);
    }
    // Undamaged, the same path stores and reads back.
    const fine = new Archive(new DamagingStorage(storage, (b) => b), { codec: 'zstd' });
    assert.equal(await fine.putImmutable(Archive.walKey(seg(30)), body), 'stored');
    assert.ok((await fine.get(Archive.walKey(seg(30))))?.equals(body));
  });

  test('a source file that no longer has the checksum it arrived with is refused, and nothing stays stored', async (t) => {
    const { root, storage, archive } = await setup(t);
    const file = path.join(root, '..', `${path.basename(root)}-spool`);
    t.after(() => fs.rm(file, { force: true }));
    const received = randomBytes(3 * WINDOW + 123); // several windows, the last one short
    await fs.writeFile(file, received);
    const damaged = Buffer.from(received);
    damaged[2 * WINDOW + 7] ^= 0x40;
    await fs.writeFile(file, damaged);
    const key = Archive.walKey(seg(11));
    await assert.rejects(
      archive.putImmutable(key, fileSource(file, received.length), sha256(received)),
      isCode('ARCHIVE_CORRUPT', key, file, sha256(received).toString('hex')),
    );
    assert.equal(await storage.head(key), null);

    await fs.writeFile(file, received);
    assert.equal(await archive.putImmutable(key, fileSource(file, received.length), sha256(received)), 'stored');
    assert.ok((await archive.get(key))?.equals(received));
  });

  test('a write that never arrives is caught', async (t) => {
    const { storage } = await setup(t);
    const losing = new Archive(new DamagingStorage(storage, () => null));
    await assert.rejects(losing.putImmutable(Archive.walKey(seg(10)), Buffer.from('x')), isCode('ARCHIVE_CORRUPT', 'missing when read back'));
    await assert.rejects(losing.ensureCluster(OURS), isCode('ARCHIVE_CORRUPT', 'cluster.json'));
  });
});

describe('Archive.putSealedFile', () => {
  async function sealedFile(t: { after(fn: () => Promise<void>): void }, plaintext: Buffer) {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-sealed-'));
    t.after(() => fs.rm(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'spooled');
    await fs.writeFile(file, Buffer.concat([encodePlainHeader(plaintext.length, sha256(plaintext)), plaintext]));
    return file;
  }

  test('a local archive adopts the file with a hard link: no copy, same bytes, verified', async (t) => {
    const { root, archive } = await setup(t);
    const plaintext = randomBytes(2 * WINDOW + 5);
    const file = await sealedFile(t, plaintext);
    const key = Archive.walKey(seg(20));
    assert.equal(await archive.putSealedFile(key, file, plaintext.length, sha256(plaintext)), 'stored');
    const stored = path.join(root, 'wal', seg(20));
    assert.equal((await fs.stat(stored)).ino, (await fs.stat(file)).ino, 'the object is the file itself');
    assert.ok((await archive.get(key))?.equals(plaintext));
    assert.equal(await archive.putSealedFile(key, file, plaintext.length, sha256(plaintext)), 'unchanged');
    const other = randomBytes(100);
    await assert.rejects(archive.putSealedFile(key, await sealedFile(t, other), other.length, sha256(other)), isCode('ARCHIVE_CONFLICT', key));
  });

  test('a backend that cannot adopt gets the object written from the file', async (t) => {
    const { storage } = await setup(t);
    const copying = new Archive(new DamagingStorage(storage, (b) => b)); // has no adoptFile
    const plaintext = randomBytes(WINDOW + 77);
    const file = await sealedFile(t, plaintext);
    const key = Archive.walKey(seg(21));
    assert.equal(await copying.putSealedFile(key, file, plaintext.length, sha256(plaintext)), 'stored');
    assert.ok((await copying.get(key))?.equals(plaintext));
    assert.equal((await fs.stat(file)).nlink, 1, 'copied, not linked');
  });

  test('a sealed file damaged since it was sealed is refused on both paths, and nothing stays stored', async (t) => {
    const { storage, archive } = await setup(t);
    const plaintext = randomBytes(WINDOW + 300);
    const file = await sealedFile(t, plaintext);
    const damaged = await fs.readFile(file);
    damaged[damaged.length - 3] ^= 0x10;
    await fs.writeFile(file, damaged);
    const key = Archive.walKey(seg(22));
    for (const a of [archive, new Archive(new DamagingStorage(storage, (b) => b))]) {
      await assert.rejects(a.putSealedFile(key, file, plaintext.length, sha256(plaintext)), isCode('ARCHIVE_CORRUPT', key, file));
      assert.equal(await storage.head(key), null);
      assert.ok((await fs.readFile(file)).equals(damaged), 'the source file is left as it was');
    }
  });

  test('an object of the same plaintext that another writer put between our write and our read-back stands; a damaged one does not', async (t) => {
    const { storage } = await setup(t);
    const plaintext = randomBytes(WINDOW + 10);
    const file = await sealedFile(t, plaintext);
    // What lands is another writer's object: its own header (another extension), our plaintext.
    const theirs = encodeEnvelope(plaintext, { writer: 'wal-push' });
    const racing = new Archive(new DamagingStorage(storage, () => theirs));
    const key = Archive.walKey(seg(25));
    assert.equal(await racing.putSealedFile(key, file, plaintext.length, sha256(plaintext)), 'stored');
    assert.ok((await storage.get(key))?.equals(theirs), 'their object is left in place');
    // The same, with one byte of their body changed: not our plaintext, so removed and refused.
    const damaged = Buffer.from(theirs);
    damaged[damaged.length - 1] ^= 0x01;
    const key2 = Archive.walKey(seg(26));
    await assert.rejects(new Archive(new DamagingStorage(storage, () => damaged)).putSealedFile(key2, file, plaintext.length, sha256(plaintext)), isCode('ARCHIVE_CORRUPT', key2));
    assert.equal(await storage.head(key2), null);
  });

  test("with the body's CRC32C on arrival, a linked file is read back against it: whole, stored; damaged since, refused and removed", async (t) => {
    const { root, storage, archive } = await setup(t);
    const plaintext = randomBytes(2 * WINDOW + 900);
    const crc = crc32c(plaintext);
    const file = await sealedFile(t, plaintext);
    const key = Archive.walKey(seg(23));
    assert.equal(await archive.putSealedFile(key, file, plaintext.length, sha256(plaintext), { bodyCrc32c: crc }), 'stored');
    assert.equal((await fs.stat(path.join(root, 'wal', seg(23)))).ino, (await fs.stat(file)).ino, 'linked');
    assert.ok((await archive.get(key))?.equals(plaintext));

    // One bit changed after arrival, in the middle of a read window: the CRC32C finds it.
    const other = randomBytes(WINDOW + 300);
    const damagedFile = await sealedFile(t, other);
    const bytes = await fs.readFile(damagedFile);
    bytes[bytes.length - 150] ^= 0x04;
    await fs.writeFile(damagedFile, bytes);
    const key2 = Archive.walKey(seg(24));
    await assert.rejects(
      archive.putSealedFile(key2, damagedFile, other.length, sha256(other), { bodyCrc32c: crc32c(other) }),
      isCode('ARCHIVE_CORRUPT', key2, damagedFile, `has CRC32C ${hex32(crc32c(bytes.subarray(bytes.length - other.length)))}, not ${hex32(crc32c(other))} as received`),
    );
    assert.equal(await storage.head(key2), null, 'nothing stays stored');
  });
});
