/**
 * Issue 14, item 7b: while the server is down the receiver retries with backoff, but logs the
 * failure once per 30 s (as the uploader logs storage failures), not on every attempt, and
 * says when the connection is back. A real server is stopped for longer than one interval.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgCluster, removeDir, tmpDir } from '../helpers/pg-cluster';
import { pgConninfo, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

const INTERVAL_MS = 30000;
const ERROR = 50;

describe('reconnect failures while the server is down', () => {
  let cluster: PgCluster;
  let work: string;
  before(async () => {
    cluster = await PgCluster.start({ walSegSizeMiB: 1 });
    work = tmpDir('walvault-reconnect-log-');
  });
  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('are logged once per interval, not per attempt, and the recovery is logged', async () => {
    const archive = path.join(work, 'archive');
    const config = writeConfig(work, {
      main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1 },
    });
    const p = WalvaultProcess.start(['run', '--config', config]);
    try {
      await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      const failure = (l: { msg?: string }) => l.msg === 'replication failed; reconnecting';
      const firstLine = p.lines.length;
      await cluster.stop('fast');
      const stoppedAt = Date.now();
      // Down for more than one interval and long enough for several attempts (the backoff
      // starts at half a second and doubles): poll, the machine may be slow.
      await p.waitForLog(() => Date.now() - stoppedAt > INTERVAL_MS + 10000 && p.lines.slice(firstLine).filter(failure).length >= 5, 180000, 'five reconnect attempts over 40 s');
      await cluster.start();
      const back = await p.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('the replication connection is back'), 90000, 'the recovery line');
      await p.waitForLog((l) => p.lines.indexOf(l) > p.lines.indexOf(back) && l.msg === 'starting replication', 30000, 'streaming again');

      const during = p.lines.slice(firstLine, p.lines.indexOf(back));
      const attempts = during.filter(failure);
      const logged = attempts.filter((l) => (l.level ?? 0) >= ERROR);
      const times = logged.map((l) => Number(l.time));
      const span = Number(back.time) - Number(attempts[0].time);
      const summary = `${attempts.length} attempts over ${span} ms, ${logged.length} logged at error level:\n${logged.map((l) => JSON.stringify(l)).join('\n')}`;
      assert.ok(attempts.length >= 5, summary);
      assert.ok(logged.length >= 1, `the outage is logged: ${summary}`);
      assert.ok(logged.length <= 1 + Math.floor(span / INTERVAL_MS), `at most one error line per ${INTERVAL_MS} ms: ${summary}`);
      assert.ok(logged.length < attempts.length, summary);
      for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= INTERVAL_MS, `error lines ${INTERVAL_MS} ms apart: ${summary}`);
      assert.ok(String(logged[0].err ?? '').length > 0, 'the error line says what failed');
      assert.equal(logged[0].loggedEveryMs, INTERVAL_MS, 'and how often it is logged');
      // Nothing else at warn or above repeats per attempt.
      const loud = during.filter((l) => (l.level ?? 0) >= 40 && !failure(l));
      assert.ok(loud.length <= 2, `other warnings during the outage: ${loud.map((l) => JSON.stringify(l)).join('\n')}`);
      // The recovery line: how long, and how many attempts failed.
      assert.equal(back.failures, attempts.length, JSON.stringify(back));
      assert.ok(Number(back.failingForMs) >= span - 2000, JSON.stringify(back));

      await switchAndWaitArchived(cluster, archive, 1, 90000);
      assert.ok(p.running, 'the receiver kept running');
      const exit = await p.stop('SIGTERM');
      assert.equal(exit.code, 0, p.stderr.slice(-2000));
    } finally {
      await p.kill9();
    }
  });
});
