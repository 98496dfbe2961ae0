/**
 * Sites isolated from each other (issue 15, item 4): in a daemon with two sites, each site's
 * receiver runs on its own thread, and each site's status replies keep flowing to its server
 *   - while the other site's store (s3rver, then Azurite) is stopped with SIGSTOP, and
 *   - while the other site's thread is held up: its ledger locked by another process, so each
 *     of its position writes waits (synchronously, up to SQLite's busy_timeout of 5 s).
 * On one event loop the second case stops every site's replies for the whole wait. The
 * replies are watched on the servers (pg_stat_replication.reply_time is the time the receiver
 * sent its last reply); every site sends one a second (status_interval_seconds 1).
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, storeTable, type ObjectStore } from '../helpers/object-stores';
import { archivedSegments, listenHttp, missingSegments, pgConninfo, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

/** Replies are due every second; a gap this long means a site's loop was held up. */
const MAX_GAP_S = 3.5;
const WATCH_MS = 9000;

/** The gaps between one site's successive status replies, as its server saw them, over `ms`. */
async function replyGaps(cluster: PgCluster, ms: number, during: () => Promise<unknown> = async () => undefined): Promise<number[]> {
  const seen: number[] = [];
  let watching = true;
  const watch = (async () => {
    while (watching) {
      const rows = await cluster.query("SELECT extract(epoch FROM reply_time)::float8 AS t FROM pg_stat_replication WHERE application_name = 'walvault_receiver'");
      const t = rows[0]?.t as number | undefined;
      if (t !== undefined && t !== seen[seen.length - 1]) seen.push(t);
      await new Promise((r) => setTimeout(r, 150));
    }
  })();
  const t0 = Date.now();
  await during();
  await new Promise((r) => setTimeout(r, Math.max(0, ms - (Date.now() - t0))));
  watching = false;
  await watch;
  if (seen.length < 3) {
    const now = await cluster.query('SELECT application_name, state, reply_time::text FROM pg_stat_replication');
    assert.fail(`replies seen while watching: ${seen.length}; pg_stat_replication now: ${JSON.stringify(now)}`);
  }
  return seen.slice(1).map((t, i) => t - seen[i]);
}

/** New WAL on `cluster` reaches `archive`, every segment of it. */
async function archivesOn(cluster: PgCluster, archive: string, timeoutMs = 30000): Promise<void> {
  await cluster.pgbench(['-c', '1', '-t', '100', '-n']);
  const { lastName } = await switchAndWaitArchived(cluster, archive, 1, timeoutMs);
  const names = await archivedSegments(archive);
  assert.deepEqual(missingSegments(names.filter((n) => n <= lastName), cluster.walSegSize, 1), [], `${archive} has no gap up to ${lastName}`);
}

