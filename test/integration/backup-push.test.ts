/**
 * Issue 4, acceptance 2 and 5:
 * - a backup taken while WAL archiving is held back is not listed until the WAL through its
 *   stop LSN is archived, and is listed afterwards;
 * - bad input (an unknown backup name, a role without REPLICATION, an archive of another
 *   cluster) gets one line naming the cause and the fix, a non-zero exit, and nothing written.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { COMPLETE_FILE, METADATA_FILE, scanBackups } from '../../src/backup/catalog';
import { snapshotTree } from '../helpers/errors-fixtures';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, withArchive, WalvaultProcess, writeConfig } from '../helpers/walvault';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function listedNames(config: string): Promise<string[]> {
  const r = await runWalvault(['backup', 'list', '--config', config, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as Array<{ name: string }>).map((b) => b.name);
}

describe(`backup push (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let cluster: PgCluster;
  let other: PgCluster;
  let work = '';
  let receiver: WalvaultProcess | undefined;
  let push: WalvaultProcess | undefined;
  let second: WalvaultProcess | undefined;
  let config = '';
  let archive = '';
  // The receiver keeps writing WAL into the archive meanwhile: what a backup command could
  // write is the catalog and the cluster marker.
  const catalogPaths = (): string[] => [path.join(archive, 'backups'), path.join(archive, 'cluster.json')];
  // Why a backup's WAL never came: what the receiver said last.
  const receiverTail = (): string => (receiver?.lines ?? []).slice(-25).map((l) => JSON.stringify(l).slice(0, 400)).join('\n');

  before(async () => {
    work = tmpDir('walvault-backup-push-');
    [cluster, other] = await Promise.all([PgCluster.start({ walSegSizeMiB: 1 }), PgCluster.start({ walSegSizeMiB: 1 })]);
    archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } }, 'info');
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await cluster.pgbench(['-i', '-s', '1', '-q']);
  });

  after(async () => {
    if (receiver?.running) receiver.child.kill('SIGCONT');
    await push?.kill9();
    await second?.kill9();
    await receiver?.stop('SIGTERM', 30000);
    await Promise.all([cluster?.destroy(), other?.destroy()]);
    if (work) removeDir(work);
  });

  it('is not listed while its WAL is held back, and is listed once the WAL is archived', async () => {
    // The receiver frozen mid-stream: nothing new reaches the archive, the slot holds the WAL.
    receiver!.child.kill('SIGSTOP');
    try {
      push = WalvaultProcess.start(['backup', 'push', '--config', config, '--fast', '--wal-wait', '300']);
      const stored = await waitFor(
        async () => {
          if (!push!.running) throw new Error(`backup push exited early:\n${push!.stderr.slice(-3000)}`);
          const entries = await withArchive(archive, (a) => scanBackups(a));
          return entries.find((e) => e.keys.some((k) => k.endsWith(`/${METADATA_FILE}`))) ?? false;
        },
        { timeoutMs: 60000, what: 'the backup stream to be stored (metadata.json)' },
      );
      assert.equal(stored.complete, false);
      assert.ok(!stored.keys.some((k) => k.endsWith(`/${COMPLETE_FILE}`)), 'no completion marker while the WAL is missing');
      // Still waiting a while later, and still unlisted.
      await sleep(3000);
      assert.ok(push.running, 'push waits for the WAL');
      assert.deepEqual(await listedNames(config), [], 'a backup without its WAL is not listed');
      const show = await runWalvault(['backup', 'show', stored.name, '--config', config]);
      assert.notEqual(show.code, 0);
      assert.match(show.stderr, /not complete/);

      // Issue 17, item 4. A second push with --no-wait fails at once, naming the running backup.
      const refused = await runWalvault(['backup', 'push', '--config', config, '--fast', '--no-wait'], {}, 60000);
      assert.notEqual(refused.code, 0, refused.stderr);
      assert.match(refused.stderr, new RegExp(`has a base backup running: walvault pid [0-9]+ on host .*backup ${stored.name}`));
      // By default it waits, saying for which backup, whose, and how far it is.
      second = WalvaultProcess.start(['backup', 'push', '--config', config, '--fast', '--wal-wait', '300']);
      const waiting = await second.waitForLog((l) => /^one backup at a time per archive: waiting for /.test(String(l.msg)), 30000, 'the second push to wait');
      assert.match(String(waiting.msg), new RegExp(`waiting for backup ${stored.name} by walvault pid [0-9]+ on host \\S+ \\(site main\\), started .*: stored \\(.*\\), waiting for its WAL`));
      assert.equal(waiting.running, stored.name);
      // The check and status call it a backup in progress, not a missing one to take.
      const check = await runWalvault(['check', '--config', config], {}, 60000);
      assert.match(check.stdout, new RegExp(`no complete backup yet; in progress: backup ${stored.name} `));
      assert.doesNotMatch(check.stdout, /no complete backup: nothing can be restored/);
      const status = await runWalvault(['status', '--config', config, '--json'], {}, 60000);
      const site = (JSON.parse(status.stdout) as { sites: Array<{ backupRunning: string | null; problems: Array<{ problem: string }> }> }).sites[0];
      assert.match(String(site.backupRunning), new RegExp(`^backup ${stored.name} by walvault pid`));
      assert.ok(!site.problems.some((p) => /no complete backup/.test(p.problem)), JSON.stringify(site.problems));
      assert.ok(second.running, 'the second push still waits');
    } finally {
      receiver!.child.kill('SIGCONT');
    }
    const exit = await push.exited;
    assert.equal(exit.code, 0, `${push.stderr.slice(-3000)}\n--- the receiver's last lines ---\n${receiverTail()}`);
    const name = push.stdout.trim();
    assert.ok(push.lines.some((l) => /waiting for its WAL/.test(String(l.msg))), 'push said it was waiting for the WAL');
    // Issue 17, item 3: the push said it waited for the server's checkpoint, immediate here.
    assert.ok(push.lines.some((l) => l.msg === "waiting for the server's immediate checkpoint before the backup streams"));
    // The waiting push takes its own backup once the first is over.
    const secondExit = await second!.exited;
    assert.equal(secondExit.code, 0, second!.stderr.slice(-3000));
    const secondName = second!.stdout.trim();
    assert.notEqual(secondName, name);
    assert.ok(second!.lines.some((l) => l.msg === 'the other base backup is over; taking this one'));
    assert.deepEqual(await listedNames(config), [name, secondName], 'both listed once the WAL is archived');
  });

  it('a spread checkpoint is announced with its bound and the way to make it immediate', async () => {
    await cluster.query(`ALTER SYSTEM SET checkpoint_timeout = '30min'`);
    await cluster.query('SELECT pg_reload_conf()');
    const r = WalvaultProcess.start(['backup', 'push', '--config', config, '--wal-wait', '300']);
    try {
      const line = await r.waitForLog((l) => /^waiting for the server's spread checkpoint/.test(String(l.msg)), 30000, 'the checkpoint wait line');
      assert.equal(line.checkpointTimeout, '30min');
      // checkpoint_completion_target is 0.5 by default up to PostgreSQL 13, 0.9 from 14.
      const target = Number((await cluster.query(`SELECT current_setting('checkpoint_completion_target') AS t`))[0].t);
      const bound = Math.round(target * 30 * 60);
      const paced = `paces it over checkpoint_completion_target x checkpoint_timeout (${target} x 30min: up to about ${Math.floor(bound / 60)} min ${bound % 60} s)`;
      assert.ok(String(line.msg).includes(paced), `${line.msg}\nshould say: ${paced}`);
      assert.match(String(line.msg), /walvault backup push --fast/);
      assert.match(String(line.msg), /first_backup_fast_checkpoint = true/);
      // An idle server's spread checkpoint ends soon; the backup then streams and completes.
      const exit = await r.exited;
      assert.equal(exit.code, 0, r.stderr.slice(-3000));
    } finally {
      await r.kill9();
      await cluster.query('ALTER SYSTEM RESET checkpoint_timeout');
      await cluster.query('SELECT pg_reload_conf()');
    }
  });

  it('a backup whose push gave up waiting for its WAL is completed by the daemon once the WAL is archived', async () => {
    const before = await listedNames(config);
    receiver!.child.kill('SIGSTOP');
    let name = '';
    try {
      const r = await runWalvault(['backup', 'push', '--config', config, '--fast', '--wal-wait', '2'], {}, 120000);
      assert.notEqual(r.code, 0, 'push gives up');
      const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('walvault:'));
      assert.equal(lines.length, 1, r.stderr);
      const m = /backup ([0-9]{8}T[0-9]{6}Z(?:-[0-9]+)?) is stored but not restorable yet: .*waiting for [0-9A-F]{24}/.exec(lines[0]);
      assert.ok(m, `the line names the backup and the missing WAL: ${lines[0]}`);
      name = m[1];
      assert.deepEqual(await listedNames(config), before, 'not listed');
      // Retention must not take it for a leftover: it only waits for its WAL.
      const dry = await runWalvault(['backup', 'delete', '--retain', '1', '--config', config]);
      assert.equal(dry.code, 0, dry.stderr);
      assert.ok(!dry.stdout.includes(name), `retention spares the backup waiting for its WAL:\n${dry.stdout}`);
    } finally {
      receiver!.child.kill('SIGCONT');
    }
    await waitFor(async () => (await listedNames(config)).includes(name), { timeoutMs: 90000, intervalMs: 1000, what: `the daemon to complete ${name}` });
    assert.ok(receiver!.lines.some((l) => l.msg === 'base backup completed: its WAL is archived now' && l.backup === name));
  });

  describe('bad input: one line naming cause and fix, non-zero exit, nothing written', () => {
    async function expectOneLine(args: string[], watched: string[], cause: RegExp, fix: RegExp): Promise<void> {
      const before = watched.map((p) => snapshotTree(p));
      const r = await runWalvault(args, { PGPASSWORD: undefined }, 60000);
      const lines = r.stderr.trim().split('\n');
      assert.notEqual(r.code, 0, `exit status (stderr: ${r.stderr})`);
      assert.notEqual(r.code, null, 'it exited by itself');
      assert.equal(lines.length, 1, `one line on stderr:\n${r.stderr}`);
      assert.match(lines[0], /^walvault: /);
      assert.doesNotMatch(lines[0], /internal error/);
      assert.match(lines[0], cause);
      assert.match(lines[0], fix);
      watched.forEach((p, i) => {
        if (!p.endsWith(`${path.sep}wal`)) return assert.deepEqual(snapshotTree(p), before[i], `${p} unchanged`);
        // The receiver goes on archiving meanwhile (its partial segment grows, segments
        // complete, and a local store's temporary files of its writes come and go): what a
        // refused delete must not touch is every WAL object it found.
        const receiverOwn = (name: string) => name.endsWith('.partial') || /^\..*\.tmp-/.test(path.basename(name));
        const now = new Map((snapshotTree(p) ?? []).map((e) => [e.path, e]));
        for (const e of before[i] ?? []) if (!receiverOwn(e.path)) assert.deepEqual(now.get(e.path), e, `${p}/${e.path} unchanged`);
      });
    }

    it('an unknown backup name', async () => {
      await expectOneLine(['backup', 'show', '20200101T000000Z', '--config', config], catalogPaths(), /no backup named 20200101T000000Z/, /backup list/);
      await expectOneLine(['backup', 'show', '../etc', '--config', config], catalogPaths(), /is not a backup name/, /backup list/);
      await expectOneLine(['backup', 'delete', '20200101T000000Z', '--config', config, '--confirm'], [...catalogPaths(), path.join(archive, 'wal')], /no backup named 20200101T000000Z/, /backup list/);
      await expectOneLine(['backup', 'delete', '--before', '20200101T000000Z', '--config', config, '--confirm'], [...catalogPaths(), path.join(archive, 'wal')], /no complete backup named/, /backup list/);
    });

    it('a role without REPLICATION', async () => {
      await cluster.query(`CREATE ROLE norepl LOGIN`);
      const state = path.join(work, 'state-norepl');
      await expectOneLine(
        ['backup', 'push', '--pg', pgConninfo(cluster, 'norepl'), '--archive', archive, '--state', state, '--fast'],
        [...catalogPaths(), state],
        /norepl/,
        /REPLICATION/,
      );
    });

    it('an archive of another cluster', async () => {
      const state = path.join(work, 'state-other');
      await expectOneLine(
        ['backup', 'push', '--pg', pgConninfo(other), '--archive', archive, '--state', state, '--fast'],
        [...catalogPaths(), state],
        /belongs to database system/,
        /use a separate archive for each cluster/,
      );
      assert.ok(!fs.existsSync(state));
    });
  });
});
