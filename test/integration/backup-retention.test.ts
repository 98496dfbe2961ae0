/**
 * Issue 4, acceptance 3 and 4, and the daemon's schedule:
 * - kill -9 during a backup leaves nothing listed, the next backup succeeds at once, and
 *   retention later removes the leftover;
 * - retention keeping 2 after 4 backups deletes exactly the two older backups and the WAL
 *   only they needed; the dry run prints the same list without deleting;
 * - the daemon takes backups on its interval and applies its retention policy.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { scanBackups, type BackupMetadata } from '../../src/backup/catalog';
import { isSegmentFileName, parseLsn, parseSegmentFileName, segmentNumber } from '../../src/wal/lsn';
import { snapshotTree } from '../helpers/errors-fixtures';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, startStreamingSite, withArchive, WalvaultProcess, writeConfig } from '../helpers/walvault';

async function list(config: string): Promise<BackupMetadata[]> {
  const r = await runWalvault(['backup', 'list', '--config', config, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const names = (JSON.parse(r.stdout) as Array<{ name: string }>).map((b) => b.name);
  const out: BackupMetadata[] = [];
  for (const name of names) {
    const s = await runWalvault(['backup', 'show', name, '--config', config]);
    assert.equal(s.code, 0, s.stderr);
    out.push(JSON.parse(s.stdout));
  }
  return out;
}

async function push(config: string, extra: string[] = []): Promise<string> {
  const r = await runWalvault(['backup', 'push', '--config', config, '--fast', ...extra], {}, 180000);
  assert.equal(r.code, 0, `backup push failed:\n${r.stderr.slice(-3000)}`);
  return r.stdout.trim();
}

function walObjects(archive: string): string[] {
  const dir = path.join(archive, 'wal');
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

describe('kill -9 during a backup, then retention (PostgreSQL 15, local directory)', () => {
  let cluster: PgCluster;
  let work = '';
  let receiver: WalvaultProcess | undefined;
  let config = '';
  let archive = '';

  before(async () => {
    work = tmpDir('walvault-retention-');
    cluster = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    ({ config, archive, receiver } = await startStreamingSite(cluster, work));
    await cluster.pgbench(['-i', '-s', '4', '-q']);
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  let leftover = '';
  const backups: string[] = [];

  it('kill -9 during a backup leaves nothing listed, and the next backup succeeds at once', async () => {
    // Rate-limited so the kill lands mid-stream, after some parts are stored.
    const p = WalvaultProcess.start(['backup', 'push', '--config', config, '--fast', '--max-rate', '2048']);
    const entry = await waitFor(
      async () => {
        if (!p.running) throw new Error(`push ended before the kill:\n${p.stderr.slice(-3000)}`);
        const entries = await withArchive(archive, (a) => scanBackups(a));
        return entries.find((e) => e.keys.some((k) => k.includes('/parts/'))) ?? false;
      },
      { timeoutMs: 60000, intervalMs: 100, what: 'a first stored part' },
    );
    await p.kill9();
    leftover = entry.name;
    assert.deepEqual(await list(config), [], 'nothing is listed after the kill');
    const again = await withArchive(archive, (a) => scanBackups(a));
    assert.ok(again.some((e) => e.name === leftover && !e.complete), 'the leftover is there, incomplete');

    const started = Date.now();
    backups.push(await push(config));
    assert.ok(Date.now() - started < 55000, 'the dead push held no lease worth waiting for');
    assert.deepEqual((await list(config)).map((b) => b.name), backups);
  });

  it('keeping 2 of 4 deletes exactly the two older backups, the leftover and the WAL only they needed; the dry run lists the same', async () => {
    for (let i = 0; i < 3; i++) {
      await cluster.pgbench(['-c', '2', '-t', '300', '-n']);
      await cluster.switchWal();
      backups.push(await push(config));
    }
    const all = await list(config);
    assert.deepEqual(all.map((b) => b.name), backups, 'four complete backups, oldest first');
    const [b1, b2, b3] = all;
    const segSize = b3.walSegmentSize;
    const keepFrom = segmentNumber(parseLsn(b3.startLsn), segSize);
    const segNo = (n: string) => parseSegmentFileName(n.replace(/\.partial$/, ''), segSize).segNo;
    const walBefore = walObjects(archive);
    assert.ok(walBefore.some((n) => isSegmentFileName(n) && segNo(n) < keepFrom), 'there is WAL older than the third backup to delete');
    const backupsDir = path.join(archive, 'backups');
    const treeBefore = snapshotTree(backupsDir);

    const dry = await runWalvault(['backup', 'delete', '--retain', '2', '--config', config]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(snapshotTree(backupsDir), treeBefore, 'the dry run deleted nothing');
    const walAfterDry = walObjects(archive);
    for (const n of walBefore) assert.ok(walAfterDry.includes(n), `the dry run left ${n}`);
    assert.match(dry.stdout, /dry run: nothing was deleted/);

    const real = await runWalvault(['backup', 'delete', '--retain', '2', '--config', config, '--confirm']);
    assert.equal(real.code, 0, real.stderr);
    const items = (out: string, verb: string) =>
      out
        .split('\n')
        .filter((l) => l.startsWith(verb + ' '))
        .map((l) => l.slice(verb.length + 1).replace(/^WAL: [0-9]+ objects, .*$/, 'WAL'));
    const dryItems = items(dry.stdout, 'would delete');
    assert.deepEqual(items(real.stdout, 'deleting'), dryItems, 'the dry run printed the same list');
    const named = dryItems.filter((l) => l !== 'WAL').map((l) => l.split(' ')[l.startsWith('incomplete') ? 2 : 1]);
    assert.deepEqual(named.sort(), [b1.name, b2.name, leftover].sort(), 'exactly the two older backups and the leftover');
    assert.ok(dryItems.includes('WAL'), 'the WAL only they needed is part of the plan');

    assert.deepEqual((await list(config)).map((b) => b.name), [b3.name, all[3].name]);
    const remaining = await withArchive(archive, (a) => scanBackups(a));
    assert.deepEqual(remaining.map((e) => e.name).sort(), [b3.name, all[3].name].sort(), 'no object of a deleted backup is left');
    const walAfter = walObjects(archive);
    const segmentsAfter = walAfter.filter((n) => isSegmentFileName(n) || n.endsWith('.partial'));
    assert.ok(segmentsAfter.every((n) => segNo(n) >= keepFrom), 'no WAL older than the third backup is left');
    for (const n of walBefore) {
      const kept = !(isSegmentFileName(n.replace(/\.partial$/, '')) && segNo(n) < keepFrom);
      if (kept) assert.ok(walAfter.includes(n), `${n} (needed by a retained backup) is still there`);
    }
    assert.ok(walAfter.some((n) => isSegmentFileName(n) && segNo(n) === keepFrom), 'the third backup keeps its start segment');
  });

  it('--everything deletes every backup and all WAL, after a dry run that deletes nothing', async () => {
    const before = walObjects(archive).filter((n) => isSegmentFileName(n));
    const dry = await runWalvault(['backup', 'delete', '--everything', '--config', config]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal((await list(config)).length, 2, 'the dry run deleted nothing');
    assert.match(dry.stdout, /would delete WAL: [0-9]+ objects/);
    const real = await runWalvault(['backup', 'delete', '--everything', '--config', config, '--confirm']);
    assert.equal(real.code, 0, real.stderr);
    assert.deepEqual(await list(config), []);
    assert.deepEqual(await withArchive(archive, (a) => scanBackups(a)), [], 'no backup object is left');
    const after = walObjects(archive);
    for (const n of before) assert.ok(!after.includes(n), `${n} was deleted`);
  });
});

describe('the daemon takes backups on its interval and applies retention (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let work = '';
  let receiver: WalvaultProcess | undefined;

  before(async () => {
    work = tmpDir('walvault-schedule-');
    cluster = await PgCluster.start({ walSegSizeMiB: 1 });
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('backs up every interval and keeps the newest two', async () => {
    const archive = path.join(work, 'archive');
    const config = writeConfig(
      work,
      {
        main: {
          pg: pgConninfo(cluster),
          archive,
          state: path.join(work, 'state'),
          partial_interval_seconds: 1,
          status_interval_seconds: 1,
          backup_interval_hours: 8 / 3600,
          backup_fast_checkpoint: true,
          retain_backups: 2,
        },
      },
      'info',
    );
    receiver = WalvaultProcess.start(['run', '--config', config]);
    const completed = () => receiver!.lines.filter((l) => l.msg === 'base backup complete').length;
    await waitFor(async () => completed() >= 3, { timeoutMs: 120000, what: 'three scheduled backups' });
    await waitFor(async () => (await list(config)).length === 2, { timeoutMs: 30000, what: 'retention to leave two backups' });
    assert.ok(receiver.lines.some((l) => l.msg === 'deleted backup'), 'retention deleted the oldest');
    assert.ok(receiver.running, 'the daemon keeps running');
    const exit = await receiver.stop('SIGTERM', 60000);
    assert.equal(exit.code, 0, receiver.stderr.slice(-3000));
  });
});
