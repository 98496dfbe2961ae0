/**
 * Many sites per daemon (issue 7, acceptance 1): one `walvault run` streams three clusters;
 * killing one leaves the other two archiving with their lag unchanged (near zero), and both
 * `status` and `/health` name the failing site, and only it.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusReport } from '../../src/cli/site-status';
import { freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { archivedSegments, listenHttp, pgConninfo, runWalvault, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

const NAMES = ['alpha', 'bravo', 'charlie'];

describe('three sites in one daemon (PostgreSQL 15)', () => {
  const clusters: PgCluster[] = [];
  let work = '';
  let config = '';
  let base = '';
  let daemon: WalvaultProcess;
  const archives: string[] = [];

  const lagOf = async (site: string): Promise<number> => {
    const text = await (await fetch(`${base}/metrics`)).text();
    const m = new RegExp(`^walvault_archive_lag_bytes\\{site="${site}"\\} ([0-9.e+]+)$`, 'm').exec(text);
    assert.ok(m, `lag of ${site} in /metrics`);
    return Number(m[1]);
  };

  before(async () => {
    work = tmpDir('walvault-sites-');
    const sites: Record<string, Parameters<typeof writeConfig>[1][string]> = {};
    for (const name of NAMES) {
      const c = await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: { wal_keep_size: '512MB' } });
      clusters.push(c);
      const archive = path.join(work, name, 'archive');
      archives.push(archive);
      sites[name] = { pg: pgConninfo(c), archive, state: path.join(work, name, 'state'), status_interval_seconds: 1, partial_interval_seconds: 1 };
    }
    config = writeConfig(work, sites, 'info');
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    listenHttp(config, port);
    daemon = WalvaultProcess.start(['run', '--config', config]);
    await waitFor(() => NAMES.every((n) => daemon.lines.some((l) => l.msg === 'starting replication' && l.site === n)), { timeoutMs: 60000, what: 'all three sites to stream' });
  });

  after(async () => {
    if (daemon?.running) await daemon.stop('SIGTERM', 60000);
    for (const c of clusters) await c.destroy();
    if (work) removeDir(work);
  });

  it('streams all three; one cluster killed: the others keep archiving with no lag, and only the failed site is named', async () => {
    for (let i = 0; i < 3; i++) {
      await clusters[i].pgbench(['-i', '-s', '1', '-q']);
      await switchAndWaitArchived(clusters[i], archives[i], 1, 60000);
    }
    await waitFor(async () => (await fetch(`${base}/health`)).status === 200, { timeoutMs: 30000, what: 'all sites healthy' });

    await clusters[1].stop('immediate');
    await waitFor(async () => (await fetch(`${base}/health`)).status === 503, { timeoutMs: 30000, what: '/health to see bravo fail' });
    const body = await (await fetch(`${base}/health`)).text();
    assert.match(body, /^bravo: not streaming from /m);
    assert.doesNotMatch(body, /alpha|charlie/, 'only the failing site is named');

    // The other two go on archiving, promptly.
    for (const i of [0, 2]) {
      await clusters[i].pgbench(['-c', '2', '-t', '300', '-n']);
      const before = (await archivedSegments(archives[i])).length;
      const { lastName } = await switchAndWaitArchived(clusters[i], archives[i], 1, 30000);
      assert.ok((await archivedSegments(archives[i])).includes(lastName) && (await archivedSegments(archives[i])).length > before, `${NAMES[i]} archives new segments`);
      await waitFor(async () => (await lagOf(NAMES[i])) < 256 * 1024, { timeoutMs: 15000, what: `${NAMES[i]}'s lag back near zero` });
    }

    const r = await runWalvault(['status', '--config', config, '--json'], {}, 60000);
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout) as StatusReport;
    // No site has a backup here (not this test's subject): that problem is named for all three.
    const problems = Object.fromEntries(report.sites.map((s) => [s.site, s.problems.filter((p) => !/no complete backup/.test(p.problem))]));
    assert.ok(report.sites.every((s) => s.problems.some((p) => /no complete backup/.test(p.problem))));
    assert.deepEqual(problems.alpha, []);
    assert.deepEqual(problems.charlie, []);
    assert.ok(problems.bravo.some((p) => /^not streaming from /.test(p.problem)), JSON.stringify(problems.bravo));
    assert.equal(daemon.running, true, 'the daemon keeps running');
  });
});
