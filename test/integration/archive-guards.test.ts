/**
 * What protects an archive's content, on every backend (a local directory, s3rver, Azurite):
 * damage to a stored object is caught by wal-fetch before anything reaches its destination;
 * client-side encryption leaves no plaintext in storage and needs the private key; and one
 * archive accepts one receiver.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PgCluster, removeDir, tmpDir } from '../helpers/pg-cluster';
import { AzuriteServer } from '../helpers/azurite-server';
import { S3Server } from '../helpers/s3-server';
import { archivedSegments, pgConninfo, runWalvault, switchAndWaitArchived, WalvaultProcess, writeConfig, type SiteSettings } from '../helpers/walvault';
import { storageFromUrl } from '../../src/storage/open';

const CANARY = 'walvault-plaintext-canary-5e1f9c';

let cluster: PgCluster;
let s3: S3Server;
let azurite: AzuriteServer;
let work: string;
before(async () => {
  [s3, azurite] = await Promise.all([S3Server.start(), AzuriteServer.start()]);
  s3.useInThisProcess();
  azurite.useInThisProcess();
  // Each backend's cases leave five slots (one per archive, two for the lease case).
  cluster = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '512MB', max_replication_slots: 20 } });
  work = tmpDir('walvault-guards-');
});
after(async () => {
  await cluster?.destroy();
  await s3?.destroy();
  await azurite?.destroy();
  if (work) removeDir(work);
});

interface Backend {
  name: string;
  /** In archive tags. */
  short: string;
  archive(tag: string): string;
  /**
   * Called before the archive at `tag` is written; what it returns then gives the files, and
   * the offset in each from which, that hold every byte stored since for that archive: s3rver
   * keeps each object as a file of its own, while Azurite appends every blob's bytes, as they
   * came, to extent files that all blobs share (so only what they gained counts).
   */
  watch(tag: string): () => Array<{ file: string; from: number }>;
}

/** Every file under `dir`, whole. */
const wholeFiles = (dir: string) => () => filesUnder(dir).map((file) => ({ file, from: 0 }));

