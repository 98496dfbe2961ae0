/**
 * Base backups taken from a standby: a common way to keep backup load off the primary. The
 * site points at the standby (receiver and backups both); the standby cannot switch WAL, so
 * on an idle primary the backup's last segment is not finished for a long time: its partial
 * upload has to complete the backup. The backup is then listed, checks clean, and a restore
 * recovers to the primary's data.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CheckReport } from '../../src/check/archive-check';
import { parseLsn } from '../../src/wal/lsn';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, withReceiver, writeConfig } from '../helpers/walvault';

/** As an archive_command user's servers have it (restored copies get it too, as a copied postgresql.conf would give them). */
const archiving = { archive_mode: 'on', archive_command: '/bin/true' };

const SUMS = 'SELECT count(*)::int AS n, sum(abalance)::bigint AS s, (SELECT count(*)::int FROM pgbench_history) AS h FROM pgbench_accounts';

describe('base backup from a standby (PostgreSQL 15)', () => {
  let primary: PgCluster;
  let standby: PgCluster;
  let work = '';
  let archive = '';
  let config = '';

  before(async () => {
    primary = await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: archiving });
    standby = await PgCluster.start({ standbyOf: primary, settings: archiving });
    work = tmpDir('walvault-standby-backup-');
    archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(standby), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } });
  });

  after(async () => {
    await standby?.destroy();
    await primary?.destroy();
    if (work) removeDir(work);
  });

  const caughtUp = async () => {
    const end = parseLsn((await primary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
    await waitFor(async () => parseLsn((await standby.query(`SELECT pg_last_wal_replay_lsn()::text AS l`))[0].l) >= end, { timeoutMs: 30000, what: 'the standby to replay' });
  };

  it('completes on an idle primary, is listed and restorable, and a restore recovers to the primary\'s data', async () => {
    let name = '';
    await withReceiver(config, async () => {
      await primary.pgbench(['-i', '-s', '1', '-q']);
      await primary.pgbench(['-c', '2', '-t', '200', '-n']);
      await caughtUp();
      // Nothing runs on the primary while the backup is taken: no segment switch comes.
      name = await pushBackup(['--config', config]);
      const list = await runWalvault(['backup', 'list', '--config', config, '--json'], {}, 60000);
      assert.equal(list.code, 0, list.stderr);
      assert.ok(list.stdout.includes(name), `listed: ${list.stdout}`);

      await primary.pgbench(['-c', '2', '-t', '200', '-n']);
      await caughtUp();
      await switchAndWaitArchived(primary, archive, 1, 60000);
    });
    const r = await runWalvault(['check', '--archive', archive, '--json'], {}, 60000);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const b = (JSON.parse(r.stdout) as CheckReport).backups.find((x) => x.name === name);
    assert.ok(b && b.consistent && b.restorable, `the standby's backup checks restorable: ${JSON.stringify(b)}`);

    const expected = (await primary.query(SUMS))[0];
    const target = path.join(work, 'restored');
    const restore = await runWalvault(['restore', '--config', config, target], {}, 300000);
    assert.equal(restore.code, 0, restore.stderr);
    const restored = await PgCluster.start({ dataDir: target, settings: archiving });
    try {
      await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery to end' }).catch((err: Error) => {
        throw new Error(`${err.message}\n--- restored server's log ---\n${restored.logTail()}`);
      });
      assert.deepEqual((await restored.query(SUMS))[0], expected);
      assert.equal((await restored.query('SHOW archive_mode'))[0].archive_mode, 'off', 'a restored copy does not archive by default');
    } finally {
      await restored.destroy();
    }
  });

  it('--archive-mode preserve keeps the source\'s archive_mode; a target without --target-action pauses there', async () => {
    const target = path.join(work, 'restored-preserve');
    const restore = await runWalvault(['restore', '--config', config, '--archive-mode', 'preserve', '--target-immediate', target], {}, 300000);
    assert.equal(restore.code, 0, restore.stderr);
    const restored = await PgCluster.start({ dataDir: target, settings: archiving });
    try {
      assert.equal((await restored.query('SHOW archive_mode'))[0].archive_mode, 'on');
      await waitFor(async () => (await restored.query('SELECT pg_is_wal_replay_paused() AS p'))[0].p === true, { timeoutMs: 60000, what: 'recovery to pause at the target' });
      assert.equal((await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r, true, 'still in recovery, not promoted');
    } finally {
      await restored.destroy();
    }
  });
});
