/**
 * Issue 14, item 2: a missing segment must not end recovery early without a word. When the
 * archive holds WAL beyond a missing segment (on the timeline path recovery follows),
 * `wal-fetch` stops recovery (exit 126) with one line naming the gap and the way on; a
 * restored cluster then stops there instead of promoting, and recovers every commit once the
 * segment is back. `--accept-gap` ends recovery at the gap as before. A request past the
 * archive's real end, a history-file probe, a standby at the end of the archive and the
 * requests along a timeline switch behave as they always did.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ArchiveLease } from '../../src/archive/archive-lease';
import type { Storage } from '../../src/storage/storage';
import { formatLsn, parseLsn, parseSegmentFileName, segmentFileName, segmentNumber, segmentStartOfNumber } from '../../src/wal/lsn';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { openArchive, pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, withReceiver, writeConfig, type RunResult } from '../helpers/walvault';

const ROWS = `SELECT count(*)::int AS n, coalesce(md5(string_agg(step::text || ':' || pad, ',' ORDER BY step, pad)), '') AS sum FROM gap_rows`;
const insertStep = (step: number) => `INSERT INTO gap_rows SELECT ${step}, md5(random()::text) FROM generate_series(1, 20)`;

/** Moves an object out of the archive (any backend, the stored bytes as they are); the returned function puts it back. */
async function takeAway(storage: Storage, key: string): Promise<() => Promise<void>> {
  const bytes = await storage.get(key);
  assert.ok(bytes, `${key} is in the archive`);
  await storage.delete(key);
  return () => storage.put(key, bytes);
}

const nextSeg = (name: string, segSize: number, by = 1) => {
  const { tli, segNo } = parseSegmentFileName(name, segSize);
  return segmentFileName(tli, segNo + BigInt(by), segSize);
};

/** Asserts the one-line gap error of wal-fetch. */
function assertGapLine(r: RunResult, missing: string, next: string, segSize: number, to?: string): void {
  assert.equal(r.code, 126, `a gap stops recovery (exit above 125): ${r.stderr}`);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  const from = formatLsn(segmentStartOfNumber(parseSegmentFileName(missing, segSize).segNo, segSize));
  const until = formatLsn(segmentStartOfNumber(parseSegmentFileName((to ?? next).replace(/\.partial$/, ''), segSize).segNo, segSize));
  assert.match(r.stderr, new RegExp(`^walvault: WAL gap: ${missing} is missing from .*\\(${next.replace('.', '\\.')}\\)[^:]*: WAL ${from} to ${until} on timeline \\d+ is a gap; `));
  assert.match(r.stderr, /"walvault check"/);
  assert.match(r.stderr, /"walvault check --repair"/);
  assert.match(r.stderr, /--accept-gap/);
}

