/**
 * Issue 5, first slice: `walvault restore` of the latest backup, to the end of the archive.
 * The restored directory passes pg_verifybackup, starts, replays the WAL written after the
 * backup through `walvault wal-fetch`, and holds exactly the data the primary had. A flipped
 * byte in a stored part fails the restore naming the object, and leaves no startable directory.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { BackupMetadata } from '../../src/backup/catalog';
import { parseLsn, segmentFileName, segmentNumber } from '../../src/wal/lsn';
import { chownForServer, clientBin, DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, verifybackupReads, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { openArchive, pgConninfo, runWalvault, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

const execFileP = promisify(execFile);

const CHECKSUM_SQL = `SELECT md5(string_agg(x, ',' ORDER BY x)) AS sum FROM (
  SELECT 'a' || sum(abalance)::text || '/' || count(*)::text AS x FROM pgbench_accounts
  UNION ALL SELECT 'h' || count(*)::text FROM pgbench_history
  UNION ALL SELECT 'e' || sum(id)::text FROM in_extra
  UNION ALL SELECT 'l' || coalesce(sum(n), 0)::text FROM after_backup) s`;

// In an object store the archive is compressed and encrypted as well.
for (const kind of [undefined, ...OBJECT_STORES])
describe(`restore of the latest backup to the end of the archive (PostgreSQL ${DEFAULT_MAJOR}, ${kind ? `${kind.name}, server zstd, encrypted` : 'local directory'})`, () => {
  let primary: PgCluster;
  let restored: PgCluster | undefined;
  let store: ObjectStore | undefined;
  let work = '';
  let archive = '';
  let config = '';
  let privateKey: string | undefined;
  let receiver: WalvaultProcess | undefined;
  let oid = '';
  let meta: BackupMetadata;

  before(async () => {
    work = tmpDir('walvault-restore-');
    primary = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    const site: Record<string, unknown> = { partial_interval_seconds: 1, status_interval_seconds: 1 };
    if (kind) {
      store = await kind.start();
      archive = store.url(`${path.basename(work)}/main`);
      privateKey = path.join(work, 'site.key');
      const k = await runWalvault(['keys', 'create', '--private-key', privateKey, '--public-key', path.join(work, 'site.pub')]);
      assert.equal(k.code, 0, k.stderr);
      Object.assign(site, { compression: 'zstd', encryption_public_key_file: path.join(work, 'site.pub') });
    } else {
      archive = path.join(work, 'archive');
    }
    config = writeConfig(work, { main: { pg: pgConninfo(primary), archive, state: path.join(work, 'state'), ...site } as never }, 'info');
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await restored?.destroy();
    await primary?.destroy();
    await store?.destroy();
    if (work) removeDir(work);
  });

  let expected = '';

  it('backs up, then writes more, and the archive holds all of it', async () => {
    const tsDir = path.join(work, 'ts');
    fs.mkdirSync(tsDir);
    chownForServer(tsDir);
    await primary.query(`CREATE TABLESPACE extra LOCATION '${tsDir}'`);
    await primary.query(`CREATE TABLE in_extra TABLESPACE extra AS SELECT g AS id FROM generate_series(1, 5000) g`);
    await primary.pgbench(['-i', '-s', '2', '-q']);
    oid = String((await primary.query(`SELECT oid::text AS oid FROM pg_tablespace WHERE spcname = 'extra'`))[0].oid);
    const push = await runWalvault(['backup', 'push', '--config', config, '--fast'], {}, 180000);
    assert.equal(push.code, 0, push.stderr.slice(-3000));
    const show = await runWalvault(['backup', 'show', push.stdout.trim(), '--config', config]);
    meta = JSON.parse(show.stdout);
    // After the backup: only WAL replay can bring these back.
    await primary.query(`CREATE TABLE after_backup AS SELECT g AS n FROM generate_series(1, 1000) g`);
    await primary.pgbench(['-c', '2', '-t', '200', '-n']);
    await primary.query(`INSERT INTO in_extra SELECT g FROM generate_series(5001, 6000) g`);
    expected = (await primary.query(CHECKSUM_SQL))[0].sum;
    await switchAndWaitArchived(primary, archive, 1, 60000);
  });

  it('restores a verified directory that recovers to exactly the primary\'s data', async () => {
    const target = path.join(work, 'restored');
    const newTs = path.join(work, 'restored-ts');
    const args = ['restore', '--config', config, ...(privateKey ? ['--private-key', privateKey] : []), '--tablespace-map', `${oid}=${newTs}`, target];
    const r = await runWalvault(args, {}, 300000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stdout, new RegExp(`restored backup ${meta.name} `));
    assert.match(r.stdout, /every one checked against the backup manifest/);
    assert.match(r.stdout, /pg_ctl -D .* start/);
    assert.ok(fs.existsSync(path.join(target, 'recovery.signal')));
    const auto = fs.readFileSync(path.join(target, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, new RegExp(`restore_command = 'mv -f pg_wal/walvault-prefetch/%f %p 2>/dev/null \\|\\| ${process.execPath.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} .*wal-fetch --config .* %f %p'`));
    assert.equal(fs.readlinkSync(path.join(target, 'pg_tblspc', oid)), newTs, 'the tablespace link points at the mapped directory');
    for (const [dir, mode] of [[target, 0o700]] as const) assert.equal(fs.statSync(dir).mode & 0o777, mode);
    assert.equal(fs.statSync(path.join(target, 'global', 'pg_control')).mode & 0o777, 0o600);

    if (verifybackupReads(DEFAULT_MAJOR)) {
      const v = await execFileP(clientBin('pg_verifybackup'), ['-n', target]).catch((err) => err);
      assert.equal(v.code ?? 0, 0, `pg_verifybackup: ${v.stderr ?? ''}${v.stdout ?? ''}`);
    }

    chownForServer(newTs);
    // restore_command runs as the server's OS user: it must be able to read the key.
    if (privateKey) chownForServer(privateKey);
    restored = await PgCluster.start({ dataDir: target });
    const server = restored;
    // Hot standby lets clients in once the backup is consistent; replay goes on to the end
    // of the archive, then the server promotes.
    await waitFor(async () => (await server.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, {
      timeoutMs: 120000,
      what: 'recovery from the archive to end and the server to promote',
    });
    assert.equal((await restored.query(CHECKSUM_SQL))[0].sum, expected, 'the restored data equal the primary\'s');
    assert.equal(Number((await restored.query(`SELECT count(*)::int AS n FROM after_backup`))[0].n), 1000, 'WAL after the backup was replayed');
  });

  it('--standby: a hot standby that answers reads, follows new WAL from the archive, and takes writes once promoted', async () => {
    const target = path.join(work, 'standby');
    const args = ['restore', '--config', config, ...(privateKey ? ['--private-key', privateKey] : []), '--standby', '--tablespace-map', `${oid}=${path.join(work, 'standby-ts')}`, target];
    const r = await runWalvault(args, {}, 300000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.ok(fs.existsSync(path.join(target, 'standby.signal')));
    assert.ok(!fs.existsSync(path.join(target, 'recovery.signal')));
    chownForServer(path.join(work, 'standby-ts'));
    const standby = await PgCluster.start({ dataDir: target });
    try {
      await waitFor(async () => (await standby.query(`SELECT count(*)::int AS n FROM after_backup`))[0].n === 1000, {
        timeoutMs: 60000,
        what: 'the standby to replay the archived WAL',
      });
      assert.equal((await standby.query('SELECT pg_is_in_recovery() AS r'))[0].r, true, 'still a standby');
      await assert.rejects(standby.query(`INSERT INTO after_backup VALUES (0)`), /read-only/);
      // New WAL on the primary reaches the standby through the archive.
      await primary.query(`CREATE TABLE while_standby AS SELECT 42 AS answer`);
      await switchAndWaitArchived(primary, archive, 1, 60000);
      await waitFor(async () => (await standby.query(`SELECT to_regclass('while_standby') IS NOT NULL AS t`))[0].t === true, {
        timeoutMs: 60000,
        what: 'the standby to replay WAL archived after it started',
      });
      await standby.promote();
      await standby.query(`INSERT INTO while_standby VALUES (43)`);
      assert.equal(Number((await standby.query(`SELECT sum(answer)::int AS s FROM while_standby`))[0].s), 85, 'the promoted server takes writes');
    } finally {
      await standby.destroy();
    }
  });

  it('a flipped byte in a WAL object stops recovery naming it, instead of ending it early', async () => {
    const segSize = meta.walSegmentSize;
    const stop = parseLsn(meta.stopLsn);
    // A segment recovery needs after the backup is consistent: the first one after the stop.
    const name = segmentFileName(1, segmentNumber(stop, segSize) + 1n, segSize);
    const key = `wal/${name}`;
    const storage = openArchive(archive).storage;
    const bytes = (await storage.get(key))!;
    assert.ok(bytes, `${key} is archived`);
    const damaged = Buffer.from(bytes);
    damaged[damaged.length - 100] ^= 0x01;
    await storage.put(key, damaged);
    try {
      const target = path.join(work, 'restored-bad-wal');
      const tsDir = path.join(work, 'ts-bad-wal');
      const r = await runWalvault(['restore', '--config', config, ...(privateKey ? ['--private-key', privateKey] : []), '--tablespace-map', `${oid}=${tsDir}`, target], {}, 300000);
      assert.equal(r.code, 0, r.stderr.slice(-3000));
      chownForServer(tsDir);
      let log = '';
      try {
        const server = await PgCluster.start({ dataDir: target });
        try {
          // Consistent before that segment, it lets clients in; then replay reaches it.
          await waitFor(async () => !(await server.query('SELECT 1').then(() => true, () => false)), { timeoutMs: 60000, what: 'recovery to stop at the damaged segment' });
          log = fs.readFileSync(server.logFile, 'utf8');
        } finally {
          await server.destroy();
        }
      } catch (err) {
        log = (err as Error).message;
      }
      assert.match(log, new RegExp(`walvault: .*wal/${name}`), 'the server log names the damaged object');
      assert.match(log, /FATAL/, 'recovery stopped');
      assert.doesNotMatch(log, /selected new timeline ID/, 'the server did not promote on a short history');
    } finally {
      await storage.put(key, bytes);
      await storage.close();
    }
  });

  it('a flipped byte in a stored part fails the restore naming it, and leaves nothing startable', async () => {
    const part = meta.archives.find((a) => a.tablespaceOid === null)!.parts[0];
    const storage = openArchive(archive).storage;
    try {
      const bytes = (await storage.get(part.key))!;
      const damaged = Buffer.from(bytes);
      damaged[Math.floor(damaged.length / 2)] ^= 0x01;
      await storage.put(part.key, damaged);
      const target = path.join(work, 'restored-damaged');
      const r = await runWalvault(['restore', '--config', config, ...(privateKey ? ['--private-key', privateKey] : []), '--tablespace-map', `${oid}=${path.join(work, 'ts-damaged')}`, target], {}, 300000);
      assert.notEqual(r.code, 0);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('walvault:'));
      assert.equal(lines.length, 1, r.stderr);
      assert.ok(lines[0].includes(part.key), `the error names ${part.key}: ${lines[0]}`);
      assert.ok(!fs.existsSync(path.join(target, 'global', 'pg_control')), 'no pg_control: no server starts on it');
      assert.ok(!fs.existsSync(path.join(target, 'recovery.signal')));
      await storage.put(part.key, bytes);
    } finally {
      await storage.close();
    }
  });
});
