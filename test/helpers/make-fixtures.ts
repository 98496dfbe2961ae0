/**
 * Regenerates the archive-format fixtures (fixtures/README.md says when: only on a
 * deliberate format change, with a version bump, since the point of the fixtures is that
 * they were written by an older walvault).
 *
 *   npx tsc -p . && node dist/test/helpers/make-fixtures.js [objects] [archive-small] [--replace]
 *
 * objects        fixtures/objects: one object per codec, with and without encryption, empty,
 *                small and two frames long, written through Archive on a LocalStorage, plus
 *                a sealed spool file linked in, and the two leases; fixtures/objects/index.json
 * archive-small  fixtures/archive-small: a PostgreSQL 15 primary and a standby (1 MiB
 *                segments), `walvault run` streaming from the standby (zstd), one
 *                `walvault backup push --fast` from the primary, a promotion of the standby
 *                (timeline 2, its history file, timeline 1's last segment as .partial), and
 *                a clean stop (timeline 2's open segment as .partial); the table's rows
 *                are written around these steps (archive-fixtures.ts smallTableRows)
 *
 * The test-only key pair in fixtures/keys is made once and kept: the encrypted objects are
 * bound to its key id, and a new pair would make every old encrypted fixture unreadable.
 * Existing fixtures are replaced only with --replace.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { Archive } from '../../src/archive/archive';
import { ArchiveLease, BACKUP_LEASE, LEASE_TTL_MS } from '../../src/archive/archive-lease';
import { CODEC_NAMES } from '../../src/archive/codecs';
import { createKeyPair, loadPublicKey } from '../../src/archive/encryption';
import { encodePlainHeader, readEnvelopeHeader, sha256 } from '../../src/archive/envelope';
import { readTrailer, TRAILER_LENGTH } from '../../src/archive/framed-body';
import { LocalStorage } from '../../src/storage/local';
import {
  FIXTURE_SIZES,
  fixturePlaintext,
  insertRowsSql,
  OBJECTS_ARCHIVE,
  OBJECTS_CLUSTER,
  OBJECTS_INDEX,
  objectKey,
  SEALED_KEY,
  SEALED_SEED,
  SMALL_ARCHIVE,
  SMALL_ARCHIVE_INFO,
  SMALL_TABLE,
  TEST_PRIVATE_KEY,
  TEST_PUBLIC_KEY,
  type FixtureSize,
  type ObjectFixture,
  type ObjectsIndex,
  type SmallArchiveInfo,
} from './archive-fixtures';
import { PgCluster, removeDir, tmpDir, waitFor } from './pg-cluster';
import { archivedCoverage, parseLsn, pgConninfo, pushBackup, switchAndWaitArchived, withReceiver, writeConfig } from './walvault';

/** Fixed, so the unencrypted objects come out byte for byte the same on every run. */
const CREATED_AT = '2026-12-01T00:00:00.000Z';

function sha256Hex(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

function clearFor(target: string, replace: boolean): void {
  if (fs.existsSync(target)) {
    if (!replace) throw new Error(`${target} exists; pass --replace to regenerate it (only for a deliberate format change: fixtures/README.md)`);
    fs.rmSync(target, { recursive: true, force: true });
  }
}

/** Every file under `root` as archive keys, sorted. */
function keysUnder(root: string, dir = root): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...keysUnder(root, p));
    else out.push(path.relative(root, p).split(path.sep).join('/'));
  }
  return out.sort();
}

/**
 * Ordinary modes for the tree (walvault wrote 0600 objects in 0700 directories, and the
 * small archive's directory carries the harness's setgid group bit); git keeps none of it.
 */
function plainModes(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) plainModes(p);
    else fs.chmodSync(p, 0o644);
  }
}

function storedFacts(root: string, key: string): { storedBytes: number; storedSha256: string; framed: boolean; frames: number | null } {
  const bytes = fs.readFileSync(path.join(root, ...key.split('/')));
  const header = readEnvelopeHeader(bytes, key);
  let frames: number | null = null;
  if (header.framed) {
    const trailer = readTrailer(bytes.subarray(bytes.length - TRAILER_LENGTH));
    if (typeof trailer === 'string') throw new Error(`${key}: ${trailer}`);
    frames = trailer.frames;
  }
  return { storedBytes: bytes.length, storedSha256: sha256Hex(bytes), framed: header.framed, frames };
}