for (const kind of OBJECT_STORES)
describe(`two sites in one daemon, each on its own thread (PostgreSQL 15, the stalled site on ${kind.name})`, () => {
  let server: ObjectStore;
  const clusters: PgCluster[] = [];
  let work = '';
  let daemon: WalvaultProcess | undefined;
  let steadyArchive = '';
  let stalledState = '';

  before(async () => {
    server = await kind.start();
    work = tmpDir('walvault-isolation-');
    for (let i = 0; i < 2; i++) clusters.push(await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: { wal_keep_size: '512MB' } }));
    steadyArchive = path.join(work, 'steady', 'archive');
    stalledState = path.join(work, 'stalled', 'state');
    const config = writeConfig(
      work,
      {
        steady: { pg: pgConninfo(clusters[0]), archive: steadyArchive, state: path.join(work, 'steady', 'state'), status_interval_seconds: 1, partial_interval_seconds: 1, application_name: 'walvault_receiver' },
        stalled: {
          pg: pgConninfo(clusters[1]),
          archive: server.url('isolation/stalled'),
          state: stalledState,
          status_interval_seconds: 1,
          partial_interval_seconds: 1,
          application_name: 'walvault_receiver',
          ...storeTable(kind, { request_timeout_seconds: 60 }),
        },
      },
      'info',
    );
    daemon = WalvaultProcess.start(['run', '--config', config]);
    await waitFor(() => ['steady', 'stalled'].every((n) => daemon!.lines.some((l) => l.msg === 'starting replication' && l.site === n)), {
      timeoutMs: 60000,
      what: 'both sites to stream',
    });
    for (const c of clusters) await c.pgbench(['-i', '-s', '1', '-q']);
    await switchAndWaitArchived(clusters[0], steadyArchive, 1, 60000);
  });

  after(async () => {
    server?.resume();
    await daemon?.kill9();
    for (const c of clusters) await c.destroy();
    await server?.destroy();
    if (work) removeDir(work);
  });

  it("keeps both sites' status replies flowing while one site's store is stopped", async () => {
    server.pause();
    try {
      const gaps = await Promise.all(
        clusters.map((c) =>
          replyGaps(c, WATCH_MS, async () => {
            await c.pgbench(['-c', '2', '-t', '200', '-n']);
            await c.query('SELECT pg_switch_wal()');
          }),
        ),
      );
      for (const [i, name] of ['steady', 'stalled'].entries()) {
        assert.ok(Math.max(...gaps[i]) < MAX_GAP_S, `${name}: gaps between replies ${gaps[i].map((g) => g.toFixed(2)).join(', ')} s`);
      }
      // The other site archives on, its store untouched by the pause.
      await archivesOn(clusters[0], steadyArchive);
    } finally {
      server.resume();
    }
    // And the stopped site catches up once its store answers: nothing it received was lost.
    await archivesOn(clusters[1], server.url('isolation/stalled'), 90000);
  });

  it("keeps the other site's status replies flowing while one site's thread waits on its locked ledger", async () => {
    const lock = new Database(path.join(stalledState, 'ledger.db'));
    lock.pragma('busy_timeout = 10000');
    lock.exec('BEGIN EXCLUSIVE');
    let gaps: number[];
    try {
      // The held-up site writes its positions every second: each write waits on the lock.
      gaps = await replyGaps(clusters[0], WATCH_MS, () => clusters[0].pgbench(['-c', '2', '-t', '200', '-n']));
    } finally {
      lock.exec('ROLLBACK');
      lock.close();
    }
    assert.ok(Math.max(...gaps) < MAX_GAP_S, `steady: gaps between replies ${gaps.map((g) => g.toFixed(2)).join(', ')} s`);
    await archivesOn(clusters[0], steadyArchive);
    assert.equal(daemon!.running, true, 'the daemon keeps running');
  });
});

describe('a site that stops on an error, in a daemon of two (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let work = '';
  let daemon: WalvaultProcess | undefined;

  before(async () => {
    cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1 });
    await cluster.query('CREATE ROLE norepl LOGIN');
    await cluster.pgbench(['-i', '-s', '1', '-q']);
    work = tmpDir('walvault-isolation-fail-');
  });

  after(async () => {
    await daemon?.kill9();
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('names the site and its error when it stops, reports it in /health, streams the other on, and exits with its error', async () => {
    const goodArchive = path.join(work, 'good', 'archive');
    const config = writeConfig(
      work,
      {
        good: { pg: pgConninfo(cluster), archive: goodArchive, state: path.join(work, 'good', 'state'), status_interval_seconds: 1 },
        bad: { pg: pgConninfo(cluster, 'norepl'), archive: path.join(work, 'bad', 'archive'), state: path.join(work, 'bad', 'state'), status_interval_seconds: 1 },
      },
      'info',
    );
    const port = await freePort();
    listenHttp(config, port);
    daemon = WalvaultProcess.start(['run', '--config', config]);
    const stopped = await daemon.waitForLog((l) => l.level === 60 && l.site === 'bad', 60000, "the daemon's line on the stopped site");
    assert.match(String(stopped.msg), /^site bad stopped: .*norepl/);
    assert.match(String(stopped.msg), /REPLICATION/i, 'the cause and its fix, as the one-site daemon words them');

    await waitFor(() => daemon!.lines.some((l) => l.msg === 'starting replication' && l.site === 'good'), { timeoutMs: 60000, what: 'the good site to stream' });
    await archivesOn(cluster, goodArchive);
    const health = await fetch(`http://127.0.0.1:${port}/health`);
    const body = await health.text();
    assert.equal(health.status, 503, body);
    assert.match(body, /^bad: not streaming from .*\(stopped: .*norepl/m);
    assert.doesNotMatch(body, /^good:.*not streaming/m);
    assert.equal(daemon.running, true, 'the daemon keeps running for the other site');

    const exit = await daemon.stop('SIGTERM', 60000);
    // The exit code of the site's error (a bad setting is 2), as a one-site daemon gives it.
    assert.equal(exit.code, 2);
  });
});
