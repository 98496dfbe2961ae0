/**
 * Issue 14, item 7c: a `walvault backup push` killed while the server is still in BASE_BACKUP's
 * (spread) checkpoint leaves its walsender behind until that checkpoint ends: the server does
 * not notice the dead client while it waits (no setting of the connection changes that, see
 * src/postgres/connect-errors.ts). With every walsender then taken, the next command that
 * connects must say so in one line naming that cause and the fix, and the fixes it names
 * (pg_terminate_backend of the leftover, or CHECKPOINT) must free the walsender.
 *
 * A real PostgreSQL 15 with max_wal_senders = 2: one for the receiver, one for the killed
 * backup. The checkpoint is slow because many buffers are dirty and checkpoint_timeout is long.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { snapshotTree, type TreeEntry } from '../helpers/errors-fixtures';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, WalvaultProcess, writeConfig } from '../helpers/walvault';

describe('a backup killed during its checkpoint', { timeout: 600_000 }, () => {
  let cluster: PgCluster;
  let work: string;
  before(async () => {
    cluster = await PgCluster.start({
      settings: { max_wal_senders: 2, checkpoint_timeout: '1h', checkpoint_completion_target: 0.9, log_checkpoints: 'on' },
    });
    work = tmpDir('walvault-walsender-busy-');
    await cluster.query('CREATE TABLE filler (i int, s text)');
  });
  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  /**
   * The receiver keeps archiving the filler's WAL while the refused push runs: it may add whole
   * segments and renew its lease. Those are dropped from `after`; anything else the push wrote,
   * and any change to an object that was there before, still shows.
   */
  const withoutReceiverWrites = (after: TreeEntry[] | null, before: TreeEntry[] | null): TreeEntry[] | null => {
    const had = new Set((before ?? []).map((e) => e.path));
    const receiverLease = (before ?? []).find((e) => e.path === 'lease.json');
    return (after ?? []).flatMap((e) => {
      if (!had.has(e.path) && /^wal\/[0-9A-F]{24}$/.test(e.path)) return [];
      if (e.path === 'lease.json' && receiverLease) return [receiverLease];
      return [e];
    });
  };

  const walsenders = async () =>
    (await cluster.query(`SELECT pid, application_name, state FROM pg_stat_replication ORDER BY pid`)) as Array<{ pid: number; application_name: string; state: string }>;

  /** Dirties a few thousand buffers so that a spread checkpoint takes minutes, then starts a backup and kill -9s it in the checkpoint. */
  async function killBackupInCheckpoint(config: string): Promise<number> {
    await cluster.query(`INSERT INTO filler SELECT i, md5(i::text) FROM generate_series(1, 250000) i`);
    const push = WalvaultProcess.start(['backup', 'push', '--config', config]);
    try {
      const leftover = await waitFor(
        async () => {
          if (!push.running) throw new Error(`backup push exited: ${push.stderr.slice(-2000)}`);
          const rows = await cluster.query(
            `SELECT r.pid, p.phase FROM pg_stat_replication r JOIN pg_stat_progress_basebackup p USING (pid) WHERE r.application_name = 'main_backup'`,
          );
          return rows.find((r: { phase: string }) => r.phase === 'waiting for checkpoint to finish')?.pid as number | undefined;
        },
        { timeoutMs: 60_000, intervalMs: 200, what: 'the backup to wait for its checkpoint' },
      );
      await push.kill9();
      return leftover;
    } finally {
      await push.kill9();
    }
  }

  it('leaves its walsender; the next command says why and how to free it, and both fixes it names work', async () => {
    const archive = path.join(work, 'archive');
    const site = { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1, application_name: 'main' } };
    fs.mkdirSync(path.join(work, 'daemon'));
    fs.mkdirSync(path.join(work, 'cli'));
    const daemonConfig = writeConfig(path.join(work, 'daemon'), site);
    // The commands' own log lines would hide whether the error is one line.
    const cliConfig = writeConfig(path.join(work, 'cli'), site, 'error');

    const receiver = WalvaultProcess.start(['run', '--config', daemonConfig]);
    try {
      await receiver.waitForLog((l) => l.msg === 'starting replication', 30_000, 'streaming to start');

      // 1. The leftover walsender stays while the checkpoint goes on.
      const leftover = await killBackupInCheckpoint(cliConfig);
      const killedAt = Date.now();
      assert.deepEqual((await walsenders()).map((w) => w.application_name).sort(), ['main', 'main_backup'], 'every walsender is taken');

      // 2. The next command that connects: one line, the cause and the fixes, non-zero exit, nothing written.
      const before = snapshotTree(archive);
      const r = await runWalvault(['backup', 'push', '--config', cliConfig, '--fast'], {}, 60_000);
      const lines = r.stderr.trim().split('\n');
      assert.notEqual(r.code, 0, r.stderr);
      assert.notEqual(r.code, null, `backup push did not exit: ${r.stderr}`);
      assert.equal(lines.length, 1, r.stderr);
      const line = lines[0];
      assert.match(line, /^walvault: the server at 127\.0\.0\.1:\d+ .*has no free walsender/);
      assert.match(line, new RegExp(`127\\.0\\.0\\.1:${cluster.port}`));
      assert.match(line, /killed while the server was in its checkpoint keeps its walsender until that checkpoint ends/);
      assert.match(line, /pg_stat_replication/);
      assert.match(line, /pg_terminate_backend\(pid\)/);
      assert.match(line, /run CHECKPOINT/);
      assert.match(line, /max_wal_senders/);
      assert.deepEqual(withoutReceiverWrites(snapshotTree(archive), before), before, 'the refused push wrote nothing');

      // The premise of the message: the server still had not noticed the dead client.
      const still = await walsenders();
      assert.ok(
        still.some((w) => w.pid === leftover && w.state === 'backup'),
        `the killed backup's walsender ${leftover} is still there ${Date.now() - killedAt} ms after the kill: ${JSON.stringify(still)}`,
      );
      const phase = await cluster.query(`SELECT phase FROM pg_stat_progress_basebackup WHERE pid = ${leftover}`);
      assert.equal(phase[0]?.phase, 'waiting for checkpoint to finish', 'still in the checkpoint');

      // 3. Fix one: end it, as the message says.
      const ended = await cluster.query(`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_replication WHERE state = 'backup' AND application_name LIKE '%\\_backup'`);
      assert.deepEqual(ended.map((e: { ok: boolean }) => e.ok), [true]);
      await waitFor(async () => (await walsenders()).every((w) => w.pid !== leftover), { timeoutMs: 30_000, what: 'the terminated walsender to go' });

      // 4. Fix two, on a second leftover: an immediate CHECKPOINT ends the wait and the
      // walsender then finds its client gone.
      const second = await killBackupInCheckpoint(cliConfig);
      assert.ok((await walsenders()).some((w) => w.pid === second), 'a second leftover');
      await cluster.query('CHECKPOINT');
      await waitFor(async () => (await walsenders()).every((w) => w.pid !== second), { timeoutMs: 30_000, what: 'the leftover to go after CHECKPOINT' });

      // With the walsender free again, a backup runs (the receiver archives its WAL).
      const ok = await runWalvault(['backup', 'push', '--config', cliConfig, '--fast'], {}, 180_000);
      assert.equal(ok.code, 0, ok.stderr);
      assert.ok(receiver.running, 'the receiver kept streaming throughout');
    } finally {
      await receiver.stop('SIGTERM', 30_000);
    }
  });
});