async function ensureKeys(): Promise<string> {
  fs.mkdirSync(path.dirname(TEST_PRIVATE_KEY), { recursive: true });
  if (!fs.existsSync(TEST_PRIVATE_KEY)) await createKeyPair(TEST_PRIVATE_KEY, TEST_PUBLIC_KEY);
  return loadPublicKey(TEST_PUBLIC_KEY).keyId;
}

async function makeObjects(replace: boolean): Promise<void> {
  clearFor(OBJECTS_ARCHIVE, replace);
  const keyId = await ensureKeys();
  const recipient = loadPublicKey(TEST_PUBLIC_KEY);
  const storage = new LocalStorage(OBJECTS_ARCHIVE);
  // One cluster.json (no recorded codec or key): each writer below names its own.
  await new Archive(storage).ensureCluster({ ...OBJECTS_CLUSTER, createdAt: CREATED_AT });

  const objects: ObjectFixture[] = [];
  for (const codec of CODEC_NAMES) {
    for (const encrypted of [false, true]) {
      const archive = new Archive(storage, { codec, recipient: encrypted ? recipient : undefined });
      for (const size of Object.keys(FIXTURE_SIZES) as FixtureSize[]) {
        const { bytes, seed } = FIXTURE_SIZES[size];
        const plaintext = fixturePlaintext(seed, bytes);
        const key = objectKey(codec, encrypted, size);
        const put = await archive.putImmutable(key, plaintext);
        if (put !== 'stored') throw new Error(`${key}: ${put}`);
        objects.push({
          key,
          codec,
          encryption: encrypted ? 'aes-256-gcm' : 'none',
          size,
          seed,
          writtenBy: 'putImmutable',
          plaintextBytes: plaintext.length,
          plaintextSha256: sha256Hex(plaintext),
          ...storedFacts(OBJECTS_ARCHIVE, key),
        });
      }
    }
  }

  // A completed spool file: the plain header in its first 64 bytes, linked in as it is.
  const sealedPlain = fixturePlaintext(SEALED_SEED, FIXTURE_SIZES.small.bytes);
  const spoolFile = path.join(path.dirname(OBJECTS_ARCHIVE), '.sealed-spool-file');
  fs.writeFileSync(spoolFile, Buffer.concat([encodePlainHeader(sealedPlain.length, sha256(sealedPlain)), sealedPlain]));
  try {
    const put = await new Archive(storage).putSealedFile(SEALED_KEY, spoolFile, sealedPlain.length, sha256(sealedPlain));
    if (put !== 'stored') throw new Error(`${SEALED_KEY}: ${put}`);
  } finally {
    fs.rmSync(spoolFile, { force: true });
  }
  objects.push({
    key: SEALED_KEY,
    codec: 'none',
    encryption: 'none',
    size: 'small',
    seed: SEALED_SEED,
    writtenBy: 'putSealedFile',
    plaintextBytes: sealedPlain.length,
    plaintextSha256: sha256Hex(sealedPlain),
    ...storedFacts(OBJECTS_ARCHIVE, SEALED_KEY),
  });

  // Leases as a receiver and a running backup leave them (released, they would be gone).
  await new ArchiveLease(storage, 'fixture', '/var/lib/walvault/fixture').acquire();
  const backupLease = new ArchiveLease(storage, 'fixture', '/var/lib/walvault/fixture', LEASE_TTL_MS, BACKUP_LEASE, '20261201T000000Z');
  backupLease.report({ phase: 'streaming', bytesDone: 1048576, bytesTotal: 4194304, secondsLeft: 3 });
  await backupLease.acquire();
  const leases = ['lease.json', 'backups/lease.json'].map((key) => {
    const f = storedFacts(OBJECTS_ARCHIVE, key);
    return { key, storedBytes: f.storedBytes, storedSha256: f.storedSha256 };
  });

  const index: ObjectsIndex = {
    note: 'Objects written by walvault through Archive on a LocalStorage (test/helpers/make-fixtures.ts); encrypted ones for the test-only key pair in fixtures/keys. Layout: docs/archive-format.md.',
    generator: 'node dist/test/helpers/make-fixtures.js objects --replace',
    plaintext: 'fixturePlaintext(seed, plaintextBytes) in test/helpers/archive-fixtures.ts',
    cluster: OBJECTS_CLUSTER,
    keyId,
    objects,
    leases,
  };
  fs.writeFileSync(OBJECTS_INDEX, JSON.stringify(index, null, 2) + '\n');
  await storage.close();
  plainModes(path.dirname(OBJECTS_ARCHIVE));
  console.log(`fixtures/objects: ${objects.length} objects, ${leases.length} leases`);
}

