/**
 * `walvault status` (issue 7, acceptance 3): the JSON shape documented in docs/status.md,
 * a healthy site with a backup reports no problem; a site whose server is gone, and one
 * whose daemon is stopped, report it with the fix.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusReport } from '../../src/cli/site-status';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, WalvaultProcess, writeConfig } from '../helpers/walvault';

const SITE_FIELDS = ['archive', 'archives', 'backupRunning', 'connection', 'daemon', 'lag', 'lastArchivedSegment', 'lastBackup', 'lastFull', 'lastIncremental', 'nextBackupDue', 'positions', 'problems', 'recoverableWindow', 'server', 'site', 'timeline'];

describe('walvault status (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let work = '';
  let config = '';
  let daemon: WalvaultProcess;
  let backup = '';

  const status = async (): Promise<{ code: number | null; report: StatusReport }> => {
    const r = await runWalvault(['status', '--config', config, '--json'], {}, 60000);
    assert.ok(r.code === 0 || r.code === 1, `status ran (exit ${r.code}): ${r.stderr}`);
    return { code: r.code, report: JSON.parse(r.stdout) as StatusReport };
  };

  before(async () => {
    cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1 });
    work = tmpDir('walvault-status-');
    // Named as the one-site form names its site, so both forms read the same state.
    config = writeConfig(work, { default: { pg: pgConninfo(cluster), archive: path.join(work, 'archive'), state: path.join(work, 'state'), status_interval_seconds: 1, partial_interval_seconds: 1, backup_interval_hours: 24, spool_alert_mib: 8 } }, 'info');
    daemon = WalvaultProcess.start(['run', '--config', config]);
    // The schedule takes the first backup itself, the archive having none.
    await daemon.waitForLog((l) => l.msg === 'base backup complete' || /base backup .*complete/.test(String(l.msg)), 120000, 'the first scheduled backup');
    const list = await runWalvault(['backup', 'list', '--config', config, '--json'], {}, 30000);
    backup = (JSON.parse(list.stdout) as Array<{ name: string }>)[0].name;
    await cluster.query('SELECT pg_switch_wal()');
  });

  after(async () => {
    if (daemon?.running) await daemon.stop('SIGTERM', 30000);
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('a healthy site: the documented shape, streaming, positions, backups, no problem', async () => {
    let last: StatusReport | undefined;
    await waitFor(async () => {
      const { code, report } = await status();
      last = report;
      return code === 0 && report.sites[0].lastArchivedSegment !== null;
    }, { timeoutMs: 30000, what: `a clean status (last: ${JSON.stringify(last?.sites[0]?.problems)})` });
    const s = last!.sites[0];
    assert.deepEqual(Object.keys(last!).sort(), ['checkedAt', 'ok', 'sites']);
    assert.deepEqual(Object.keys(s).sort(), SITE_FIELDS);
    assert.equal(s.site, 'default');
    assert.equal(s.daemon.running, true);
    assert.equal(s.daemon.pid, daemon.child.pid);
    assert.equal(s.connection, 'streaming');
    assert.equal(s.timeline, 1);
    assert.match(s.positions.archived ?? '', /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.equal(s.archives.length, 1, 'the one archive on its own');
    assert.equal(s.archives[0].storageFailingSeconds, null);
    assert.match(s.archives[0].archived ?? '', /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.equal(s.lastBackup?.name, backup);
    assert.equal(s.lastBackup?.kind, 'full');
    assert.equal(s.lastFull, backup);
    assert.equal(s.lastIncremental, null);
    assert.ok(s.nextBackupDue && Date.parse(s.nextBackupDue) > Date.now() + 23 * 3600_000, `next backup a day on (${s.nextBackupDue})`);
    assert.equal(s.recoverableWindow.from, s.lastBackup?.startedAt);
    assert.ok(s.recoverableWindow.to && s.recoverableWindow.toLsn);
    assert.deepEqual(s.archive, { location: path.join(work, 'archive'), reachable: true, error: null });
    assert.deepEqual(s.problems, []);
    // The server's view, over the site's replication connection.
    const [{ server_version: version }] = await cluster.query('SHOW server_version');
    assert.equal(s.server?.reachable, true);
    assert.equal(s.server?.error, null);
    assert.equal(s.server?.version, String(version).split(' ')[0]);
    assert.match(s.server?.walPosition ?? '', /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.equal(s.server?.slot.exists, true);
    assert.match(s.server?.slot.restartLsn ?? '', /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.ok(typeof s.server?.slot.retainedBytes === 'number' && s.server.slot.retainedBytes >= 0);
    assert.equal(s.server?.maxSlotWalKeepSize, '-1');
    const human = await runWalvault(['status', '--config', config], {}, 30000);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /^site default: OK$/m);
    assert.match(human.stdout, /^ {2}server: PostgreSQL 15\.\d+, WAL at \S+; slot \S+ keeps WAL from /m);
  });

  it('takes the one-site form of run (--archive with --state), and asks the server when given --pg', async () => {
    const oneSite = ['status', '--archive', path.join(work, 'archive'), '--state', path.join(work, 'state'), '--json'];
    const bare = await runWalvault(oneSite, {}, 60000);
    assert.equal(bare.code, 0, bare.stderr + bare.stdout);
    const b = (JSON.parse(bare.stdout) as StatusReport).sites[0];
    assert.equal(b.daemon.pid, daemon.child.pid);
    assert.equal(b.lastFull, backup);
    assert.equal(b.server, null);
    const asked = await runWalvault([...oneSite, '--pg', pgConninfo(cluster)], {}, 60000);
    assert.equal(asked.code, 0, asked.stderr + asked.stdout);
    const a = (JSON.parse(asked.stdout) as StatusReport).sites[0];
    assert.equal(a.server?.reachable, true);
    assert.equal(a.server?.slot.exists, true);
    const half = await runWalvault(['status', '--archive', path.join(work, 'archive')], {}, 30000);
    assert.equal(half.code, 2);
    assert.match(half.stderr, /needs both --archive URL and --state DIR .*missing: --state/);
    const both = await runWalvault(['status', '--config', config, '--state', path.join(work, 'state')], {}, 30000);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /either --config or the one-site options/);
  });

  it('names the problem and the fix when the server is gone, and when the daemon is stopped', async () => {
    await cluster.stop('immediate');
    await waitFor(async () => (await status()).report.sites[0].connection === 'not streaming', { timeoutMs: 30000, what: 'status to see the connection lost' });
    const down = (await status()).report;
    assert.equal(down.ok, false);
    assert.ok(down.sites[0].problems.some((p) => /^not streaming from /.test(p.problem) && /server is up/.test(p.fix)), JSON.stringify(down.sites[0].problems));

    await daemon.stop('SIGTERM', 30000);
    const { code, report } = await status();
    assert.equal(code, 1);
    assert.equal(report.sites[0].daemon.running, false);
    assert.ok(report.sites[0].problems.some((p) => /daemon .* is not running/.test(p.problem) && p.fix.includes(`walvault run --config ${config}`)));
    assert.equal(report.sites[0].server?.reachable, false);

    // The server back, nobody streaming from the slot, WAL written: past spool_alert_mib
    // (8 MiB here) of WAL kept on the server for the slot is a problem, with the way out.
    await cluster.start();
    await cluster.query('CREATE TABLE held AS SELECT g, md5(g::text) AS t FROM generate_series(1, 300000) g');
    await cluster.query('SELECT pg_switch_wal()');
    const held = (await status()).report.sites[0];
    assert.ok((held.server?.slot.retainedBytes ?? 0) > 8 * 1048576, JSON.stringify(held.server));
    assert.ok(
      held.problems.some((p) => /^slot walvault_default on .* is not streamed from and holds \d+ MiB of WAL on the server/.test(p.problem) && p.fix.includes("pg_drop_replication_slot('walvault_default')")),
      JSON.stringify(held.problems),
    );
  });

  it('refuses to run without a configuration, exit 2', async () => {
    const r = await runWalvault(['status'], {}, 30000);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /give --config FILE/);
  });
});
