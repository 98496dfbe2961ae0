/**
 * `walvault check` (issue 6, acceptance 1): a real archive that crossed a timeline switch
 * (the receiver streams from a standby that is then promoted), with a backup on each
 * timeline, checks clean; deleting chosen segments, a history file or a backup part gets
 * exactly those reported, with the right per-backup restorability, and exit 1; an archive
 * that cannot be read exits 2.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeEnvelope } from '../../src/archive/envelope';
import type { CheckReport } from '../../src/check/archive-check';
import { parseLsn, segmentFileName, segmentNumber } from '../../src/wal/lsn';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, withReceiver, writeConfig } from '../helpers/walvault';

const SETTINGS = { wal_keep_size: '1024MB', max_wal_size: '1024MB' };

describe(`walvault check: a timeline switch, two backups, chosen damage (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let primary: PgCluster;
  let standby: PgCluster;
  let work = '';
  let archive = '';
  let config = '';
  let segSize = 0;
  let b1 = '';
  let b2 = '';
  /** A timeline 1 segment after backup 1's stop, before the switch. */
  let tl1Middle = '';
  /** Segments inside backup 2's start..stop (timeline 2). */
  let b2Segment = '';

  const check = async (): Promise<{ code: number | null; report: CheckReport; stderr: string }> => {
    const r = await runWalvault(['check', '--archive', archive, '--json'], {}, 60000);
    assert.ok(r.code === 0 || r.code === 1, `check ran (exit ${r.code}): ${r.stderr}`);
    return { code: r.code, report: JSON.parse(r.stdout) as CheckReport, stderr: r.stderr };
  };
  /** Runs `fn` with the archive objects `keys` moved away, then puts them back. */
  const without = async <T>(keys: string[], fn: () => Promise<T>): Promise<T> => {
    const aside = path.join(work, 'aside');
    fs.mkdirSync(aside, { recursive: true });
    const moved = keys.map((k) => [path.join(archive, k), path.join(aside, k.replace(/\//g, '_'))] as const);
    for (const [from, to] of moved) fs.renameSync(from, to);
    try {
      return await fn();
    } finally {
      for (const [from, to] of moved) fs.renameSync(to, from);
    }
  };
  const backupOf = (r: CheckReport, name: string) => {
    const b = r.backups.find((x) => x.name === name);
    assert.ok(b, `backup ${name} is in the report`);
    return b;
  };

  before(async () => {
    primary = await PgCluster.start({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, settings: SETTINGS });
    standby = await PgCluster.start({ standbyOf: primary, settings: SETTINGS });
    segSize = standby.walSegSize;
    work = tmpDir('walvault-check-');
    archive = path.join(work, 'archive');
    config = writeConfig(work, { main: { pg: pgConninfo(standby), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } });
    await withReceiver(config, async (receiver) => {
      await primary.pgbench(['-i', '-s', '1', '-q']);
      // Backup 1 on timeline 1, taken from the primary into the archive the standby's receiver fills.
      b1 = await pushBackup(['--pg', pgConninfo(primary), '--archive', archive, '--state', path.join(work, 'push-state')]);
      await primary.pgbench(['-c', '2', '-t', '200', '-n']);
      const { lastName } = await switchAndWaitArchived(primary, archive, 1, 60000);
      tl1Middle = lastName;
      await primary.query(`CREATE TABLE before_switch AS SELECT g FROM generate_series(1, 1000) g`);
      const primaryEnd = parseLsn((await primary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
      await waitFor(async () => parseLsn((await standby.query(`SELECT pg_last_wal_replay_lsn()::text AS l`))[0].l) >= primaryEnd, { timeoutMs: 20000, what: 'the standby to replay' });
      await standby.promote();
      await receiver.waitForLog((l) => /timeline 1 ended/.test(String(l.msg)), 30000, 'the receiver to follow the switch');
      await standby.pgbench(['-c', '2', '-t', '200', '-n']);
      await switchAndWaitArchived(standby, archive, 2, 60000);
      // Backup 2 on timeline 2, through the site (the promoted standby).
      b2 = await pushBackup(['--config', config]);
      const meta2 = JSON.parse((await runWalvault(['backup', 'show', '--archive', archive, b2], {}, 30000)).stdout) as { startLsn: string };
      b2Segment = segmentFileName(2, segmentNumber(parseLsn(meta2.startLsn), segSize), segSize);
      await standby.pgbench(['-c', '2', '-t', '200', '-n']);
      await switchAndWaitArchived(standby, archive, 2, 60000);
    });
  });

  after(async () => {
    await standby?.destroy();
    await primary?.destroy();
    if (work) removeDir(work);
  });

  it('checks clean: both backups restorable to the newest WAL on timeline 2', async () => {
    const { code, report } = await check();
    assert.equal(code, 0, JSON.stringify(report.problems));
    assert.deepEqual(report.problems, []);
    assert.equal(report.timeline, 2);
    assert.deepEqual(report.missingSegments, []);
    assert.deepEqual(report.missingHistoryFiles, []);
    for (const name of [b1, b2]) {
      const b = backupOf(report, name);
      assert.ok(b.consistent && b.restorable, `${name}: ${b.problems.join('; ')}`);
      assert.equal(b.recoveryTimeline, 2, `${name} recovers along timeline 2`);
      assert.equal(b.recoverableTo?.lsn, report.newest?.lsn, `${name} recovers to the newest archived WAL`);
      assert.equal(b.firstMissing, null, `${name} stops at no gap`);
    }
    assert.equal(backupOf(report, b1).timeline, 1);
    const human = await runWalvault(['check', '--archive', archive], {}, 60000);
    assert.equal(human.code, 0);
    assert.match(human.stdout, new RegExp(`backup ${b1} .*restorable, recoverable to`));
  });

  it('a missing timeline 1 segment after backup 1: backup 1 stops there, backup 2 is untouched', async () => {
    const { code, report } = await without([`wal/${tl1Middle}`], check);
    assert.equal(code, 1);
    assert.deepEqual(report.missingSegments.map((r) => [r.first, r.last, r.count]), [[tl1Middle, tl1Middle, 1]]);
    const one = backupOf(report, b1);
    assert.ok(one.consistent, 'backup 1 still becomes consistent');
    assert.notEqual(one.recoverableTo?.lsn, report.newest?.lsn);
    assert.ok(one.problems.some((p) => p.includes(tl1Middle)), one.problems.join('; '));
    assert.equal(one.firstMissing, tl1Middle, 'the gap it stops at');
    const two = backupOf(report, b2);
    assert.ok(two.restorable && two.recoverableTo?.lsn === report.newest?.lsn, 'backup 2 is not affected');
    assert.equal(two.firstMissing, null);
    assert.ok(report.problems.some((p) => p === `WAL missing: ${tl1Middle}`), report.problems.join('; '));
  });

  it("two missing segments inside backup 2's WAL: one range; backup 2 is not consistent", async () => {
    const next = segmentFileName(2, segmentNumber(parseLsn(backupOf((await check()).report, b2).startLsn), segSize) + 1n, segSize);
    const { code, report } = await without([`wal/${b2Segment}`, `wal/${next}`], check);
    assert.equal(code, 1);
    assert.deepEqual(report.missingSegments.map((r) => [r.tli, r.first, r.last, r.count]), [[2, b2Segment, next, 2]]);
    const two = backupOf(report, b2);
    assert.equal(two.consistent, false);
    assert.equal(two.restorable, false);
    assert.equal(two.recoverableTo, null);
    const one = backupOf(report, b1);
    assert.ok(one.restorable, 'backup 1 itself is still restorable');
    assert.ok(one.recoverableTo && parseLsn(one.recoverableTo.lsn) < parseLsn(backupOf(report, b2).stopLsn), 'but recovers only up to the gap');
  });

  it('a missing history file is named', async () => {
    const { code, report } = await without(['wal/00000002.history'], check);
    assert.equal(code, 1);
    assert.deepEqual(report.missingHistoryFiles, ['00000002.history']);
    assert.ok(report.problems.includes('timeline history file missing: 00000002.history'), report.problems.join('; '));
  });

  it('a damaged history file is named, and counts as missing', async () => {
    const file = path.join(archive, 'wal', '00000002.history');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 2] ^= 0x01;
    fs.writeFileSync(file, bytes);
    try {
      const { code, report } = await check();
      assert.equal(code, 1);
      assert.deepEqual(report.missingHistoryFiles, ['00000002.history']);
      assert.ok(report.problems.some((p) => p.startsWith('damaged: wal/00000002.history')), report.problems.join('; '));
    } finally {
      bytes[bytes.length - 2] ^= 0x01;
      fs.writeFileSync(file, bytes);
    }
  });

  it('a misplaced history file or partial is named, and counts as missing (issue 14)', async () => {
    // A history of a later timeline (written before objects named their key) under timeline
    // 2's name, and a finished segment's object over timeline 1's last partial: both whole,
    // valid objects, caught by what they hold.
    const historyFile = path.join(archive, 'wal', '00000002.history');
    const partial = fs.readdirSync(path.join(archive, 'wal')).find((n) => n.endsWith('.partial') && n.startsWith('00000001'));
    assert.ok(partial, "timeline 1's last segment is archived as a partial");
    const partialFile = path.join(archive, 'wal', partial);
    const own = [fs.readFileSync(historyFile), fs.readFileSync(partialFile)];
    fs.writeFileSync(historyFile, encodeEnvelope(Buffer.from('1\t0/3000000\tno recovery target specified\n2\t0/5000000\tno recovery target specified\n')));
    fs.copyFileSync(path.join(archive, 'wal', tl1Middle), partialFile);
    try {
      const { code, report } = await check();
      assert.equal(code, 1);
      assert.deepEqual(report.missingHistoryFiles, ['00000002.history']);
      assert.ok(report.problems.some((p) => p.startsWith('misplaced: wal/00000002.history') && p.includes('later timeline')), report.problems.join('; '));
      assert.ok(report.problems.some((p) => p.startsWith(`misplaced: wal/${partial}`) && p.includes(`holds the WAL of ${tl1Middle}`)), report.problems.join('; '));
    } finally {
      fs.writeFileSync(historyFile, own[0]);
      fs.writeFileSync(partialFile, own[1]);
    }
  });

  it('a missing backup part makes only that backup unrestorable', async () => {
    const part = fs.readdirSync(path.join(archive, 'backups', b1, 'parts')).sort()[0];
    const key = `backups/${b1}/parts/${part}`;
    const { code, report } = await without([key], check);
    assert.equal(code, 1);
    const one = backupOf(report, b1);
    assert.deepEqual(one.missingParts, [key]);
    assert.equal(one.restorable, false);
    assert.ok(one.consistent, 'its WAL is all there');
    assert.ok(backupOf(report, b2).restorable);
    assert.deepEqual(report.missingSegments, []);
  });

  it('exits 2 with a reason when the archive cannot be checked', async () => {
    const r = await runWalvault(['check', '--archive', path.join(work, 'no-such-archive')], {}, 30000);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^walvault: check could not run: .*no cluster\.json/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });
});
