/**
 * `walvault status` (issue 7, acceptance 3): the JSON shape documented in docs/status.md,
 * a healthy site with a backup reports no problem; a site whose server is gone, and one
 * whose daemon is stopped, report it with the fix.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusReport } from '../../src/check/site-status';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, WalvaultProcess, writeConfig } from '../helpers/walvault';

const SITE_FIELDS = ['archive', 'connection', 'daemon', 'lag', 'lastArchivedSegment', 'lastBackup', 'lastFull', 'lastIncremental', 'nextBackupDue', 'positions', 'problems', 'recoverableWindow', 'site', 'timeline'];

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
    config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive: path.join(work, 'archive'), state: path.join(work, 'state'), status_interval_seconds: 1, partial_interval_seconds: 1, backup_interval_hours: 24 } }, 'info');
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
    assert.equal(s.site, 'main');
    assert.equal(s.daemon.running, true);
    assert.equal(s.daemon.pid, daemon.child.pid);
    assert.equal(s.connection, 'streaming');
    assert.equal(s.timeline, 1);
    assert.match(s.positions.archived ?? '', /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.equal(s.lastBackup?.name, backup);
    assert.equal(s.lastBackup?.kind, 'full');
    assert.equal(s.lastFull, backup);
    assert.equal(s.lastIncremental, null);
    assert.ok(s.nextBackupDue && Date.parse(s.nextBackupDue) > Date.now() + 23 * 3600_000, `next backup a day on (${s.nextBackupDue})`);
    assert.equal(s.recoverableWindow.from, s.lastBackup?.startedAt);
    assert.ok(s.recoverableWindow.to && s.recoverableWindow.toLsn);
    assert.deepEqual(s.archive, { location: path.join(work, 'archive'), reachable: true, error: null });
    assert.deepEqual(s.problems, []);
    const human = await runWalvault(['status', '--config', config], {}, 30000);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /^site main: OK$/m);
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
  });

  it('refuses to run without a configuration, exit 2', async () => {
    const r = await runWalvault(['status'], {}, 30000);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /give --config FILE/);
  });
});
