/**
 * The server going away (restart, crash) must not cost a byte: the receiver reconnects with
 * backoff, receives the interrupted segment again, and the archive stays gap-free and equal
 * to the server's WAL.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgCluster, removeDir, tmpDir } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { assertArchiveMatchesServer, pgConninfo, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

for (const kind of [undefined, ...OBJECT_STORES])
describe(`server restarts while streaming (${kind?.name ?? 'local directory'})`, () => {
  let cluster: PgCluster;
  let work: string;
  let store: ObjectStore | undefined;
  before(async () => {
    cluster = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '4096MB', max_wal_size: '4096MB' } });
    work = tmpDir('walvault-reconnect-');
    store = await kind?.start();
  });
  after(async () => {
    await cluster?.destroy();
    await store?.destroy();
    if (work) removeDir(work);
  });

  it('reconnects after a fast restart and a crash restart, with no gap', async () => {
    const archive = store ? store.url(`${path.basename(work)}/main`) : path.join(work, 'archive');
    const config = writeConfig(work, {
      main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 },
    });
    const p = WalvaultProcess.start(['run', '--config', config]);
    try {
      await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      await cluster.pgbench(['-i', '-s', '2', '-q']);
      await cluster.pgbench(['-c', '2', '-T', '2', '-n']);
      const shutdownStarted = Date.now();
      await cluster.restart('fast');
      const shutdownMs = Date.now() - shutdownStarted;
      await cluster.pgbench(['-c', '2', '-T', '2', '-n']);
      await cluster.restart('immediate');
      await cluster.pgbench(['-c', '2', '-T', '2', '-n']);
      const { lastName } = await switchAndWaitArchived(cluster, archive, 1, 90000);
      const starts = p.lines.filter((l) => l.msg === 'starting replication').length;
      assert.ok(starts >= 3, `streaming restarted after each server restart (${starts} starts)`);
      assert.ok(p.running, 'the receiver kept running');
      // The server's shutdown waits for the receiver to confirm what it was sent.
      assert.ok(shutdownMs < 20000, `fast shutdown was not held up by the receiver (${shutdownMs} ms)`);
      const exit = await p.stop('SIGTERM');
      assert.equal(exit.code, 0, p.stderr.slice(-2000));

      await assertArchiveMatchesServer(archive, cluster, work, lastName);
    } finally {
      await p.kill9();
    }
  });
});
