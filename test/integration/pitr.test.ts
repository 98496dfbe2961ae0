/**
 * Issue 5, acceptance 1: point-in-time recovery is exact. While pgbench writes in the
 * background, a marker table gets rows in steps; after each step the test records the time,
 * the LSN, the xid of the step's transaction, a named restore point, and a checksum of the
 * markers. Restoring to each kind of target (time, LSN, xid, name, immediate) must give back
 * exactly the markers recorded there.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { availableMajors, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

const MARKERS = `SELECT count(*)::int AS n, coalesce(md5(string_agg(step::text || ':' || pad, ',' ORDER BY id)), '') AS sum FROM marker`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Moment {
  step: number;
  time: string;
  lsn: string;
  xid: string;
  name: string;
  markers: { n: number; sum: string };
}

for (const major of [15, 13, 18])
describe(`point-in-time recovery is exact (PostgreSQL ${major})`, { skip: !availableMajors().includes(major) && `PostgreSQL ${major} binaries not installed` }, () => {
  let primary: PgCluster;
  let work = '';
  let config = '';
  let receiver: WalvaultProcess | undefined;
  const moments: Moment[] = [];
  let atBackup: { n: number; sum: string } = { n: 0, sum: '' };

  before(async () => {
    work = tmpDir(`walvault-pitr-${major}-`);
    primary = await PgCluster.start({ major, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    const archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(primary), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } }, 'info');
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await primary.pgbench(['-i', '-s', '1', '-q']);
    await primary.query(`CREATE TABLE marker (id serial PRIMARY KEY, step int NOT NULL, pad text NOT NULL)`);
    await primary.query(`INSERT INTO marker (step, pad) SELECT 0, md5(g::text) FROM generate_series(1, 100) g`);
    atBackup = (await primary.query(MARKERS))[0];
    const push = await runWalvault(['backup', 'push', '--config', config, '--fast'], {}, 180000);
    assert.equal(push.code, 0, push.stderr.slice(-3000));

    const load = primary.pgbenchProcess(['-c', '2', '-T', '600', '-n', '-R', '200']);
    try {
      for (let step = 1; step <= 3; step++) {
        await sleep(700);
        // One transaction per step, whose xid is the target for that step.
        const rows = await primary.query(
          `WITH ins AS (INSERT INTO marker (step, pad) SELECT ${step}, md5(random()::text) FROM generate_series(1, 50) RETURNING 1)
           SELECT txid_current()::text AS xid, (SELECT count(*) FROM ins) AS n`,
        );
        const xid = rows[0].xid;
        const markers = (await primary.query(MARKERS))[0];
        const lsn = (await primary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l;
        const name = `walvault_step_${step}`;
        await primary.query(`SELECT pg_create_restore_point('${name}')`);
        // The time target lies after this step's commit and before the next one's.
        await sleep(300);
        const time = (await primary.query(`SELECT clock_timestamp()::text AS t`))[0].t;
        moments.push({ step, time, lsn, xid, name, markers });
        await sleep(300);
      }
    } finally {
      load.kill('SIGINT');
      await new Promise((r) => (load.exitCode === null ? load.once('exit', r) : r(undefined)));
    }
    await switchAndWaitArchived(primary, archive, 1, 60000);
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await primary?.destroy();
    if (work) removeDir(work);
  });

  async function restoreTo(tag: string, targetArgs: string[]): Promise<{ n: number; sum: string }> {
    const target = path.join(work, `restored-${tag}`);
    const r = await runWalvault(['restore', '--config', config, ...targetArgs, '--target-action', 'promote', target], {}, 300000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const restored = await PgCluster.start({ major, dataDir: target });
    try {
      await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, {
        timeoutMs: 120000,
        what: `recovery to ${tag} to end`,
      });
      return (await restored.query(MARKERS))[0];
    } finally {
      await restored.destroy();
      removeDir(target);
    }
  }

  it('to a time, an LSN, an xid and a restore point, for each recorded moment', async () => {
    for (const m of moments) {
      for (const [kind, args] of [
        ['time', ['--target-time', m.time]],
        ['lsn', ['--target-lsn', m.lsn]],
        ['xid', ['--target-xid', m.xid]],
        ['name', ['--target-name', m.name]],
      ] as const) {
        const got = await restoreTo(`${kind}-${m.step}`, [...args]);
        assert.deepEqual(got, m.markers, `recovery to ${kind} of step ${m.step} gives the markers recorded there`);
      }
    }
  });

  it('to the moment the backup became consistent', async () => {
    assert.deepEqual(await restoreTo('immediate', ['--target-immediate']), atBackup);
  });
});
