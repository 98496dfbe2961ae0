/**
 * Issue 5, acceptance 3: with partial uploads on, a restore after the primary stopped
 * abruptly recovers every transaction committed more than one partial interval before the
 * stop. The backup host dies at the same instant here (kill -9), so only what the archive
 * already held counts. wal-fetch serves the newest .partial as the zero-padded segment;
 * without it (--no-serve-partial) recovery ends at the last complete segment, with less.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, WalvaultProcess, writeConfig } from '../helpers/walvault';

const PARTIAL_INTERVAL_S = 1;
/** An upload takes a little while after its timer fires. */
const UPLOAD_SLACK_MS = 500;
/** Commits that must be due (older than the interval and the slack at the stop) to judge the restore. */
const MIN_DUE = 50;

describe(`restore after the primary stops abruptly, partial uploads on (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let primary: PgCluster;
  let work = '';
  let config = '';
  let receiver: WalvaultProcess | undefined;
  const committed: Array<{ id: number; at: number }> = [];
  let stopAt = 0;

  before(async () => {
    work = tmpDir('walvault-partial-restore-');
    primary = await PgCluster.start({ walSegSizeMiB: 1 });
    const archive = path.join(work, 'archive');
    config = writeConfig(
      work,
      { main: { pg: pgConninfo(primary), archive, state: path.join(work, 'state'), partial_interval_seconds: PARTIAL_INTERVAL_S, status_interval_seconds: 1 } },
      'info',
    );
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await primary.query(`CREATE TABLE marker (id int PRIMARY KEY, pad text)`);
    const push = await runWalvault(['backup', 'push', '--config', config, '--fast'], {}, 180000);
    assert.equal(push.code, 0, push.stderr.slice(-3000));

    // Commits, each timed when the server has confirmed it; then the primary and the backup
    // host die together in the middle of it.
    let writing = true;
    let writerError: unknown = null;
    const writer = (async () => {
      for (let id = 1; writing; id++) {
        try {
          await primary.query(`INSERT INTO marker VALUES (${id}, repeat('x', 2000))`);
        } catch (err) {
          if (writing) writerError = err;
          return;
        }
        committed.push({ id, at: Date.now() });
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    // At least 6 s of commits, and then until enough of them are old enough to be due at the
    // stop: on a loaded machine commits come slower, so a fixed time gives too few to judge.
    await new Promise((r) => setTimeout(r, 6000));
    const dueIfStoppedNow = () => committed.filter((c) => c.at < Date.now() - PARTIAL_INTERVAL_S * 1000 - UPLOAD_SLACK_MS).length;
    await waitFor(() => writerError !== null || dueIfStoppedNow() >= MIN_DUE, {
      timeoutMs: 180000,
      intervalMs: 100,
      what: `${MIN_DUE} commits more than ${PARTIAL_INTERVAL_S} s + ${UPLOAD_SLACK_MS} ms old`,
    });
    assert.equal(writerError, null, `the writer's commits failed: ${String(writerError)}`);
    stopAt = Date.now();
    await Promise.all([receiver.kill9(), primary.stop('immediate')]);
    writing = false;
    await writer;
    receiver = undefined;
  });

  after(async () => {
    await receiver?.kill9();
    await primary?.destroy();
    if (work) removeDir(work);
  });

  async function restoredIds(tag: string, extra: string[]): Promise<Set<number>> {
    const target = path.join(work, tag);
    const r = await runWalvault(['restore', '--config', config, ...extra, target], {}, 300000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const restored = await PgCluster.start({ dataDir: target });
    try {
      await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery to end' });
      return new Set((await restored.query(`SELECT id FROM marker`)).map((row) => Number(row.id)));
    } finally {
      await restored.destroy();
    }
  }

  it('recovers every transaction committed more than one partial interval before the stop', async (t) => {
    const due = committed.filter((c) => c.at < stopAt - PARTIAL_INTERVAL_S * 1000 - UPLOAD_SLACK_MS);
    assert.ok(due.length >= MIN_DUE, `enough commits to judge (${due.length})`);
    const ids = await restoredIds('restored', []);
    const lost = due.filter((c) => !ids.has(c.id));
    assert.deepEqual(lost.map((c) => c.id), [], `committed ${PARTIAL_INTERVAL_S} s + ${UPLOAD_SLACK_MS} ms or more before the stop, yet lost`);
    // Nothing that never committed appears either.
    const max = committed.length ? committed[committed.length - 1].id + 1 : 0;
    assert.ok([...ids].every((id) => id <= max), 'no marker beyond the last one written');

    const without = await restoredIds('restored-no-partial', ['--no-serve-partial']);
    t.diagnostic(`${committed.length} committed, ${due.length} due, ${ids.size} restored with the partial, ${without.size} without`);
    assert.ok(without.size < ids.size, `the partial segment carried the last commits (${ids.size} with it, ${without.size} without)`);
  });
});