describe(`a gap in the archive stops recovery instead of ending it (PostgreSQL ${DEFAULT_MAJOR}, local directory)`, () => {
  let primary: PgCluster;
  let work = '';
  let archive = '';
  let config = '';
  let segSize = 0;
  /** The segment holding each step's commit (each step ends its segment). */
  const stepSeg: string[] = [];
  let expected: { n: number; sum: string };
  let atStep2: { n: number; sum: string };

  const storage = () => openArchive(archive).storage;
  const fetch = (name: string, dest: string, extra: string[] = []) => runWalvault(['wal-fetch', '--archive', archive, ...extra, name, dest]);

  before(async () => {
    work = tmpDir('walvault-gap-');
    primary = await PgCluster.start({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    segSize = primary.walSegSize;
    archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(primary), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } }, 'info');
    await withReceiver(config, async () => {
      await primary.query('CREATE TABLE gap_rows (step int NOT NULL, pad text NOT NULL)');
      await pushBackup(['--config', config]);
      // Commits spread over segments after the backup: each step's commit in a segment of its own.
      for (let step = 1; step <= 6; step++) {
        await primary.query(insertStep(step));
        if (step === 2) atStep2 = (await primary.query(ROWS))[0];
        stepSeg[step] = (await switchAndWaitArchived(primary, archive, 1, 60000)).lastName;
      }
    });
    expected = (await primary.query(ROWS))[0];
    assert.equal(expected.n, 120);
  });

  after(async () => {
    await primary?.destroy();
    if (work) removeDir(work);
  });

  /**
   * Starts the restored directory, which must stop by itself (recovery fails at the gap):
   * its server log. pg_ctl may see it ready (consistent) first, or see it fail first.
   */
  async function startExpectingStop(dataDir: string): Promise<string> {
    let cluster: PgCluster;
    try {
      cluster = await PgCluster.start({ major: DEFAULT_MAJOR, dataDir });
    } catch (err) {
      return (err as Error).message; // it carries the server log's tail
    }
    try {
      let promoted = false;
      await waitFor(
        async () => {
          if (!fs.existsSync(path.join(dataDir, 'postmaster.pid'))) return true;
          promoted = (await cluster.query('SELECT pg_is_in_recovery() AS r'))[0].r === false;
          return promoted;
        },
        { timeoutMs: 120000, intervalMs: 200, what: 'the restored server to stop at the gap' },
      ).catch((err: Error) => {
        throw new Error(`${err.message}\n--- server log ---\n${cluster.logTail(60)}`);
      });
      assert.equal(promoted, false, `recovery ended and the server promoted instead of stopping at the gap:\n${cluster.logTail(60)}`);
      return fs.readFileSync(cluster.logFile, 'utf8');
    } finally {
      await cluster.destroy();
    }
  }

  async function recoverToEnd(dataDir: string): Promise<{ rows: { n: number; sum: string }; log: string }> {
    const cluster = await PgCluster.start({ major: DEFAULT_MAJOR, dataDir });
    try {
      await waitFor(async () => (await cluster.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery to end' }).catch((err: Error) => {
        throw new Error(`${err.message}\n--- server log ---\n${cluster.logTail(60)}`);
      });
      return { rows: (await cluster.query(ROWS))[0], log: fs.readFileSync(cluster.logFile, 'utf8') };
    } finally {
      await cluster.destroy();
    }
  }

  it('a restored cluster stops at the missing segment with walvault\'s line, does not promote, and recovers every commit once the segment is back', async () => {
    const gap = stepSeg[3];
    const putBack = await takeAway(storage(), `wal/${gap}`);
    const dir = path.join(work, 'restored');
    try {
      const r = await runWalvault(['restore', '--archive', archive, dir], {}, 300000);
      assert.equal(r.code, 0, r.stderr);
      const log = await startExpectingStop(dir);
      assert.match(log, new RegExp(`walvault: WAL gap: ${gap} is missing from .*\\(${nextSeg(gap, segSize)}\\)`), log);
      assert.match(log, /FATAL: +could not restore file/, 'PostgreSQL stopped recovery on it');
      assert.ok(!fs.existsSync(path.join(dir, 'postmaster.pid')), 'the server is not running');
      assert.ok(fs.existsSync(path.join(dir, 'recovery.signal')), 'still a cluster in recovery');
      assert.deepEqual(fs.readdirSync(path.join(dir, 'pg_wal')).filter((f) => f.endsWith('.history')), [], 'no new timeline: it did not promote');
    } finally {
      await putBack();
    }
    const { rows, log } = await recoverToEnd(dir);
    assert.deepEqual(rows, expected, 'the same directory, started again with the segment back, recovers every commit');
    assert.doesNotMatch(log, /walvault: /, 'nothing to say the second time');
    removeDir(dir);
  });

  it('with --accept-gap the restore ends at the gap, as before, saying so', async () => {
    const gap = stepSeg[3];
    const putBack = await takeAway(storage(), `wal/${gap}`);
    const dir = path.join(work, 'restored-accept');
    try {
      const r = await runWalvault(['restore', '--archive', archive, '--accept-gap', dir], {}, 300000);
      assert.equal(r.code, 0, r.stderr);
      assert.match(fs.readFileSync(path.join(dir, 'postgresql.auto.conf'), 'utf8'), /restore_command = '.*wal-fetch .*--accept-gap .*%f %p'/);
      const { rows, log } = await recoverToEnd(dir);
      assert.deepEqual(rows, atStep2, 'recovery ended at the gap: the commits before it, none after');
      assert.match(log, new RegExp(`walvault: WAL gap accepted \\(--accept-gap\\): ${gap} is missing`));
    } finally {
      await putBack();
      removeDir(dir);
    }
  });

  it('wal-fetch: past the end and a history probe exit 1 silently; a missing segment with WAL after it exits 126 with one line', async () => {
    const dest = path.join(work, 'fetched');
    // The end: the receiver left the open segment (after the last switch) as a partial at most.
    const end = nextSeg(stepSeg[6], segSize);
    for (const name of [end, nextSeg(stepSeg[6], segSize, 2), '00000002.history']) {
      const r = await fetch(name, dest);
      assert.deepEqual([r.code, r.stderr], [1, ''], `${name}: not in the archive, nothing after it`);
    }
    assert.ok(!fs.existsSync(dest));
    const served = await fetch(stepSeg[6], dest);
    assert.equal(served.code, 0, served.stderr);

    const plaintext3 = (await openArchive(archive).get(`wal/${stepSeg[3]}`))!;
    const putBack3 = await takeAway(storage(), `wal/${stepSeg[3]}`);
    try {
      assertGapLine(await fetch(stepSeg[3], dest), stepSeg[3], stepSeg[4], segSize);
      // A partial left beside the lost segment (say its deletion failed) does not hide the
      // gap under --serve-partial: served, recovery would end at its last byte.
      const partialKey = `wal/${stepSeg[3]}.partial`;
      await openArchive(archive).putPartial(partialKey, plaintext3.subarray(0, segSize / 2));
      try {
        assertGapLine(await fetch(stepSeg[3], dest, ['--serve-partial']), stepSeg[3], stepSeg[4], segSize);
      } finally {
        await storage().delete(partialKey);
      }
      const putBack4 = await takeAway(storage(), `wal/${stepSeg[4]}`);
      try {
        // Two segments missing: the line names where the archive holds WAL again.
        assertGapLine(await fetch(stepSeg[3], dest), stepSeg[3], stepSeg[5], segSize);
      } finally {
        await putBack4();
      }
      const accepted = await fetch(stepSeg[3], dest, ['--accept-gap']);
      assert.equal(accepted.code, 1, accepted.stderr);
      assert.match(accepted.stderr, new RegExp(`^walvault: WAL gap accepted \\(--accept-gap\\): ${stepSeg[3]} is missing .*; recovery ends at ${formatLsn(segmentStartOfNumber(parseSegmentFileName(stepSeg[3], segSize).segNo, segSize))}\\n$`));

      // For a standby (standby.signal in the data directory whose pg_wal %p is in): a line, exit 1.
      const dataDir = path.join(work, 'fake-standby');
      fs.mkdirSync(path.join(dataDir, 'pg_wal'), { recursive: true });
      fs.writeFileSync(path.join(dataDir, 'standby.signal'), '');
      const standby = await fetch(stepSeg[3], path.join(dataDir, 'pg_wal', 'RECOVERYXLOG'));
      assert.equal(standby.code, 1, standby.stderr);
      assert.match(standby.stderr, new RegExp(`^walvault: WAL gap: ${stepSeg[3]} is missing .*this standby waits here for it`));
    } finally {
      await putBack3();
    }
  });

  it('a segment a live receiver has not stored yet while the next one is (uploads overtake each other) is waited for, not called a gap', async () => {
    const dest = path.join(work, 'fetched-in-flight');
    const local = (name: string) => path.join(archive, 'wal', name);
    const putBack3 = await takeAway(storage(), `wal/${stepSeg[3]}`);
    let putBack = putBack3;
    // A receiver holds the archive (a live lease: this test process's pid on this host).
    const lease = new ArchiveLease(storage(), 'main', path.join(work, 'state'));
    await lease.acquire();
    try {
      // WAL after the miss stored long ago: a real gap, reported at once despite the lease.
      const old = new Date(Date.now() - 10 * 60_000);
      fs.utimesSync(local(stepSeg[4]), old, old);
      assertGapLine(await fetch(stepSeg[3], dest), stepSeg[3], stepSeg[4], segSize);

      // Stored just now: wal-fetch waits for the missing segment, which arrives while it waits.
      const now = new Date();
      fs.utimesSync(local(stepSeg[4]), now, now);
      const fetching = fetch(stepSeg[3], dest);
      await new Promise((r) => setTimeout(r, 1500));
      await putBack3();
      putBack = async () => undefined;
      const r = await fetching;
      assert.deepEqual([r.code, r.stderr], [0, ''], 'served once it arrived');
      assert.ok(fs.readFileSync(dest).equals((await openArchive(archive).get(`wal/${stepSeg[3]}`))!), 'the segment itself');
    } finally {
      await lease.release();
      await putBack();
      fs.rmSync(dest, { force: true });
    }
    // Without a receiver holding the archive, the same fresh gap is reported at once.
    const putBackAgain = await takeAway(storage(), `wal/${stepSeg[3]}`);
    try {
      assertGapLine(await fetch(stepSeg[3], dest), stepSeg[3], stepSeg[4], segSize);
    } finally {
      await putBackAgain();
    }
  });

  it('a standby fed from the archive keeps polling at the end, and waits at a gap (saying so) without stopping or promoting', async () => {
    const dir = path.join(work, 'standby');
    const r = await runWalvault(['restore', '--archive', archive, '--standby', dir], {}, 300000);
    assert.equal(r.code, 0, r.stderr);
    const standby = await PgCluster.start({ major: DEFAULT_MAJOR, dataDir: dir });
    const rowsOn = async (c: PgCluster) => (await c.query(ROWS))[0];
    try {
      await waitFor(async () => (await rowsOn(standby)).n === expected.n, { timeoutMs: 120000, what: 'the standby to replay the archive' });
      // At the end it asks for the next segment every few seconds and gets exit 1; new WAL
      // archived meanwhile is replayed: it kept polling.
      await withReceiver(config, async () => {
        await primary.query(insertStep(7));
        stepSeg[7] = (await switchAndWaitArchived(primary, archive, 1, 60000)).lastName;
      });
      await waitFor(async () => (await rowsOn(standby)).n === expected.n + 20, { timeoutMs: 120000, what: 'the standby to replay a segment archived while it polled' });
      assert.doesNotMatch(fs.readFileSync(standby.logFile, 'utf8'), /walvault: /, 'nothing to say at the end of the archive');

      // A gap ahead of it: it says so at each ask, stays up and in recovery.
      await standby.stop();
      await withReceiver(config, async () => {
        for (const step of [8, 9]) {
          await primary.query(insertStep(step));
          stepSeg[step] = (await switchAndWaitArchived(primary, archive, 1, 60000)).lastName;
        }
      });
      const putBack = await takeAway(storage(), `wal/${stepSeg[8]}`);
      try {
        await standby.restart();
        await waitFor(async () => fs.readFileSync(standby.logFile, 'utf8').includes(`walvault: WAL gap: ${stepSeg[8]} is missing`), { timeoutMs: 60000, what: 'the standby to log the gap' });
        assert.equal((await standby.query('SELECT pg_is_in_recovery() AS r'))[0].r, true, 'still a standby');
        assert.equal((await rowsOn(standby)).n, expected.n + 20, 'nothing past the gap');
        assert.deepEqual(fs.readdirSync(path.join(dir, 'pg_wal')).filter((f) => f.endsWith('.history')), [], 'no new timeline');
      } finally {
        await putBack();
      }
      const all = await rowsOn(primary);
      await waitFor(async () => (await rowsOn(standby)).n === all.n, { timeoutMs: 120000, what: 'the standby to go on once the segment is back' });
      assert.deepEqual(await rowsOn(standby), all);
    } finally {
      await standby.destroy();
      removeDir(dir);
    }
  });
});

