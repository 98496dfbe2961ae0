/**
 * The daemon's HTTP listener (issue 7, acceptance 2): /metrics scraped during streaming
 * shows positions advancing and the lag back near zero after the load stops; names follow
 * Prometheus conventions; /health says 200 while the site streams and archives, and 503
 * naming the site once its server is gone.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { listenHttp, pgConninfo, WalvaultProcess, writeConfig } from '../helpers/walvault';

interface Scrape {
  text: string;
  value(name: string): number;
}

async function scrape(base: string): Promise<Scrape> {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  return {
    text,
    value(name: string) {
      const m = new RegExp(`^${name}\\{site="main"\\} ([0-9.e+-]+)$`, 'm').exec(text);
      assert.ok(m, `${name} for site main in:\n${text.slice(0, 2000)}`);
      return Number(m[1]);
    },
  };
}

describe('HTTP /metrics and /health (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let work = '';
  let daemon: WalvaultProcess;
  let base = '';

  before(async () => {
    cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    work = tmpDir('walvault-http-');
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive: path.join(work, 'archive'), state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1, check_interval_hours: 0.0005 } }, 'info');
    listenHttp(config, port);
    daemon = WalvaultProcess.start(['run', '--config', config]);
    await daemon.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
  });

  after(async () => {
    if (daemon?.running) await daemon.stop('SIGTERM', 30000);
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('positions advance under load and the lag returns near zero after it; names follow the conventions', async () => {
    await waitFor(async () => (await fetch(`${base}/health`)).status === 200, { timeoutMs: 20000, what: '/health to report the site healthy' });
    const first = await scrape(base);
    await cluster.pgbench(['-i', '-s', '2', '-q']);
    await cluster.pgbench(['-c', '2', '-T', '3', '-n']);
    const during = await scrape(base);
    assert.ok(during.value('walvault_received_lsn_bytes') > first.value('walvault_received_lsn_bytes'), 'received advanced');
    await waitFor(async () => (await scrape(base)).value('walvault_archived_lsn_bytes') > first.value('walvault_archived_lsn_bytes'), { timeoutMs: 20000, what: 'archived to advance' });
    await waitFor(
      async () => {
        const s = await scrape(base);
        return s.value('walvault_archive_lag_bytes') < 256 * 1024 && s.value('walvault_archive_lag_seconds') < 5;
      },
      { timeoutMs: 30000, what: 'the lag to return near zero after the load' },
    );
    const done = await scrape(base);
    // The scheduled archive check (every 1.8 s here): no backup yet, so not clean, no gap.
    assert.equal(done.value('walvault_check_last_success'), 0);
    assert.equal(done.value('walvault_check_missing_segments'), 0);
    assert.equal(done.value('walvault_check_restorable_backups'), 0);
    assert.ok(done.value('walvault_fsynced_lsn_bytes') >= done.value('walvault_archived_lsn_bytes'));
    assert.equal(done.value('walvault_streaming'), 1);

    // Conventions: counters end in _total; sizes and positions in _bytes, times in _seconds;
    // no other units (ms, kb, mib) in names; everything under walvault_.
    const types = [...done.text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => ({ name: m[1], type: m[2] }));
    assert.ok(types.length >= 15, `metrics exported (${types.length})`);
    for (const { name, type } of types) {
      assert.match(name, /^walvault_[a-z0-9_]+$/);
      if (type === 'counter') assert.match(name, /_total$/, `${name} is a counter`);
      else assert.doesNotMatch(name, /_total$/, `${name} is a ${type}`);
      assert.doesNotMatch(name, /_(ms|millis|kb|kib|mib|mb)(_|$)/, `${name}: base units only`);
      if (/lsn|lag|bytes|size/.test(name) && !/_seconds$/.test(name)) assert.match(name, /_bytes$/, `${name} names its unit`);
    }
  });

  it('/health names the site once its server is gone, and 404 elsewhere', async () => {
    assert.equal((await fetch(`${base}/nothing`)).status, 404);
    await cluster.stop('immediate');
    await waitFor(async () => (await fetch(`${base}/health`)).status === 503, { timeoutMs: 30000, what: '/health to report the failure' });
    const body = await (await fetch(`${base}/health`)).text();
    assert.match(body, /^main: not streaming from /m);
  });
});