/** What the files under `dir` gained since this call. */
function appendedTo(dir: string): () => Array<{ file: string; from: number }> {
  const sizes = new Map(filesUnder(dir).map((f) => [f, fs.statSync(f).size]));
  return () => filesUnder(dir).map((file) => ({ file, from: sizes.get(file) ?? 0 }));
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

const backends: Backend[] = [
  { name: 'local directory', short: 'local', archive: (tag) => path.join(work, tag, 'archive'), watch: (tag) => wholeFiles(path.join(work, tag, 'archive')) },
  { name: 's3rver', short: 's3', archive: (tag) => s3.url(tag), watch: (tag) => wholeFiles(path.join(s3.dataDir, s3.bucket, tag)) },
  // Other archives' blobs, written before, are in the same extents: plain WAL there may hold
  // the canary (the other backends' canary rows, in pages written again later).
  { name: 'Azurite', short: 'azure', archive: (tag) => azurite.url(tag), watch: () => appendedTo(path.join(azurite.dataDir, '__blobstorage__')) },
];

/** The bytes of every object in `archive`, as its store lists them. */
async function archiveBytes(archive: string): Promise<number> {
  const storage = storageFromUrl(archive);
  try {
    return (await storage.list('')).reduce((sum, o) => sum + o.size, 0);
  } finally {
    await storage.close();
  }
}

/** Runs a receiver with `extra` settings while `load` writes, until the WAL it wrote is archived; returns the archived segment names. */
async function archiveSome(tag: string, backend: Backend, extra: Partial<SiteSettings>, load: () => Promise<void>): Promise<string[]> {
  const dir = path.join(work, tag);
  fs.mkdirSync(dir, { recursive: true });
  const archive = backend.archive(tag);
  const config = writeConfig(dir, { main: { pg: pgConninfo(cluster), archive, state: path.join(dir, 'state'), slot: tag.replace(/-/g, '_'), status_interval_seconds: 1, ...extra } });
  const p = WalvaultProcess.start(['run', '--config', config]);
  try {
    await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await load();
    await switchAndWaitArchived(cluster, archive);
  } finally {
    const exit = await p.stop();
    assert.equal(exit.code, 0, p.stderr);
  }
  return archivedSegments(archive);
}

async function writeCanaryRows(table: string): Promise<void> {
  await cluster.query(`CREATE TABLE ${table} (t text)`);
  await cluster.query(`INSERT INTO ${table} SELECT '${CANARY}-' || g FROM generate_series(1, 3000) g`);
}

/** Replaces the stored object at `key` with `bytes`, through the backend itself. */
async function overwrite(archive: string, key: string, change: (b: Buffer) => Buffer): Promise<void> {
  const storage = storageFromUrl(archive);
  try {
    const bytes = await storage.get(key);
    assert.ok(bytes, `${key} exists`);
    await storage.put(key, change(bytes));
  } finally {
    await storage.close();
  }
}

async function expectFetchRefused(archive: string, name: string, patterns: RegExp[], extraArgs: string[] = []): Promise<void> {
  const destDir = fs.mkdtempSync(path.join(work, 'dest-'));
  const dest = path.join(destDir, name);
  const r = await runWalvault(['wal-fetch', '--archive', archive, ...extraArgs, name, dest]);
  // Above 125: PostgreSQL stops recovery instead of taking it for the end of the archive.
  assert.equal(r.code, 126, `wal-fetch ${name} must fail: ${r.stderr}`);
  assert.ok(r.stderr.includes(`wal/${name}`), `the error names the object: ${r.stderr}`);
  for (const p of patterns) assert.match(r.stderr, p);
  assert.equal(r.stderr.trim().split('\n').filter((l) => l.startsWith('walvault:')).length, 1, r.stderr);
  assert.deepEqual(fs.readdirSync(destDir), [], 'nothing is written to the destination directory');
}

for (const backend of backends) {
  describe(`archive guards: ${backend.name}`, () => {
    it('wal-fetch detects a flipped byte and a truncated object, naming it, and writes nothing', async () => {
      for (const codec of ['none', 'zstd']) {
        const tag = `damage-${codec}-${backend.short}`;
        const names = await archiveSome(tag, backend, { compression: codec }, () => cluster.pgbench(['-i', '-q', '-s', '1']).then(() => undefined));
        assert.ok(names.length >= 3, `several segments archived: ${names.join(' ')}`);
        const archive = backend.archive(tag);
        const [flipped, truncated, intact] = names;
        await overwrite(archive, `wal/${flipped}`, (b) => {
          const c = Buffer.from(b);
          c[Math.floor(c.length / 2)] ^= 0x01;
          return c;
        });
        await overwrite(archive, `wal/${truncated}`, (b) => b.subarray(0, b.length - 100));
        await expectFetchRefused(archive, flipped, [/checksum|altered|decompress|sha256/]);
        await expectFetchRefused(archive, truncated, [/truncated|bytes/]);
        // The damage is specific: an intact neighbour still fetches and equals the server's file.
        const dest = path.join(work, `${tag}-${intact}`);
        const ok = await runWalvault(['wal-fetch', '--archive', archive, intact, dest]);
        assert.equal(ok.code, 0, ok.stderr);
        assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(intact)));
      }
    });

    it('with encryption no stored byte holds plaintext; wal-fetch needs the private key; a flipped byte fails authentication', async () => {
      const tag = `enc-${backend.short}`;
      const keyDir = path.join(work, `${tag}-keys`);
      fs.mkdirSync(keyDir);
      const priv = path.join(keyDir, 'site.key');
      const pub = path.join(keyDir, 'site.pub');
      const created = await runWalvault(['keys', 'create', '--private-key', priv, '--public-key', pub]);
      assert.equal(created.code, 0, created.stderr);
      assert.match(created.stdout, /key [0-9a-f]{16}/);

      const table = `canary_${tag.replace(/-/g, '_')}`;
      const stored = backend.watch(tag);
      const names = await archiveSome(tag, backend, { encryption_public_key_file: pub }, () => writeCanaryRows(table));
      const archive = backend.archive(tag);
      // The canary is in the server's WAL (so this test can fail) and in no stored byte.
      const serverHas = await Promise.all(names.map(async (n) => (await cluster.readWalFile(n)).includes(CANARY)));
      const withCanary = names.filter((_, i) => serverHas[i]);
      assert.ok(withCanary.length > 0, 'the canary rows are in the archived WAL range');
      const regions = stored();
      // The search covers the archive: the files hold at least as many bytes as its objects.
      const searched = regions.reduce((sum, r) => sum + fs.statSync(r.file).size - r.from, 0);
      const objects = await archiveBytes(archive);
      assert.ok(objects > 0 && searched >= objects, `stored files found: ${regions.length}, ${searched} bytes for the archive's ${objects}`);
      for (const r of regions) assert.equal(fs.readFileSync(r.file).subarray(r.from).includes(CANARY), false, `${r.file} (from byte ${r.from}) holds plaintext`);

      const name = withCanary[0];
      await expectFetchRefused(archive, name, [/encrypted for key [0-9a-f]{16}/, /--private-key/]);
      const dest = path.join(work, `${tag}-${name}`);
      const ok = await runWalvault(['wal-fetch', '--archive', archive, '--private-key', priv, name, dest]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(name)), 'decrypted segment equals the server file');

      await overwrite(archive, `wal/${name}`, (b) => {
        const c = Buffer.from(b);
        c[Math.floor(c.length / 2)] ^= 0x80;
        return c;
      });
      await expectFetchRefused(archive, name, [/fails authentication/], ['--private-key', priv]);
    });

    it('a second receiver on the same archive refuses to start, naming the holder', async () => {
      const tag = `lease-${backend.short}`;
      const dir = path.join(work, tag);
      fs.mkdirSync(dir, { recursive: true });
      const archive = backend.archive(tag);
      const site = (n: string): SiteSettings => ({ pg: pgConninfo(cluster), archive, state: path.join(dir, `state-${n}`), slot: `${tag.replace(/-/g, '_')}_${n}`, status_interval_seconds: 1 });
      const first = WalvaultProcess.start(['run', '--config', writeConfig(path.join(dir), { a: site('a') })]);
      try {
        await first.waitForLog((l) => l.msg === 'starting replication', 30000, 'the first receiver to stream');
        fs.mkdirSync(path.join(dir, 'b'));
        const second = await runWalvault(['run', '--config', writeConfig(path.join(dir, 'b'), { b: site('b') })], {}, 60000);
        assert.equal(second.code, 2, second.stderr);
        assert.match(second.stderr, new RegExp(`has another writer: walvault pid ${first.child.pid} on host \\S+ \\(site a`));
        assert.match(second.stderr, /stop that one, or give this site its own archive/);
        assert.equal(fs.existsSync(path.join(dir, 'state-b')), false, 'the refused receiver created no state');
      } finally {
        assert.equal((await first.stop()).code, 0, first.stderr);
      }
      // A clean stop releases the lease: the other receiver may now start.
      const again = WalvaultProcess.start(['run', '--config', path.join(dir, 'b', 'walvault-b.json')]);
      try {
        await again.waitForLog((l) => l.msg === 'starting replication', 30000, 'the second receiver to stream after the first stopped');
      } finally {
        assert.equal((await again.stop()).code, 0, again.stderr);
      }
    });
  });
}

