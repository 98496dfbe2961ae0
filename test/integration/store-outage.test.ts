/**
 * Storage outage: the object store (S3 on s3rver, then Azure Blob Storage on Azurite) is
 * stopped for 60 seconds during a pgbench run, then started again. Nothing may be lost, the
 * replication connection must stay up the whole time (the same walsender, though
 * wal_sender_timeout is 10 s), and the logs and the metrics file must show the outage and
 * the recovery.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { archivedSegments, assertArchiveMatchesServer, pgConninfo, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

const OUTAGE_MS = 60_000;

/** The value of `name{site="main"}` in a Prometheus text file, or undefined. */
function metric(file: string, name: string): number | undefined {
  if (!fs.existsSync(file)) return undefined;
  const line = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}{site="main"} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

for (const kind of OBJECT_STORES)
describe(`${kind.name} outage during a pgbench run`, () => {
  let server: ObjectStore;
  let cluster: PgCluster;
  let work: string;
  let started: WalvaultProcess | undefined;

  before(async () => {
    server = await kind.start();
    cluster = await PgCluster.start({
      walSegSizeMiB: 1,
      settings: { wal_keep_size: '4096MB', max_wal_size: '4096MB', wal_sender_timeout: '10s' },
    });
    work = tmpDir('walvault-outage-');
  });

  after(async () => {
    // A failed assertion leaves the receiver running; its pipes would keep this file's
    // process (and the whole suite) waiting.
    await started?.kill9();
    await cluster?.destroy();
    await server?.destroy();
    if (work) removeDir(work);
  });

  it('loses nothing, keeps the replication connection, and reports the outage and the recovery', async () => {
    const archive = server.url('outage/main');
    const state = path.join(work, 'state');
    const metricsFile = path.join(state, 'metrics.prom');
    const config = writeConfig(work, {
      main: { pg: pgConninfo(cluster), archive, state, status_interval_seconds: 1, partial_interval_seconds: 2 },
    });
    const receiver = WalvaultProcess.start(['run', '--config', config]);
    started = receiver;
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await cluster.pgbench(['-i', '-s', '2', '-q']);
    // Rate-limited: the backlog the outage builds (and the catch-up after it) must not grow
    // with the machine's speed, or a loaded CI machine cannot drain it in time.
    const load = cluster.pgbenchProcess(['-c', '2', '-T', '600', '-n', '-R', '300']);
    try {
      await waitFor(async () => (await archivedSegments(archive)).length >= 3, { timeoutMs: 60000, what: 'a few archived segments' });
      const walsender = async () =>
        (await cluster.query("SELECT pid FROM pg_stat_replication WHERE application_name = 'walvault_main'")).map((r) => Number(r.pid));
      const pids = await walsender();
      assert.equal(pids.length, 1, 'one walsender for the receiver');
      const receivedBefore = metric(metricsFile, 'walvault_received_lsn_bytes') ?? 0;

      await server.stop();
      const outageStart = Date.now();
      const errorsBefore = receiver.lines.filter((l) => l.level === 50).length;
      // Through the outage: the same walsender all along, and the metrics say storage is failing.
      while (Date.now() - outageStart < OUTAGE_MS) {
        await new Promise((r) => setTimeout(r, 5000));
        assert.deepEqual(await walsender(), pids, `the replication connection stayed up (${Math.round((Date.now() - outageStart) / 1000)} s into the outage)`);
        assert.ok(receiver.running, `walvault keeps running; stderr:\n${receiver.stderr.slice(-2000)}`);
      }
      assert.equal(metric(metricsFile, 'walvault_storage_failing'), 1, 'the metrics file shows storage failing');
      assert.ok((metric(metricsFile, 'walvault_storage_failing_seconds') ?? 0) >= 30, 'for most of the outage');
      assert.ok((metric(metricsFile, 'walvault_received_lsn_bytes') ?? 0) > receivedBefore, 'WAL kept arriving into the spool');
      assert.ok((metric(metricsFile, 'walvault_unarchived_bytes') ?? 0) > 0, 'and it is counted as unarchived');
      const outageErrors = receiver.lines.slice(0).filter((l) => l.level === 50).slice(errorsBefore);
      assert.ok(outageErrors.length >= 1, 'the outage is logged at error level');
      assert.ok(
        outageErrors.length <= 4,
        `logged once per interval, not per retry (${outageErrors.length} error lines in 60 s): ${outageErrors.map((l) => l.msg).join(' | ')}`,
      );
      // Refused once the store is down; a request in flight when it went down ends reset or,
      // on a machine busy enough that the deadline passes first, unanswered.
      const named = /^archiving .* failed: .*(ECONNREFUSED|ECONNRESET|socket hang up|did not answer in time)/;
      assert.ok(outageErrors.every((l) => named.test(String(l.msg))), `the error names the failure: ${outageErrors.map((l) => l.msg).join(' | ')}`);

      await server.restart();
      await receiver.waitForLog((l) => l.msg === 'archiving works again', 60000, 'the recovery to be logged');
      await waitFor(() => metric(metricsFile, 'walvault_storage_failing') === 0, { timeoutMs: 10000, what: 'the metrics to show the recovery' });
      assert.deepEqual(await walsender(), pids, 'still the same replication connection after the outage');
      assert.ok(!receiver.lines.some((l) => l.msg === 'replication failed; reconnecting'), 'no reconnect at all');
    } finally {
      load.kill('SIGINT');
      await new Promise((r) => (load.exitCode === null ? load.once('exit', r) : r(undefined)));
    }
    const { lastName } = await switchAndWaitArchived(cluster, archive, 1, 180000).catch((err: Error) => {
      err.message += `\n--- walvault stderr (tail) ---\n${receiver.stderr.slice(-3000)}`;
      throw err;
    });
    const exit = await receiver.stop('SIGTERM');
    assert.equal(exit.code, 0, `clean exit; stderr:\n${receiver.stderr.slice(-2000)}`);
    // Nothing lost: every segment from the first to the last is archived and equals the server's.
    await assertArchiveMatchesServer(archive, cluster, work, lastName);
  });
});
