/**
 * Issue 5, item 3: `walvault wal-push` as archive_command, beside a receiver streaming into
 * the same archive: both fill one archive (the same objects: the second writer finds the
 * first one's object identical), every archived segment equals the server's, and the
 * cluster guard and the no-overwrite rule hold for wal-push too.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chownForServer, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { assertArchiveMatchesServer, pgConninfo, runWalvault, switchAndWaitArchived, WALVAULT_BIN, WalvaultProcess, writeConfig } from '../helpers/walvault';

describe('wal-push as archive_command, beside the receiver (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let other: PgCluster;
  let work = '';
  let archive = '';
  let receiver: WalvaultProcess | undefined;

  before(async () => {
    work = tmpDir('walvault-wal-push-');
    archive = path.join(work, 'archive');
    // archive_command runs as the server's OS user: it must be able to write there, and the
    // receiver (another user when we are root) and it must read each other's objects: the
    // archive is shared through the server user's group, as the runbook says.
    fs.mkdirSync(path.join(archive, 'wal'), { recursive: true });
    chownForServer(archive);
    for (const d of [archive, path.join(archive, 'wal')]) fs.chmodSync(d, 0o2770);
    const command = `${process.execPath} ${WALVAULT_BIN} wal-push --archive ${archive} --archive-file-mode 0640 %p`;
    [cluster, other] = await Promise.all([
      PgCluster.start({ walSegSizeMiB: 1, settings: { archive_mode: 'on', archive_command: command, wal_keep_size: '1024MB' } }),
      PgCluster.start({ walSegSizeMiB: 1 }),
    ]);
    const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1 } }, 'info');
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await Promise.all([cluster?.destroy(), other?.destroy()]);
    if (work) removeDir(work);
  });

  it('archives every segment the server completes, byte for byte, alongside the receiver', async () => {
    await cluster.pgbench(['-i', '-s', '2', '-q']);
    const { lastName } = await switchAndWaitArchived(cluster, archive, 1, 60000);
    await waitFor(
      async () => {
        const s = (await cluster.query(`SELECT archived_count::int AS n, failed_count::int AS f, last_archived_wal AS w FROM pg_stat_archiver`))[0];
        if (s.f > 0) throw new Error(`archive_command failed ${s.f} times; see the server log`);
        return s.w === lastName;
      },
      { timeoutMs: 60000, what: `archive_command to archive ${lastName}` },
    );
    await assertArchiveMatchesServer(archive, cluster, work, lastName);
  });

  it('refuses another cluster\'s WAL and different bytes under an archived name, changing nothing', async () => {
    await other.query('CREATE TABLE t AS SELECT 1');
    const otherSeg = path.join(work, 'other-seg');
    const name = await other.currentWalFileName();
    fs.copyFileSync(other.walFilePath(name), otherSeg);
    const before = fs.readdirSync(path.join(archive, 'wal')).sort();
    let r = await runWalvault(['wal-push', '--archive', archive, otherSeg]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /"other-seg" is not a WAL file name/);
    const renamed = path.join(work, 'x', name);
    fs.mkdirSync(path.dirname(renamed));
    fs.copyFileSync(otherSeg, renamed);
    r = await runWalvault(['wal-push', '--archive', archive, renamed]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /belongs to database system .*use a separate archive for each cluster/);

    // Same name, other bytes (a record byte, so the page headers still pass).
    const archived = fs.readdirSync(path.join(archive, 'wal')).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort()[0];
    const altered = path.join(work, 'y', archived);
    fs.mkdirSync(path.dirname(altered));
    const bytes = await cluster.readWalFile(archived);
    bytes[5000] ^= 0xff;
    fs.writeFileSync(altered, bytes);
    r = await runWalvault(['wal-push', '--archive', archive, altered]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /already exists with different content.*refusing to overwrite/);
    assert.deepEqual(fs.readdirSync(path.join(archive, 'wal')).sort().filter((n) => before.includes(n)), before, 'nothing removed');
    const fetched = path.join(work, 'fetched-check');
    r = await runWalvault(['wal-fetch', '--archive', archive, archived, fetched]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(fetched).equals(await cluster.readWalFile(archived)), 'the archived object is the original');
  });
});
