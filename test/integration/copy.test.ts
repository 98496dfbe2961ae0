/**
 * `walvault copy` (issue 19, item 4 and acceptance 3): a local archive the receiver filled,
 * with a backup and WAL after it, copied into an empty archive in each object store (S3 on
 * s3rver, Azure Blob Storage on Azurite) that compresses and encrypts: `check` on the copy
 * exits 0 and a restore from it recovers exactly the primary's data. A second copy writes
 * nothing; a damaged source object is named and left out while the rest is copied; another
 * cluster's archive is refused with nothing written.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CopyReport } from '../../src/copy/copy-archive';
import type { CheckReport } from '../../src/check/archive-check';
import { readCompleted } from '../../src/backup/catalog';
import { BACKUP_FRAME_SIZE } from '../../src/backup/part-uploader';
import { isSegmentFileName } from '../../src/wal/lsn';
import { chownForServer, DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { pgConninfo, runWalvault, switchAndWaitArchived, withArchive, withReceiver, writeConfig } from '../helpers/walvault';
import { framePlainLengths } from '../helpers/block-index-checks';

const CHECKSUM_SQL = `SELECT md5(string_agg(x, ',' ORDER BY x)) AS sum FROM (
  SELECT 'a' || sum(abalance)::text || '/' || count(*)::text AS x FROM pgbench_accounts
  UNION ALL SELECT 'h' || count(*)::text FROM pgbench_history
  UNION ALL SELECT 'l' || coalesce(sum(n), 0)::text FROM after_backup) s`;

describe(`walvault copy: a local archive into an empty, encrypted archive in an object store (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let primary: PgCluster;
  let work = '';
  let source = '';
  let privateKey = '';
  let publicKey = '';
  let backup = '';
  let expected = '';
  let sourceWal: string[] = [];

  const copy = async (args: string[]): Promise<{ code: number | null; report: CopyReport; stderr: string }> => {
    const r = await runWalvault(['copy', ...args, '--json'], {}, 180000);
    assert.ok(r.code === 0 || r.code === 1, `copy ran (exit ${r.code}): ${r.stderr.slice(-3000)}`);
    return { code: r.code, report: JSON.parse(r.stdout) as CopyReport, stderr: r.stderr };
  };
  const keysIn = (location: string) => withArchive(location, async (a) => (await a.storage.list('')).map((o) => o.key));

  before(async () => {
    work = tmpDir('walvault-copy-');
    primary = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    source = path.join(work, 'archive');
    privateKey = path.join(work, 'copy.key');
    publicKey = path.join(work, 'copy.pub');
    const k = await runWalvault(['keys', 'create', '--private-key', privateKey, '--public-key', publicKey]);
    assert.equal(k.code, 0, k.stderr);
    const config = writeConfig(work, { main: { pg: pgConninfo(primary), archive: source, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } }, 'info');
    await withReceiver(config, async () => {
      await primary.pgbench(['-i', '-s', '2', '-q']);
      const push = await runWalvault(['backup', 'push', '--config', config, '--fast'], {}, 180000);
      assert.equal(push.code, 0, push.stderr.slice(-3000));
      backup = push.stdout.trim();
      // After the backup: only WAL replay brings these back.
      await primary.query(`CREATE TABLE after_backup AS SELECT g AS n FROM generate_series(1, 1000) g`);
      await primary.pgbench(['-c', '2', '-t', '200', '-n']);
      expected = (await primary.query(CHECKSUM_SQL))[0].sum;
      await switchAndWaitArchived(primary, source, 1, 60000);
    });
    sourceWal = await withArchive(source, (a) => a.listWal());
  });

  after(async () => {
    await primary?.destroy();
    if (work) removeDir(work);
  });

  for (const kind of OBJECT_STORES)
  describe(`into ${kind.name}`, () => {
    let store: ObjectStore | undefined;
    let dest = '';

    before(async () => {
      store = await kind.start();
      dest = store.url(`${path.basename(work)}/copy`);
    });

    after(async () => {
      await store?.destroy();
    });

    it('a dry run says what it would copy and writes nothing', async () => {
      const { code, report } = await copy(['--from', source, '--to', dest, '--dry-run']);
      assert.equal(code, 0);
      assert.ok(report.wal.length > 0 && report.wal.length <= sourceWal.length);
      assert.deepEqual(report.backups, [backup]);
      assert.deepEqual(await keysIn(dest), [], 'the destination stays empty');
    });

    it('copies every WAL file and the backup; check on the copy exits 0 and a restore from it is exact', async () => {
      const { code, report } = await copy(['--from', source, '--to', dest, '--compression', 'zstd', '--encryption-public-key', publicKey]);
      assert.equal(code, 0, JSON.stringify(report.failures));
      assert.deepEqual(report.failures, []);
      assert.deepEqual(report.backups, [backup]);
      const segments = sourceWal.filter(isSegmentFileName);
      assert.ok(segments.length > 3, `the source has segments: ${sourceWal.join(', ')}`);
      for (const name of segments) assert.ok(report.wal.includes(name), `${name} copied`);
      // A partial is copied only where no archive holds its segment whole.
      for (const name of report.wal.filter((n) => n.endsWith('.partial'))) assert.ok(!sourceWal.includes(name.slice(0, 24)), `${name} is not superseded`);

      const check = await runWalvault(['check', '--archive', dest, '--private-key', privateKey, '--json'], {}, 120000);
      assert.equal(check.code, 0, check.stdout + check.stderr);
      const checked = JSON.parse(check.stdout) as CheckReport;
      assert.ok(checked.backups.find((b) => b.name === backup)?.restorable, JSON.stringify(checked.backups));

      // The backup's block indexes come along, as recorded; its parts in 32 KiB frames.
      const [ours, theirs] = await Promise.all([withArchive(source, (a) => readCompleted(a, backup)), withArchive(dest, (a) => readCompleted(a, backup))]);
      const destKeys = await keysIn(dest);
      for (const a of ours.archives) {
        assert.ok(a.index, `${a.name} has a block index in the source`);
        assert.deepEqual(theirs.archives.find((b) => b.name === a.name)?.index, a.index, `${a.name}: the copy records the same index`);
        assert.ok(destKeys.includes(a.index.key), `${a.index.key} copied`);
      }
      const part = ours.archives[0].parts[0];
      const frames = await withArchive(dest, async (a) => framePlainLengths((await a.storage.get(part.key))!, part.key));
      assert.ok(frames.length > 1 && frames.slice(0, -1).every((n) => n === BACKUP_FRAME_SIZE), `${part.key}: ${frames.slice(0, 4).join(', ')}, ...`);

      // The copy is compressed and encrypted as the destination asked, not as the source was.
      const stored = await withArchive(dest, async (a) => a.readCluster());
      assert.equal(stored?.settings?.compression, 'zstd', JSON.stringify(stored?.settings));
      assert.ok(stored?.settings?.encryption, 'the destination records its key');

      const target = path.join(work, 'restored');
      const r = await runWalvault(['restore', '--archive', dest, '--private-key', privateKey, target], {}, 300000);
      assert.equal(r.code, 0, r.stderr.slice(-3000));
      assert.match(r.stdout, new RegExp(`restored backup ${backup} `));
      chownForServer(privateKey);
      const restored = await PgCluster.start({ dataDir: target });
      try {
        await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery from the copy to end' });
        assert.equal((await restored.query(CHECKSUM_SQL))[0].sum, expected, 'the restored data is the primary\'s');
      } finally {
        await restored.destroy();
        removeDir(target);
      }
    });

    it('run again, it writes nothing', async () => {
      const before = await keysIn(dest);
      const { code, report } = await copy(['--from', source, '--to', dest, '--encryption-public-key', publicKey]);
      assert.equal(code, 0, JSON.stringify(report.failures));
      assert.deepEqual(report.wal, []);
      assert.deepEqual(report.backups, []);
      assert.deepEqual(report.backupsPresent, [backup]);
      assert.ok(report.walPresent > 0);
      assert.deepEqual(await keysIn(dest), before);
    });
  });

  it('a damaged source segment is named and left out; the rest is copied', async () => {
    const segments = sourceWal.filter(isSegmentFileName);
    const victim = segments[segments.length - 2];
    const file = path.join(source, 'wal', victim);
    const original = fs.readFileSync(file);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 100] ^= 0xff;
    // A receiver may have hard-linked the object to its spool file: replace, don't write through.
    fs.unlinkSync(file);
    fs.writeFileSync(file, damaged, { mode: 0o640 });
    const other = path.join(work, 'other-copy');
    try {
      const { code, report } = await copy(['--from', source, '--to', other]);
      assert.equal(code, 1);
      assert.deepEqual(report.failures.map((f) => f.object), [`wal/${victim}`]);
      assert.ok(!report.wal.includes(victim));
      assert.deepEqual(report.backups, [backup], 'the backup is copied all the same');
      assert.ok(!fs.existsSync(path.join(other, 'wal', victim)), 'nothing written under the damaged name');
      const human = await runWalvault(['copy', '--from', source, '--to', other], {}, 120000);
      assert.equal(human.code, 1);
      assert.match(human.stdout, new RegExp(`NOT COPIED wal/${victim}: `));
    } finally {
      fs.writeFileSync(file, original, { mode: 0o640 });
      removeDir(other);
    }
  });

  it("another cluster's archive is refused before anything is written", async () => {
    const foreign = path.join(work, 'foreign');
    await withArchive(foreign, (a) => a.ensureCluster({ systemId: '1', pgVersionNum: 150000, walSegmentSize: 1024 * 1024 }));
    const before = await keysIn(foreign);
    const r = await runWalvault(['copy', '--from', source, '--to', foreign], {}, 60000);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /belongs to database system 1, but .* holds the history of \d+; copy into an empty archive or one of the same database system/);
    assert.deepEqual(await keysIn(foreign), before);
  });

  it('bad options get one line and exit 2', async () => {
    const same = await runWalvault(['copy', '--from', source, '--to', source]);
    assert.equal(same.code, 2);
    assert.match(same.stderr, /--from and --to name the same archive/);
    const n = await runWalvault(['copy', '--from', source, '--to', path.join(work, 'x'), '--concurrency', '0']);
    assert.equal(n.code, 2);
    assert.match(n.stderr, /--concurrency "0" is not a whole number from 1 to 64/);
    assert.ok(!fs.existsSync(path.join(work, 'x')), 'nothing written');
  });
});