describe('objects a store tore (s3rver killed mid-write)', () => {
  // s3rver writes an object's bytes and then its metadata file, in place: killed in between
  // it serves a short object, or answers HTTP 500 for it (metadata that is not JSON); a PUT
  // whose client went away leaves what arrived, down to nothing.
  it('a torn object is replaced by the next upload of that segment; an unreadable one only when asked', async () => {
    const tag = 'torn';
    const archiveUrl = s3.url(tag);
    const { Archive } = await import('../../src/archive/archive');
    const { encodePlainHeader } = await import('../../src/archive/envelope');
    const { createHash, randomBytes } = await import('node:crypto');
    const archive = new Archive(storageFromUrl(archiveUrl));
    try {
      const body = randomBytes(1 << 20);
      const digest = createHash('sha256').update(body).digest();
      const sealed = path.join(work, 'torn-sealed');
      fs.mkdirSync(work, { recursive: true });
      fs.writeFileSync(sealed, Buffer.concat([encodePlainHeader(body.length, digest), body]));
      const key = 'wal/000000010000000000000042';
      assert.equal(await archive.putSealedFile(key, sealed, body.length, digest), 'stored');
      const objectFile = path.join(s3.dataDir, s3.bucket, tag, 'wal', '000000010000000000000042._S3rver_object');
      const metadataFile = path.join(s3.dataDir, s3.bucket, tag, 'wal', '000000010000000000000042._S3rver_metadata.json');
      assert.ok(fs.existsSync(objectFile) && fs.existsSync(metadataFile), 's3rver keeps the object as files');

      // Short: repaired by the next upload.
      fs.truncateSync(objectFile, 100);
      fs.rmSync(`${objectFile}.md5`, { force: true });
      assert.equal(await archive.putSealedFile(key, sealed, body.length, digest), 'repaired');
      assert.ok((await archive.get(key))?.equals(body));

      // Empty (a PUT torn before its first byte landed, as a hung s3rver leaves one once it
      // resumes): s3rver then answers any range of it with a length of 1 and no body, so only
      // the size it reports may be relied on. Replaced by the next upload, not read forever.
      fs.truncateSync(objectFile, 0);
      fs.rmSync(`${objectFile}.md5`, { force: true });
      assert.equal(await archive.putSealedFile(key, sealed, body.length, digest), 'repaired');
      assert.ok((await archive.get(key))?.equals(body));

      // Unreadable (HTTP 500): refused as such until the caller, having seen it repeat, asks.
      fs.writeFileSync(metadataFile, '{"content-type": "applica');
      await assert.rejects(archive.putSealedFile(key, sealed, body.length, digest), (err: Error & { code?: string }) => err.code === 'STORAGE_OBJECT_UNREADABLE' && err.message.includes(key));
      assert.equal(await archive.putSealedFile(key, sealed, body.length, digest, { replaceUnreadable: true }), 'repaired');
      assert.ok((await archive.get(key))?.equals(body), 'readable and whole again');
    } finally {
      await archive.close();
    }
  });

  it('a read the store cuts short of the length it announced says how much came', async () => {
    // An empty object, which s3rver serves a range of as one byte it never sends.
    const storage = storageFromUrl(s3.url('cut'));
    try {
      await storage.put('k', Buffer.from('some bytes'));
      fs.truncateSync(path.join(s3.dataDir, s3.bucket, 'cut', 'k._S3rver_object'), 0);
      fs.rmSync(path.join(s3.dataDir, s3.bucket, 'cut', 'k._S3rver_object.md5'), { force: true });
      assert.equal((await storage.head('k'))?.size, 0);
      await assert.rejects(storage.getRange('k', 0, 100), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'STORAGE_IO');
        assert.match(err.message, /^S3 read of s3:\/\/\S+\/cut\/k failed: IncompleteBody: the connection closed after 0 of the 1 bytes it announced; /);
        return true;
      });
    } finally {
      await storage.close();
    }
  });
});
