/**
 * A hung store (issue 14, item 3): the object store (S3 on s3rver, then Azure Blob Storage on
 * Azurite) stopped with SIGSTOP takes connections and request bytes into the kernel and
 * answers nothing, so no request fails for a while. Under WAL load:
 *   - the receiver reports storage failing in the metrics, /health (503 naming the site and
 *     the store) and one JSON error line, before any request could time out, and the
 *     outstanding requests do end at their deadlines; after SIGCONT it recovers by itself;
 *   - wal-fetch gives up within its bound with exit 126 and one line, and the prefetcher it
 *     started exits too; once the store answers the same fetch serves the server's bytes;
 *   - check returns with a clear error within its bound;
 *   - status answers within seconds naming the archive unreachable (JSON and text);
 *   - in the end nothing is lost (every segment archived, equal to the server's), and every
 *     line the daemon wrote on stderr is JSON (the SDK prints nothing of its own).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusReport } from '../../src/cli/site-status';
import { processAlive } from '../../src/util/process-alive';
import { freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, storeTable, type ObjectStore } from '../helpers/object-stores';
import { archivedSegments, assertArchiveMatchesServer, listenHttp, pgConninfo, runWalvault, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

/** The daemon's settings: a stall is reported after 3 s, while each request may wait 8 s. */
const STALL_S = 3;
const DAEMON_REQUEST_S = 8;
/** The one-shot commands' settings (another config file for the same site). */
const CLI_REQUEST_S = 2;
const CLI_CONNECT_S = 2;
/** Node's start-up and a loaded machine: added to every bound, which rules out a hang, not slowness. */
const SLACK_MS = 30_000;

type LogLine = Record<string, unknown> & { msg?: string; level?: number };

