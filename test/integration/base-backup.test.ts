/**
 * Acceptance (issue 4, line 1): a base backup of a cluster with an extra tablespace and
 * pgbench data succeeds on every supported major version, and its metadata is right.
 *
 * Each case runs the real CLI: `walvault run` archives the WAL, `walvault backup push` takes
 * the backup beside it, `backup list --json` and `backup show` read the catalog. The stored
 * parts are then fetched and joined, the system tar extracts them, every file is compared
 * with the server's own backup_manifest, and the positions with the backup history file the
 * server wrote into pg_wal. On PostgreSQL 15 pg_verifybackup checks the result as well.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { openSiteArchive } from '../../src/archive/site-archive';
import { decodeBlockIndex } from '../../src/backup/block-index';
import type { BackupMetadata } from '../../src/backup/catalog';
import { BACKUP_FRAME_SIZE } from '../../src/backup/part-uploader';
import { backupHistoryFile, compareWithManifest, extractBackup, fetchBackupTars, tablespaceWithTable, tarBytes } from '../helpers/backup-fixtures';
import { framePlainLengths, indexProblems } from '../helpers/block-index-checks';
import { availableMajors, binDirFor, chownForServer, clientBin, PgCluster, removeDir, tmpDir } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore, type ObjectStoreKind } from '../helpers/object-stores';
import { pgConninfo, runWalvault, WalvaultProcess, writeConfig } from '../helpers/walvault';

const execFileP = promisify(execFile);

interface Case {
  major: number;
  /** Where the archive is: an object store, or else a local directory. */
  store?: ObjectStoreKind;
  encrypted: boolean;
  /** zstd compressed where: by the server (15+) or by walvault; none = uncompressed. */
  zstd: 'server' | 'client' | 'none';
}

/** Whether that major's server binary links libzstd (the npm builds do not; Debian's does). */
function serverHasZstd(major: number): boolean {
  try {
    return /libzstd/.test(execFileSync('ldd', [path.join(binDirFor(major), 'postgres')], { encoding: 'utf8' }));
  } catch {
    return false;
  }
}

const CASES: Case[] = [
  ...[13, 14, 15, 16, 17, 18].map((major): Case => ({ major, encrypted: false, zstd: 'none' })),
  { major: 15, encrypted: false, zstd: 'client' },
  { major: 17, encrypted: false, zstd: 'server' },
  ...OBJECT_STORES.map((store): Case => ({ major: 15, store, encrypted: true, zstd: 'server' })),
];

