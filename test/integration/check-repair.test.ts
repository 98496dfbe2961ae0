/**
 * `walvault check --repair` (issue 6, acceptance 2): segments deleted from the archive that
 * the server still has in pg_wal are streamed again and archived, byte for byte the
 * server's; `check` is then clean, and a cluster restored from the archive recovers to the
 * same data as the primary.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CheckReport } from '../../src/check/archive-check';
import { Archive } from '../../src/archive/archive';
import { formatLsn, parseLsn, parseSegmentFileName, segmentStartOfNumber } from '../../src/wal/lsn';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { archivedCoverage, openArchive, pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, withReceiver, writeConfig } from '../helpers/walvault';

describe(`walvault check --repair (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let config = '';
  let deleted: string[] = [];

  before(async () => {
    cluster = await PgCluster.start({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    work = tmpDir('walvault-repair-');
    archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1 } });
    await withReceiver(config, async () => {
      await cluster.pgbench(['-i', '-s', '1', '-q']);
      await pushBackup(['--config', config]);
      await cluster.pgbench(['-c', '2', '-t', '500', '-n']);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
      await cluster.pgbench(['-c', '2', '-t', '300', '-n']);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
    });
    // Three consecutive segments and one more, all after the backup.
    const names = fs.readdirSync(path.join(archive, 'wal')).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    assert.ok(names.length >= 12, `enough segments (${names.length})`);
    const at = names.length - 8;
    deleted = [names[at], names[at + 1], names[at + 2], names[at + 5]];
    for (const n of deleted) fs.rmSync(path.join(archive, 'wal', n));
  });

  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('check names the gaps; --repair streams them again from the server; check is clean', async (t) => {
    const before = await runWalvault(['check', '--config', config, '--json'], {}, 60000);
    assert.equal(before.code, 1, before.stderr);
    const gaps = (JSON.parse(before.stdout) as CheckReport).missingSegments;
    assert.deepEqual(gaps.map((g) => [g.first, g.last]), [[deleted[0], deleted[2]], [deleted[3], deleted[3]]]);

    const bad = await runWalvault(['check', '--archive', archive, '--repair'], {}, 60000);
    assert.equal(bad.code, 2, 'repair needs the site');
    assert.match(bad.stderr, /--repair streams WAL from the site's server: give --config/);

    // WAL the archive cannot have: written after the receiver stopped, so the server is known
    // to be at least this far ahead of what the archive holds.
    await cluster.query(`CREATE TABLE lag_probe AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 2000) g`);
    const flushedBefore = parseLsn((await cluster.query('SELECT pg_current_wal_flush_lsn()::text AS l'))[0].l);
    const r = await runWalvault(['check', '--config', config, '--repair', '--json'], {}, 120000);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    assert.match(r.stderr, new RegExp(`archived again from the server: ${deleted.join(', ')}`), r.stdout);
    const after = JSON.parse(r.stdout) as CheckReport;
    assert.ok(after.ok, after.problems.join('; '));
    assert.deepEqual(after.missingSegments, []);
    // Given the site, the report says where its server is, and how far behind the archive is.
    assert.ok(after.server?.reachable, JSON.stringify(after.server));
    if (after.server?.reachable) {
      assert.equal(after.server.timeline, 1);
      const now = parseLsn((await cluster.query('SELECT pg_current_wal_lsn()::text AS l'))[0].l);
      const serverLsn = parseLsn(after.server.lsn);
      assert.ok(serverLsn >= flushedBefore && serverLsn <= now, `server position ${after.server.lsn} is between ${formatLsn(flushedBefore)} and ${formatLsn(now)}`);
      // The archive, gapless after the repair, ends where the receiver stopped (the partial it
      // archived then), before the WAL written since.
      const archivedEnd = await archivedCoverage(archive, cluster.walSegSize, 1);
      assert.ok(archivedEnd !== null && archivedEnd < flushedBefore, `the archive ends (${archivedEnd === null ? 'nowhere' : formatLsn(archivedEnd)}) before the WAL written since (${formatLsn(flushedBefore)})`);
      assert.equal(after.newest?.lsn, formatLsn(archivedEnd), 'the report\'s newest archived position is the end of the archived WAL');
      // The lag is exactly what separates the server's position from the archive's end.
      assert.equal(after.server.archiveLagBytes, Number(serverLsn - archivedEnd), `archive lag at server ${after.server.lsn}, archive end ${formatLsn(archivedEnd)}`);
      assert.ok(after.server.archiveLagBytes >= Number(flushedBefore - archivedEnd), 'the lag counts at least the WAL written since the receiver stopped');
      t.diagnostic(`server ${after.server.lsn}, archive ends ${formatLsn(archivedEnd)}: ${after.server.archiveLagBytes} bytes behind`);
    }

    // The segments are the server's own bytes.
    const a = openArchive(archive);
    try {
      for (const n of deleted) assert.ok((await a.get(Archive.walKey(n)))!.equals(await cluster.readWalFile(n)), `${n} equals the server's file`);
    } finally {
      await a.close();
    }
  });

  it('a cluster restored from the repaired archive recovers to the primary\'s data', async () => {
    const expected = (await cluster.query('SELECT count(*)::int AS n, sum(abalance)::bigint AS s FROM pgbench_accounts'))[0];
    const historyRows = (await cluster.query('SELECT count(*)::int AS n FROM pgbench_history'))[0].n;
    const target = path.join(work, 'restored');
    const r = await runWalvault(['restore', '--config', config, target], {}, 300000);
    assert.equal(r.code, 0, r.stderr);
    const restored = await PgCluster.start({ dataDir: target });
    try {
      await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery to end' });
      const got = (await restored.query('SELECT count(*)::int AS n, sum(abalance)::bigint AS s FROM pgbench_accounts'))[0];
      assert.deepEqual(got, expected);
      assert.equal((await restored.query('SELECT count(*)::int AS n FROM pgbench_history'))[0].n, historyRows);
    } finally {
      await restored.destroy();
    }
  });
});

describe(`walvault check --repair when the server no longer has the WAL (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let config = '';
  let victim = '';

  before(async () => {
    cluster = await PgCluster.start({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, settings: { wal_keep_size: '0', max_wal_size: '4MB', min_wal_size: '2MB' } });
    work = tmpDir('walvault-repair-gone-');
    archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1 } });
    await withReceiver(config, async () => {
      await cluster.pgbench(['-i', '-s', '1', '-q']);
      await pushBackup(['--config', config]);
      await cluster.pgbench(['-c', '2', '-t', '300', '-n']);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
    });
    // Without the slot and with no WAL kept, checkpoints recycle what the archive holds.
    await cluster.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots`);
    const names = fs.readdirSync(path.join(archive, 'wal')).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    victim = names[names.length - 3];
    for (let i = 0; i < 8; i++) {
      await cluster.pgbench(['-c', '1', '-t', '200', '-n']);
      await cluster.query('SELECT pg_switch_wal()');
      await cluster.query('CHECKPOINT');
    }
    const onServer = (await cluster.query(`SELECT name FROM pg_ls_waldir()`)).map((r: { name: string }) => r.name);
    assert.ok(!onServer.includes(victim), `${victim} is gone from the server`);
    fs.rmSync(path.join(archive, 'wal', victim));
  });

  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('says the range cannot be repaired and why, suggests --backup-if-needed, and writes nothing', async () => {
    const before = fs.readdirSync(path.join(archive, 'wal')).sort();
    const r = await runWalvault(['check', '--config', config, '--repair'], {}, 120000);
    assert.equal(r.code, 1, `${r.stderr}\n${r.stdout}`);
    assert.match(r.stderr, new RegExp(`repair: ${victim}\\.\\.${victim} cannot be repaired: .*`));
    assert.match(r.stderr, /add --backup-if-needed/);
    assert.match(r.stdout, new RegExp(`problem: WAL missing: ${victim}`));
    assert.deepEqual(fs.readdirSync(path.join(archive, 'wal')).sort(), before, 'the archive is unchanged');
  });
});

describe(`walvault check --repair --backup-if-needed (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let config = '';

  before(async () => {
    cluster = await PgCluster.start({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, settings: { wal_keep_size: '0', max_wal_size: '4MB', min_wal_size: '2MB' } });
    work = tmpDir('walvault-repair-backup-');
    archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1 } });
  });

  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('takes a new base backup when a missing range is gone from the server; the new backup is restorable, the old one stops at the gap', async () => {
    await withReceiver(config, async () => {
      await cluster.pgbench(['-i', '-s', '1', '-q']);
      const old = await pushBackup(['--config', config]);
      await cluster.pgbench(['-c', '2', '-t', '300', '-n']);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
      const names = fs.readdirSync(path.join(archive, 'wal')).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
      const victim = names[names.length - 3];
      // The receiver's slot follows what is archived, so checkpoints recycle the older WAL.
      await waitFor(
        async () => {
          await cluster.pgbench(['-c', '1', '-t', '100', '-n']);
          await cluster.query('SELECT pg_switch_wal()');
          await cluster.query('CHECKPOINT');
          return !(await cluster.query(`SELECT name FROM pg_ls_waldir()`)).some((r: { name: string }) => r.name === victim);
        },
        { timeoutMs: 60000, what: `${victim} to be recycled on the server` },
      );
      fs.rmSync(path.join(archive, 'wal', victim));

      const r = await runWalvault(['check', '--config', config, '--repair', '--backup-if-needed', '--json'], {}, 180000);
      assert.equal(r.code, 1, `the gap is still there: ${r.stderr}\n${r.stdout}`);
      assert.match(r.stderr, new RegExp(`repair: ${victim}\\.\\.${victim} cannot be repaired`));
      const taken = /repair: took base backup (\S+),/.exec(r.stderr)?.[1];
      assert.ok(taken, `a backup was taken: ${r.stderr}`);
      const report = JSON.parse(r.stdout) as CheckReport;
      assert.deepEqual(report.missingSegments.map((m) => [m.first, m.last]), [[victim, victim]]);
      const byName = new Map(report.backups.map((b) => [b.name, b]));
      const before = byName.get(old)!;
      const fresh = byName.get(taken)!;
      assert.ok(before && fresh, `both backups reported: ${[...byName.keys()].join(', ')}`);
      assert.equal(before.consistent, true, 'the old backup is still consistent (the gap is after its stop)');
      const gapStart = segmentStartOfNumber(parseSegmentFileName(victim, report.segmentSize).segNo, report.segmentSize);
      assert.ok(parseLsn(before.recoverableTo!.lsn) <= gapStart, `the old backup recovers only up to the gap (${before.recoverableTo!.lsn})`);
      assert.equal(fresh.consistent, true, `the new backup's WAL is archived: ${fresh.problems.join('; ')}`);
      assert.equal(fresh.restorable, true);
      assert.ok(parseLsn(fresh.recoverableTo!.lsn) >= parseLsn(fresh.stopLsn), 'the new backup recovers at least to its stop');
    });
  });
});
