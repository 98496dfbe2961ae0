/**
 * max_slot_wal_keep_size is the server's safety valve: when a receiver stays away long enough,
 * the server invalidates its slot and removes the WAL the archive still lacks. The receiver
 * must then say where the archive's gap begins and what to do, once, and stop: retrying can
 * never bring that WAL back. What it says to do (a new archive, a new backup) is then done.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatLsn, segmentFileName, segmentNumber } from '../../src/wal/lsn';
import { availableMajors, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import type { CheckReport } from '../../src/check/archive-check';
import { archivedCoverage, pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, WalvaultProcess, withReceiver, writeConfig } from '../helpers/walvault';

const SLOT = 'walvault_gap';

// 15 is the packaged server; 18 words and checks invalidated slots differently.
for (const major of [15, 18])
describe(`the slot is invalidated while the receiver is away (max_slot_wal_keep_size, PostgreSQL ${major})`, { skip: !availableMajors().includes(major) && `PostgreSQL ${major} binaries not installed` }, () => {
  let cluster: PgCluster;
  let work = '';
  before(async () => {
    cluster = await PgCluster.start({
      major,
      walSegSizeMiB: 1,
      settings: { max_slot_wal_keep_size: '2MB', wal_keep_size: 0, min_wal_size: '2MB', max_wal_size: '16MB' },
    });
    work = tmpDir('walvault-slot-lost-');
  });
  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('reports the gap with its position and the fix in one line, and does not retry', async (t) => {
    const archive = path.join(work, 'archive');
    const config = writeConfig(work, {
      main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), slot: SLOT, partial_interval_seconds: 1, status_interval_seconds: 1 },
    });
    const first = WalvaultProcess.start(['run', '--config', config]);
    try {
      await first.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      await cluster.query(`CREATE TABLE filler (id serial, pad text)`);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
      const exit = await first.stop('SIGTERM');
      assert.equal(exit.code, 0, first.stderr.slice(-2000));
    } finally {
      await first.kill9();
    }
    const segSize = cluster.walSegSize;
    const held = await archivedCoverage(archive, segSize, 1);
    assert.ok(held !== null, 'the first run archived WAL');

    // Far more WAL than the slot may keep, with checkpoints: the slot is invalidated and the
    // segments after the archive's end are removed or recycled.
    await waitFor(
      async () => {
        for (let i = 0; i < 4; i++) {
          await cluster.query(`INSERT INTO filler (pad) SELECT repeat('x', 900) FROM generate_series(1, 2000)`);
          await cluster.switchWal();
        }
        await cluster.query('CHECKPOINT');
        const r = await cluster.query(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = '${SLOT}'`);
        return r[0]?.wal_status === 'lost';
      },
      { timeoutMs: 60000, intervalMs: 100, what: `slot ${SLOT} to be invalidated (wal_status = lost)` },
    );
    const needed = segmentFileName(1, segmentNumber(held, segSize), segSize);
    await assert.rejects(cluster.readWalFile(needed), `the server has removed ${needed}`);

    const r = await runWalvault(['run', '--config', config], {}, 60000);
    assert.notEqual(r.code, null, `walvault kept running (a retry loop):\n${r.stderr.slice(-2000)}`);
    assert.notEqual(r.code, 0, 'exit status is non-zero');
    const errorLines = r.stderr.trim().split('\n').filter((l) => l.startsWith('walvault:'));
    assert.equal(errorLines.length, 1, `exactly one error line:\n${r.stderr.slice(-3000)}`);
    const line = errorLines[0];
    t.diagnostic(line);
    assert.match(line, /no longer has the WAL/);
    assert.ok(line.includes(formatLsn(held)) || line.includes(needed), `the line names where the gap begins (${formatLsn(held)} / ${needed}): ${line}`);
    assert.match(line, /take a new base backup/);
    assert.match(line, /max_slot_wal_keep_size/);
    const starts = r.stderr.split('\n').filter((l) => l.includes('"starting replication"')).length;
    assert.ok(starts <= 1, `streaming was not retried (${starts} starts)`);
    const reconnects = r.stderr.split('\n').filter((l) => /reconnect/i.test(l)).length;
    assert.equal(reconnects, 0, `no reconnect attempts were logged:\n${r.stderr.slice(-3000)}`);
    // The position in the message is what the archive really holds: nothing later was archived.
    assert.equal(await archivedCoverage(archive, segSize, 1), held, 'the archive did not change');
    assert.ok(line.includes(`pg_drop_replication_slot('${SLOT}')`), `the line says how to drop the slot: ${line}`);
    assert.match(line, /new archive location and a new state directory/);
  });

  it('the steps the line gives work: slot dropped, a new archive and state, streaming and a base backup again', async () => {
    await cluster.query(`SELECT pg_drop_replication_slot('${SLOT}')`);
    const archive = path.join(work, 'archive-after-gap');
    const config = writeConfig(work, {
      main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state-after-gap'), slot: SLOT, status_interval_seconds: 1 },
    });
    await withReceiver(config, async () => {
      const name = await pushBackup(['--config', config]);
      await cluster.query(`INSERT INTO filler (pad) SELECT repeat('y', 900) FROM generate_series(1, 500)`);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
      const r = await runWalvault(['check', '--archive', archive, '--json'], {}, 60000);
      assert.equal(r.code, 0, `the new archive checks clean:\n${r.stdout}\n${r.stderr}`);
      const report = JSON.parse(r.stdout) as CheckReport;
      assert.deepEqual(report.backups.map((b) => [b.name, b.consistent, b.restorable]), [[name, true, true]]);
    });
  });
});