async function makeSmallArchive(replace: boolean): Promise<void> {
  clearFor(SMALL_ARCHIVE, replace);
  let primary: PgCluster | undefined;
  let standby: PgCluster | undefined;
  const work = tmpDir('walvault-fixtures-');
  try {
    primary = await PgCluster.start({ major: 15, walSegSizeMiB: 1 });
    standby = await PgCluster.start({ standbyOf: primary });
    const segSize = standby.walSegSize;
    const archive = path.join(work, 'archive');
    const site = { pg: pgConninfo(standby), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1, compression: 'zstd' };
    const config = writeConfig(work, { main: site }, 'info');
    await primary.query(`CREATE TABLE ${SMALL_TABLE} (id int PRIMARY KEY, note text NOT NULL)`);
    await primary.query(insertRowsSql(1, 10));
    let backup = '';
    await withReceiver(config, async (receiver) => {
      // From the primary (the site is the standby), into the archive the standby's receiver fills.
      backup = await pushBackup(['--pg', pgConninfo(primary!), '--archive', archive, '--state', path.join(work, 'push-state')]);
      await primary!.query(insertRowsSql(11, 15));
      await switchAndWaitArchived(primary!, archive, 1, 60000);
      // Timeline 1 then ends inside a segment, which the receiver keeps as a .partial.
      await primary!.query(insertRowsSql(16, 20));
      const primaryEnd = parseLsn((await primary!.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
      await waitFor(async () => parseLsn((await standby!.query(`SELECT pg_last_wal_replay_lsn()::text AS l`))[0].l) >= primaryEnd, {
        timeoutMs: 30000,
        what: 'the standby to replay',
      });
      await primary!.destroy();
      primary = undefined;
      await standby!.promote();
      await receiver.waitForLog((l) => /timeline 1 ended/.test(String(l.msg)), 30000, 'the receiver to follow the switch');
      await standby!.query(insertRowsSql(21, 25));
      await switchAndWaitArchived(standby!, archive, 2, 60000);
      // These rows stay in the segment being received: only the .partial holds them.
      await standby!.query(insertRowsSql(26, 30));
      const end = parseLsn((await standby!.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
      await waitFor(async () => ((await archivedCoverage(archive, segSize, 2)) ?? 0n) >= end, { timeoutMs: 30000, what: 'the last rows to reach the partial' });
    });
    fs.cpSync(archive, SMALL_ARCHIVE, { recursive: true });
    plainModes(SMALL_ARCHIVE);
    const cluster = JSON.parse((await new Archive(new LocalStorage(SMALL_ARCHIVE)).get('cluster.json'))!.toString('utf8')) as { systemId: string; pgVersionNum: number };
    const info: SmallArchiveInfo = {
      note: 'fixtures/archive-small as test/helpers/make-fixtures.ts left it: walvault run (zstd) streaming from a standby that was then promoted, one backup push, a clean stop. Layout: docs/archive-format.md.',
      backup,
      systemId: cluster.systemId,
      pgVersionNum: cluster.pgVersionNum,
      compression: 'zstd',
      objects: keysUnder(SMALL_ARCHIVE).map((key) => {
        const bytes = fs.readFileSync(path.join(SMALL_ARCHIVE, ...key.split('/')));
        return { key, storedBytes: bytes.length, storedSha256: sha256Hex(bytes) };
      }),
    };
    fs.writeFileSync(SMALL_ARCHIVE_INFO, JSON.stringify(info, null, 2) + '\n');
    console.log(`fixtures/archive-small: backup ${backup}, ${info.objects.length} objects, ${info.objects.reduce((s, o) => s + o.storedBytes, 0)} bytes`);
  } finally {
    await primary?.destroy();
    await standby?.destroy();
    removeDir(work);
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const replace = args.includes('--replace');
  const which = args.filter((a) => !a.startsWith('--'));
  for (const w of which) if (w !== 'objects' && w !== 'archive-small') throw new Error(`unknown fixture set "${w}" (objects, archive-small)`);
  if (which.length === 0 || which.includes('objects')) await makeObjects(replace);
  if (which.length === 0 || which.includes('archive-small')) await makeSmallArchive(replace);
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