for (const kind of OBJECT_STORES)
describe(`a hung store (${kind.name} stopped with SIGSTOP) under WAL load`, () => {
  let server: ObjectStore;
  let cluster: PgCluster;
  let work = '';
  let daemon: WalvaultProcess | undefined;
  let load: ReturnType<PgCluster['pgbenchProcess']> | undefined;
  let archive = '';
  let daemonConfig = '';
  let cliConfig = '';
  let base = '';

  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`${base}/metrics`)).text();
    const m = new RegExp(`^${name}\\{site="main"\\} ([0-9.e+-]+)$`, 'm').exec(text);
    assert.ok(m, `${name} in /metrics`);
    return Number(m[1]);
  };
  /** A pattern for the archive's URL, as messages name it and the objects under it. */
  const inArchive = (): string => archive.replace(/[/.]/g, '\\$&');
  const linesSince = (from: number, pred: (l: LogLine) => boolean): LogLine[] => daemon!.lines.slice(from).filter(pred);
  const stopLoad = async (): Promise<void> => {
    if (!load || load.exitCode !== null || load.signalCode !== null) return;
    const exited = new Promise((r) => load!.once('exit', r));
    load.kill('SIGINT');
    await exited;
  };

  before(async () => {
    server = await kind.start();
    cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: { wal_keep_size: '4096MB', max_wal_size: '4096MB' } });
    work = tmpDir('walvault-hung-');
    archive = server.url('hung/main');
    const state = path.join(work, 'state');
    const site = { pg: pgConninfo(cluster), archive, state, status_interval_seconds: 1, partial_interval_seconds: 2 };
    daemonConfig = writeConfig(work, { main: { ...site, storage_stall_seconds: STALL_S, ...storeTable(kind, { request_timeout_seconds: DAEMON_REQUEST_S, connect_timeout_seconds: 3 }) } });
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    listenHttp(daemonConfig, port);
    const cliDir = path.join(work, 'cli');
    fs.mkdirSync(cliDir);
    cliConfig = writeConfig(cliDir, { main: { ...site, ...storeTable(kind, { request_timeout_seconds: CLI_REQUEST_S, connect_timeout_seconds: CLI_CONNECT_S }) } });

    daemon = WalvaultProcess.start(['run', '--config', daemonConfig]);
    await daemon.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await cluster.pgbench(['-i', '-s', '1', '-q']);
    // Rate-limited, so the backlog a pause builds does not grow with the machine's speed.
    load = cluster.pgbenchProcess(['-c', '2', '-T', '900', '-n', '-R', '100']);
    await waitFor(async () => (await archivedSegments(archive)).length >= 3, { timeoutMs: 90000, what: 'a few archived segments' });
  });

  after(async () => {
    server?.resume();
    await stopLoad();
    await daemon?.kill9();
    await cluster?.destroy();
    await server?.destroy();
    if (work) removeDir(work);
  });

  it('the receiver reports the stall in the metrics, /health and one log line before any request times out, and recovers after SIGCONT', async () => {
    await waitFor(async () => (await fetch(`${base}/health`)).status === 200, { timeoutMs: 30000, what: '/health 200 before the pause' });
    const from = daemon!.lines.length;
    const failuresBefore = await metric('walvault_storage_failures_total');
    server.pause();
    const t0 = Date.now();
    try {
      await waitFor(async () => (await metric('walvault_storage_failing')) === 1, { timeoutMs: STALL_S * 1000 + SLACK_MS, what: 'walvault_storage_failing 1' });
      const noticedMs = Date.now() - t0;
      // Reported as a stall, while the requests still wait for an answer: none has failed yet.
      assert.equal(await metric('walvault_storage_failures_total'), failuresBefore, `no request had failed when it was reported (${noticedMs} ms into the pause)`);
      const health = await fetch(`${base}/health`);
      const body = await health.text();
      assert.equal(health.status, 503, body);
      assert.match(body, /^main: /m);
      assert.ok(body.includes(`${archive}`) && /has made no progress for \d+ s: the store does not answer/.test(body), body);
      await waitFor(async () => linesSince(from, (l) => l.level === 50).length > 0, { timeoutMs: SLACK_MS, what: 'an error line' });
      const stall = linesSince(from, (l) => l.level === 50);
      assert.equal(stall.length, 1, `one error line: ${stall.map((l) => l.msg).join(' | ')}`);
      assert.equal(stall[0].code, 'STORAGE_TIMEOUT');
      assert.match(String(stall[0].msg), new RegExp(`^archiving to ${inArchive()}.* has made no progress for \\d+ s: the store does not answer`));

      // The outstanding requests end at their deadlines (3 attempts of 8 s), counted as failures.
      await waitFor(async () => (await metric('walvault_storage_failures_total')) > failuresBefore, {
        timeoutMs: 3 * (DAEMON_REQUEST_S + 3) * 1000 + SLACK_MS,
        what: 'the requests to end at their deadlines',
      });
      const failed = linesSince(from, (l) => l.level === 50 && /did not answer in time/.test(String(l.msg)));
      const pausedS = (Date.now() - t0) / 1000;
      const errors = linesSince(from, (l) => l.level === 50);
      assert.ok(errors.length <= 2 + Math.floor(pausedS / 30), `rate-limited: ${errors.length} error lines in ${Math.round(pausedS)} s`);
      assert.ok(failed.every((l) => new RegExp(`^archiving .* failed: ${kind.says} .* the store did not answer in time`).test(String(l.msg))), 'failures name the timeout');
      assert.equal(await metric('walvault_storage_failing'), 1, 'still failing');
    } finally {
      server.resume();
    }
    await daemon!.waitForLog((l) => daemon!.lines.indexOf(l) >= from && l.msg === 'archiving works again', 120000, 'the recovery to be logged');
    await waitFor(async () => (await metric('walvault_storage_failing')) === 0, { timeoutMs: 30000, what: 'walvault_storage_failing 0 again' });
    await waitFor(async () => (await fetch(`${base}/health`)).status === 200, { timeoutMs: 30000, what: '/health 200 again' });
  });

  it('wal-fetch gives up within its bound, exit 126 with one line; its prefetcher exits too; after SIGCONT it serves the segment', async () => {
    const name = (await archivedSegments(archive))[0];
    const pgWal = path.join(work, 'restore', 'pg_wal');
    fs.mkdirSync(pgWal, { recursive: true });
    const dest = path.join(pgWal, 'RECOVERYXLOG');
    const lock = path.join(pgWal, 'walvault-prefetch', '.prefetcher.pid');
    server.pause();
    try {
      const t0 = Date.now();
      const r = await runWalvault(['wal-fetch', '--config', cliConfig, '--timeout', String(CLI_REQUEST_S), '--prefetch', '2', name, dest], {}, 300000);
      const took = Date.now() - t0;
      assert.equal(r.code, 126, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], new RegExp(`^walvault: gave up after 3 attempts: ${kind.says} read of .*the store did not answer in time \\(no connection within [0-9.]+ s, or no answer or progress for 2 s\\).*recovery stops here`));
      assert.ok(took < 3 * (CLI_REQUEST_S + CLI_CONNECT_S) * 1000 + 3000 + SLACK_MS, `within its bound (${took} ms)`);
      assert.ok(!fs.existsSync(dest), 'nothing written');
      // The prefetcher it started reads the same store with the same deadlines: it ends too.
      await waitFor(
        () => {
          const pid = Number(fs.existsSync(lock) ? fs.readFileSync(lock, 'utf8') : 0);
          return !(pid > 0 && processAlive(pid));
        },
        { timeoutMs: 3 * (CLI_REQUEST_S + CLI_CONNECT_S) * 1000 + SLACK_MS, what: 'the prefetcher to exit' },
      );
    } finally {
      server.resume();
    }
    const r = await runWalvault(['wal-fetch', '--config', cliConfig, '--timeout', String(CLI_REQUEST_S), name, dest], {}, 120000);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(name)), `${name} as the server has it`);
  });

  it('check returns within its bound with a clear error', async () => {
    server.pause();
    try {
      const t0 = Date.now();
      const r = await runWalvault(['check', '--config', cliConfig], {}, 300000);
      const took = Date.now() - t0;
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^walvault: check could not run: ${kind.says} \\w+ of ${inArchive()}.*the store did not answer in time .*check that the ${kind.says} endpoint is up and reachable`));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      // The SDK's three attempts of the first request (each store's client makes three).
      assert.ok(took < 3 * (CLI_REQUEST_S + CLI_CONNECT_S) * 1000 + SLACK_MS, `within its bound (${took} ms)`);
    } finally {
      server.resume();
    }
  });

  it('status answers within seconds and names the archive unreachable, in JSON and in text', async () => {
    server.pause();
    try {
      // The daemon's own config: its request timeout (8 s) is longer than what status waits.
      let t0 = Date.now();
      const r = await runWalvault(['status', '--config', daemonConfig, '--json'], {}, 120000);
      let took = Date.now() - t0;
      assert.equal(r.code, 1, r.stderr);
      assert.ok(took < 10_000 + SLACK_MS, `answered in ${took} ms`);
      const report = JSON.parse(r.stdout) as StatusReport;
      const s = report.sites[0];
      assert.equal(s.archive.reachable, false);
      assert.equal(s.archive.location, archive);
      assert.match(s.archive.error ?? '', /did not answer/);
      assert.ok(s.problems.some((p) => /^the archive is unreachable: .*did not answer/.test(p.problem) && /reachable/.test(p.fix)), JSON.stringify(s.problems));
      assert.equal(s.daemon.running, true, 'the rest of the report is there');

      t0 = Date.now();
      const text = await runWalvault(['status', '--config', daemonConfig], {}, 120000);
      took = Date.now() - t0;
      assert.equal(text.code, 1, text.stderr);
      assert.ok(took < 10_000 + SLACK_MS, `answered in ${took} ms`);
      assert.match(text.stdout, new RegExp(`^  archive: ${inArchive()}: unreachable$`, 'm'));
      assert.match(text.stdout, /^  problem: the archive is unreachable: /m);
    } finally {
      server.resume();
    }
  });

  it('nothing is lost, and every line the daemon wrote on stderr is JSON', async () => {
    await stopLoad();
    const { lastName } = await switchAndWaitArchived(cluster, archive, 1, 180000).catch((err: Error) => {
      err.message += `\n--- walvault stderr (tail) ---\n${daemon!.stderr.slice(-3000)}`;
      throw err;
    });
    const exit = await daemon!.stop('SIGTERM');
    assert.equal(exit.code, 0, `clean exit; stderr:\n${daemon!.stderr.slice(-2000)}`);
    await assertArchiveMatchesServer(archive, cluster, work, lastName);
    const notJson = daemon!.stderr.split('\n').filter((l) => l !== '').filter((l) => {
      try {
        return typeof JSON.parse(l) !== 'object';
      } catch {
        return true;
      }
    });
    assert.deepEqual(notJson, [], 'every stderr line is a JSON log line');
  });
});