for (const c of CASES)
describe(
  `base backup of PostgreSQL ${c.major} with a tablespace and pgbench data (${c.store?.name ?? 'local directory'}${c.zstd !== 'none' ? `, zstd by the ${c.zstd}` : ''}${c.encrypted ? ', encrypted' : ''})`,
  { skip: !availableMajors().includes(c.major) && `PostgreSQL ${c.major} binaries not installed` },
  () => {
    let cluster: PgCluster;
    let work = '';
    let store: ObjectStore | undefined;
    let receiver: WalvaultProcess | undefined;
    let archive = '';
    let config = '';
    let privateKey: string | undefined;

    before(async () => {
      work = tmpDir(`walvault-backup-${c.major}-`);
      // archive_mode keeps the server's backup history file in pg_wal until it is "archived",
      // so the test can read the positions the server itself recorded.
      cluster = await PgCluster.start({ major: c.major, walSegSizeMiB: 1, settings: { archive_mode: 'on', archive_command: '/bin/true' } });
      if (c.store) {
        store = await c.store.start();
        archive = store.url(`${path.basename(work)}/main`);
      } else {
        archive = path.join(work, 'archive');
      }
      const site: Record<string, unknown> = { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 };
      Object.assign(site, { compression: c.zstd === 'none' ? 'none' : 'zstd', backup_compression: c.zstd === 'client' ? 'client' : 'server' });
      if (c.encrypted) {
        privateKey = path.join(work, 'site.key');
        const publicKey = path.join(work, 'site.pub');
        const k = await runWalvault(['keys', 'create', '--private-key', privateKey, '--public-key', publicKey]);
        assert.equal(k.code, 0, k.stderr);
        Object.assign(site, { encryption_public_key_file: publicKey });
      }
      config = writeConfig(work, { main: site as never }, 'info');
      receiver = WalvaultProcess.start(['run', '--config', config]);
      await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    });

    after(async () => {
      await receiver?.stop('SIGTERM', 30000);
      await cluster?.destroy();
      await store?.destroy();
      if (work) removeDir(work);
    });

    it('stores a backup whose positions, files and manifest match the server', async () => {
      const tsDir = path.join(work, 'tablespace');
      const oid = await tablespaceWithTable(cluster, tsDir);
      await cluster.pgbench(['-i', '-s', '2', '-q']);

      const push = await runWalvault(['backup', 'push', '--config', config, '--fast'], {}, 180000);
      assert.equal(push.code, 0, `backup push failed:\n${push.stderr.slice(-3000)}`);
      const name = push.stdout.trim();
      assert.match(name, /^[0-9]{8}T[0-9]{6}Z$/, 'push prints the backup name');

      const list = await runWalvault(['backup', 'list', '--config', config, '--json']);
      assert.equal(list.code, 0, list.stderr);
      const listed = JSON.parse(list.stdout) as Array<Record<string, unknown>>;
      assert.equal(listed.length, 1);
      assert.equal(listed[0].name, name);
      for (const k of ['finishedAt', 'startLsn', 'stopLsn', 'timeline', 'rawBytes', 'storedBytes', 'durationSeconds']) {
        assert.ok(listed[0][k] !== undefined && listed[0][k] !== null, `list --json has ${k}`);
      }

      const show = await runWalvault(['backup', 'show', name, '--config', config]);
      assert.equal(show.code, 0, show.stderr);
      const meta = JSON.parse(show.stdout) as BackupMetadata;
      const systemId = String((await cluster.query('SELECT system_identifier::text AS id FROM pg_control_system()'))[0].id);
      assert.equal(meta.systemId, systemId);
      assert.equal(Math.floor(meta.pgVersionNum / 10000), c.major);
      assert.equal(listed[0].startLsn, meta.startLsn);
      assert.equal(listed[0].stopLsn, meta.stopLsn);

      const history = await backupHistoryFile(cluster, meta.label);
      assert.ok(history, `the server wrote a backup history file for label ${meta.label}`);
      assert.equal(meta.startLsn, history.start, 'start LSN = START WAL LOCATION of the server');
      assert.equal(meta.stopLsn, history.stop, 'stop LSN = STOP WAL LOCATION of the server');
      assert.equal(meta.startTimeline, history.startTimeline);
      assert.equal(meta.stopTimeline, history.stopTimeline);

      // A server without zstd refuses the compression before sending anything; walvault
      // then compresses itself and says so.
      const byServer = c.zstd === 'server' && serverHasZstd(c.major);
      if (c.zstd === 'server' && !byServer) assert.match(push.stderr, /zstd.*not supported by this build.*walvault compresses it instead|walvault compresses it instead/);
      else assert.doesNotMatch(push.stderr, /walvault compresses it instead/);
      const suffix = byServer ? '.zst' : '';
      const names = meta.archives.map((a) => a.name).sort();
      assert.deepEqual(names, [`base.tar${suffix}`, `${oid}.tar${suffix}`].sort(), 'one archive for the main directory and one for the tablespace');
      for (const a of meta.archives) assert.equal(a.compression, byServer ? 'zstd' : null, `${a.name}: compressed by the server or not`);
      const ts = meta.archives.find((a) => a.tablespaceOid === oid)!;
      assert.equal(ts.location, tsDir, 'the tablespace keeps its original location');
      assert.ok(meta.rawBytes > 20 * 1024 * 1024, `the backup holds the pgbench data (${meta.rawBytes} bytes)`);
      assert.equal(meta.rawBytes, meta.archives.reduce((s, a) => s + a.rawBytes, 0));
      if (c.zstd !== 'none') assert.ok(meta.storedBytes < meta.rawBytes / 3, `zstd made the stored backup smaller (${meta.storedBytes} of ${meta.rawBytes} bytes)`);

      const tars = path.join(work, 'tars');
      assert.deepEqual(await fetchBackupTars(archive, meta, tars, privateKey), [], 'every part matches its size and checksum');
      for (const a of meta.archives) {
        const tar = await tarBytes(tars, a);
        assert.equal(tar.length, a.rawBytes, `${a.name} joined from its parts (and decompressed) has the size the metadata names`);
        // Servers before 15 leave the end-of-archive blocks to the client: stored tars are whole.
        assert.ok(tar.subarray(tar.length - 1024).equals(Buffer.alloc(1024)), `${a.name} ends with the two zero blocks of a complete tar`);
      }
      const restored = path.join(work, 'restored');
      await extractBackup(tars, meta, restored, path.join(work, 'restored-tablespaces'));
      const label = fs.readFileSync(path.join(restored, 'backup_label'), 'utf8');
      assert.match(label, new RegExp(`^START WAL LOCATION: ${meta.startLsn} `, 'm'), 'backup_label in base.tar names the start LSN');
      assert.match(label, new RegExp(`^CHECKPOINT LOCATION: ${meta.checkpointLsn}$`, 'm'));
      const manifest = fs.readFileSync(path.join(tars, 'backup_manifest'));
      const cmp = compareWithManifest(restored, manifest);
      assert.deepEqual(cmp.problems, [], 'every file matches the server manifest');
      assert.ok(cmp.checked > 500, `the manifest lists the cluster's files (${cmp.checked})`);
      assert.ok(
        fs.readdirSync(path.join(restored, 'pg_tblspc', oid)).some((d) => d.startsWith(`PG_${c.major}`)),
        'the tablespace archive holds its version directory',
      );

      // Block indexes: every tar walvault saw plain has one, true to the joined parts and
      // listing every file of the manifest; parts walvault compressed have 32 KiB frames.
      const files = (JSON.parse(manifest.toString('utf8')) as { Files: Array<{ Path?: string }> }).Files.flatMap((f) => (f.Path === undefined ? [] : [f.Path]));
      const reader = openSiteArchive({ archive, s3: {}, encryptionPrivateKeyFile: privateKey }, 'read');
      try {
        for (const a of meta.archives) {
          if (a.compression) {
            assert.equal(a.index, undefined, `${a.name}: a server-compressed archive has no index`);
            continue;
          }
          assert.ok(a.index, `${a.name} has an index`);
          assert.equal(a.index.key, `backups/${name}/index/${a.name}`);
          const plaintext = (await reader.get(a.index.key))!;
          assert.equal(plaintext.length, a.index.size);
          assert.equal(createHash('sha256').update(plaintext).digest('hex'), a.index.sha256);
          const index = decodeBlockIndex(plaintext, a.index.key);
          assert.deepEqual(indexProblems(index, await tarBytes(tars, a), a.name), [], `${a.name}: every file's bytes at its offset hash to its recorded blocks`);
          const indexed = new Set(index.members.filter((m) => m.type === 'file').map((m) => (a.tablespaceOid ? `pg_tblspc/${a.tablespaceOid}/${m.path}` : m.path)));
          const mine = files.filter((f) => f.startsWith('pg_tblspc/') === (a.tablespaceOid !== null));
          assert.ok(mine.length > 0);
          assert.deepEqual(mine.filter((f) => !indexed.has(f)), [], `every manifest file of ${a.name} is in its index`);
          if (c.zstd !== 'none' || c.encrypted) {
            const part = a.parts.reduce((x, y) => (y.size > x.size ? y : x));
            const frames = framePlainLengths((await reader.storage.get(part.key))!, part.key);
            assert.equal(frames.length, Math.max(1, Math.ceil(part.size / BACKUP_FRAME_SIZE)), `${part.key}: ${BACKUP_FRAME_SIZE}-byte frames`);
            assert.ok(frames.slice(0, -1).every((n) => n === BACKUP_FRAME_SIZE), `${part.key}: ${frames.slice(0, 4).join(', ')}, ...`);
          }
        }
      } finally {
        await reader.close();
      }

      if (c.major === 15) {
        fs.copyFileSync(path.join(tars, 'backup_manifest'), path.join(restored, 'backup_manifest'));
        chownForServer(restored);
        const v = await execFileP(clientBin('pg_verifybackup'), ['-n', restored]).catch((err) => err);
        assert.equal(v.code ?? 0, 0, `pg_verifybackup: ${v.stderr ?? ''}${v.stdout ?? ''}`);
      }
    });
  },
);