for (const kind of [undefined, ...OBJECT_STORES])
describe(`wal-fetch across a timeline switch (PostgreSQL ${DEFAULT_MAJOR}, ${kind?.name ?? 'local directory'})`, () => {
  let store: ObjectStore | undefined;
  let primary: PgCluster;
  let standby: PgCluster;
  let work = '';
  let archive = '';
  let config = '';
  let segSize = 0;
  /** The segment timeline 2 begins in (timeline 1 has only a .partial of it). */
  let switchSeg = 0n;
  let lastTl2 = '';
  let expected: { n: number; sum: string };

  const seg = (tli: number, segNo: bigint) => segmentFileName(tli, segNo, segSize);
  const fetch = (name: string, extra: string[] = []) => runWalvault(['wal-fetch', '--archive', archive, ...extra, name, path.join(work, 'fetched')]);

  before(async () => {
    work = tmpDir('walvault-gap-tli-');
    const settings = { wal_keep_size: '1024MB' };
    primary = await PgCluster.start({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, settings });
    standby = await PgCluster.start({ standbyOf: primary, settings });
    segSize = standby.walSegSize;
    if (kind) {
      store = await kind.start();
      archive = store.url(`${path.basename(work)}/main`);
    } else {
      archive = path.join(work, 'archive');
    }
    config = writeConfig(work, { main: { pg: pgConninfo(standby), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } }, 'info');
    const caughtUp = async () => {
      const end = parseLsn((await primary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
      await waitFor(async () => parseLsn((await standby.query(`SELECT pg_last_wal_replay_lsn()::text AS l`))[0].l) >= end, { timeoutMs: 30000, what: 'the standby to replay' });
    };
    await withReceiver(config, async (receiver) => {
      await primary.query('CREATE TABLE gap_rows (step int NOT NULL, pad text NOT NULL)');
      await primary.query(insertStep(1));
      // A backup on a standby starts at the standby's last restartpoint, which can lie before
      // the position the receiver's new slot began at (seen on 13): a checkpoint on the
      // primary, replayed, gives the standby a restartpoint after it.
      await primary.query('CHECKPOINT');
      await caughtUp();
      await pushBackup(['--config', config]);
      await primary.query(insertStep(2));
      await switchAndWaitArchived(primary, archive, 1, 60000);
      await primary.query(insertStep(3));
      await caughtUp();
      // Timeline 1 ends inside a segment: its last segment is archived only as .partial.
      await standby.promote();
      await receiver.waitForLog((l) => /timeline 1 ended/.test(String(l.msg)), 30000, 'the receiver to follow the switch');
      for (const step of [4, 5]) {
        await standby.query(insertStep(step));
        lastTl2 = (await switchAndWaitArchived(standby, archive, 2, 60000)).lastName;
      }
    });
    expected = (await standby.query(ROWS))[0];
    const history = (await standby.readWalFile('00000002.history')).toString('utf8');
    switchSeg = segmentNumber(parseLsn(history.split('\n').find((l) => l.startsWith('1\t'))!.split('\t')[1]), segSize);
  });

  after(async () => {
    await standby?.destroy();
    await primary?.destroy();
    await store?.destroy();
    if (work) removeDir(work);
  });

  it('a restore from a backup on timeline 1 follows the switch to timeline 2 and recovers every commit, without a gap line', async () => {
    const dir = path.join(work, 'restored');
    const r = await runWalvault(['restore', '--archive', archive, dir], {}, 300000);
    assert.equal(r.code, 0, r.stderr);
    const restored = await PgCluster.start({ major: DEFAULT_MAJOR, dataDir: dir });
    try {
      await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery to end' }).catch((err: Error) => {
        throw new Error(`${err.message}\n--- server log ---\n${restored.logTail(60)}`);
      });
      assert.deepEqual((await restored.query(ROWS))[0], expected);
      assert.doesNotMatch(fs.readFileSync(restored.logFile, 'utf8'), /walvault: /);
    } finally {
      await restored.destroy();
      removeDir(dir);
    }
  });

  it('the requests along the switch: present ones served; the parent\'s last segment, past either end and history probes exit 1 silently', async () => {
    assert.equal((await fetch(seg(1, switchSeg - 1n))).code, 0);
    assert.equal((await fetch(seg(2, switchSeg))).code, 0);
    assert.equal((await fetch('00000002.history')).code, 0);
    const lastNo = parseSegmentFileName(lastTl2, segSize).segNo;
    for (const name of [seg(1, switchSeg), seg(1, switchSeg + 1n), seg(1, lastNo + 1n), seg(2, lastNo + 1n), seg(2, lastNo + 2n), '00000003.history']) {
      const r = await fetch(name);
      assert.deepEqual([r.code, r.stderr], [1, ''], `${name}: the end, not a gap`);
    }
    // Timeline 1's last segment is served from its .partial when asked to (as before).
    const partial = await fetch(seg(1, switchSeg), ['--serve-partial']);
    assert.equal(partial.code, 0, partial.stderr);
  });

  it('a hole on timeline 1 before the switch is a gap: shown by timeline 1\'s partial, by timeline 2, or assumed when 00000002.history is missing', async () => {
    const opened = openArchive(archive);
    const storage = opened.storage;
    const hole = seg(1, switchSeg - 1n);
    const restores: Array<() => Promise<void>> = [];
    try {
      restores.push(await takeAway(storage, `wal/${hole}`));
      assertGapLine(await fetch(hole), hole, `${seg(1, switchSeg)}.partial`, segSize);

      restores.push(await takeAway(storage, `wal/${seg(1, switchSeg)}.partial`));
      const viaTl2 = await fetch(hole);
      assertGapLine(viaTl2, hole, seg(2, switchSeg), segSize);
      assert.match(viaTl2.stderr, /on timeline 2, which goes on from here/);

      restores.push(await takeAway(storage, 'wal/00000002.history'));
      const assumed = await fetch(hole);
      assertGapLine(assumed, hole, seg(2, switchSeg), segSize);
      assert.match(assumed.stderr, /whose history file 00000002\.history is missing or damaged/);
    } finally {
      for (const put of restores.reverse()) await put();
      await opened.close();
    }
  });
});
