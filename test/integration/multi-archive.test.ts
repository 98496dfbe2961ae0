/**
 * A site with several archives, the reading side (issue 19, item 3 and acceptance 2): a local
 * archive the receiver filled and an S3 archive (s3rver, with its own [s3] table) holding the
 * same history, filled by `walvault copy`. With one segment deleted from the local archive and
 * another damaged there (one byte flipped), a restore and a point-in-time recovery of the site
 * read both from S3, recover exactly the primary's data, and the server's log names each
 * object and both archives. `check` reports each archive and the site as a whole; the
 * commands that write refuse the site and change nothing.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SiteCheckReport } from '../../src/check/site-check';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { S3Server } from '../helpers/s3-server';
import { pgConninfo, runWalvault, switchAndWaitArchived, withArchive, withReceiver, writeConfig } from '../helpers/walvault';

const CHECKSUM_SQL = `SELECT md5(string_agg(x, ',' ORDER BY x)) AS sum FROM (
  SELECT 'a' || sum(abalance)::text || '/' || count(*)::text AS x FROM pgbench_accounts
  UNION ALL SELECT 'h' || count(*)::text FROM pgbench_history) s`;

describe(`a site with a local and an S3 archive: reading falls back to the second (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  let primary: PgCluster;
  let s3: S3Server;
  let work = '';
  let local = '';
  let remote = '';
  let multi = '';
  let single = '';
  let backup = '';
  let atMid = '';
  let atEnd = '';
  let deleted = '';
  let damaged = '';

  before(async () => {
    work = tmpDir('walvault-multi-');
    s3 = await S3Server.start();
    s3.useInThisProcess();
    primary = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    local = path.join(work, 'archive');
    remote = s3.url(`${path.basename(work)}/site`);
    single = writeConfig(work, { main: { pg: pgConninfo(primary), archive: local, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1 } }, 'info');
    const finished: string[] = [];
    await withReceiver(single, async () => {
      await primary.pgbench(['-i', '-s', '2', '-q']);
      const push = await runWalvault(['backup', 'push', '--config', single, '--fast'], {}, 180000);
      assert.equal(push.code, 0, push.stderr.slice(-3000));
      backup = push.stdout.trim();
      // Segments only WAL replay after the backup reads, each ended by a switch.
      for (let i = 0; i < 3; i++) {
        await primary.pgbench(['-c', '2', '-t', '100', '-n']);
        finished.push((await primary.query('SELECT pg_walfile_name(pg_switch_wal()) AS f'))[0].f);
      }
      await primary.query(`SELECT pg_create_restore_point('mid')`);
      atMid = (await primary.query(CHECKSUM_SQL))[0].sum;
      await primary.pgbench(['-c', '2', '-t', '200', '-n']);
      atEnd = (await primary.query(CHECKSUM_SQL))[0].sum;
      await switchAndWaitArchived(primary, local, 1, 60000);
    });
    [deleted, damaged] = finished;
    const copy = await runWalvault(['copy', '--from', local, '--to', remote], {}, 180000);
    assert.equal(copy.code, 0, copy.stdout + copy.stderr);

    // The site names both, the S3 one with its own table (credentials and endpoint there).
    const { endpoint, accessKeyId, secretAccessKey, region } = s3.settings();
    multi = path.join(work, 'multi.json');
    const localMode = JSON.parse(fs.readFileSync(single, 'utf8')).sites.main.archive_file_mode;
    fs.writeFileSync(
      multi,
      JSON.stringify({
        log: { level: 'info' },
        sites: {
          multi: {
            pg: pgConninfo(primary),
            state: path.join(work, 'state-multi'),
            backup_interval_hours: 0,
            check_interval_hours: 0,
            archives: [
              { url: local, ...(localMode ? { archive_file_mode: localMode } : {}) },
              { url: remote, s3: { endpoint, access_key_id: accessKeyId, secret_access_key: secretAccessKey, region } },
            ],
          },
        },
      }),
    );

    // The damage: one segment gone, one with a byte flipped (replaced, not written through:
    // the receiver may have hard-linked it to its spool file).
    fs.rmSync(path.join(local, 'wal', deleted));
    const file = path.join(local, 'wal', damaged);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 5000] ^= 0x01;
    fs.unlinkSync(file);
    fs.writeFileSync(file, bytes, { mode: 0o640 });
  });

  after(async () => {
    await primary?.destroy();
    await s3?.destroy();
    if (work) removeDir(work);
  });

  /** Restores the site into a new directory, starts it, and returns the data's checksum once recovery ended, with the server's log. */
  const restoreAndRecover = async (name: string, extra: string[]): Promise<{ sum: string; log: string }> => {
    const target = path.join(work, name);
    const r = await runWalvault(['restore', '--config', multi, ...extra, target], {}, 300000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stdout, new RegExp(`restored backup ${backup} `));
    const restored = await PgCluster.start({ dataDir: target });
    try {
      await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: `recovery of ${name} to end` });
      return { sum: (await restored.query(CHECKSUM_SQL))[0].sum, log: fs.readFileSync(restored.logFile, 'utf8') };
    } finally {
      await restored.destroy();
      removeDir(target);
    }
  };

  /** The server's log names each object, the archive that failed it and the one it came from. */
  const assertSaysSo = (log: string) => {
    const line = (name: string) => log.split('\n').find((l) => l.includes(`wal/${name}:`)) ?? '';
    assert.match(line(deleted), new RegExp(`missing in file://${local}; read from s3://`), `a line for ${deleted} in:\n${log.slice(-4000)}`);
    assert.match(line(damaged), new RegExp(`unreadable in file://${local} \\(.*\\); read from s3://`), `a line for ${damaged} in:\n${log.slice(-4000)}`);
  };

  it('a restore of the site recovers to the end, reading the missing and the damaged segment from S3, and says so', async () => {
    const { sum, log } = await restoreAndRecover('restored-end', []);
    assert.equal(sum, atEnd, "the restored data is the primary's at the end");
    assertSaysSo(log);
  });

  it('a point-in-time recovery of the site does too', async () => {
    const { sum, log } = await restoreAndRecover('restored-mid', ['--target-name', 'mid', '--target-action', 'promote']);
    assert.equal(sum, atMid, "the restored data is the primary's at the restore point");
    assertSaysSo(log);
  });

  it('check reports each archive and the site as a whole, and exits by the whole', async () => {
    const r = await runWalvault(['check', '--config', multi, '--json'], {}, 120000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as SiteCheckReport;
    assert.ok(report.ok && report.backups.find((b) => b.name === backup)?.restorable, JSON.stringify(report.problems));
    const [own, copy] = report.archives;
    assert.equal(own.archive, `file://${local}`);
    assert.ok(own.report && !own.report.ok && own.report.problems.some((p) => p.includes(deleted)), JSON.stringify(own));
    assert.ok(copy.report?.ok, JSON.stringify(copy));
    assert.deepEqual(report.restorableFrom[backup].length, 2, JSON.stringify(report.restorableFrom));
    const human = await runWalvault(['check', '--config', multi], {}, 120000);
    assert.equal(human.code, 0);
    assert.match(human.stdout, new RegExp(`backup ${backup}: restorable from file://${local}, s3://.*; from the site as a whole`));
  });

  it('run refuses the site while another receiver holds one of its archives, naming that archive, before creating anything', async () => {
    await withReceiver(single, async () => {
      const r = await runWalvault(['run', '--config', multi], {}, 60000);
      assert.notEqual(r.code, 0, 'refused');
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0], new RegExp(`archive file://${local.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} has another writer: .*; one archive takes one receiver`), lines[0]);
    });
    assert.equal((await primary.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'walvault_multi'`))[0].n, 0, 'no slot created');
    assert.ok(!fs.existsSync(path.join(work, 'state-multi', 'ledger.db')), 'no ledger');
  });

  it('the commands that write refuse the site with one line, and change nothing', async () => {
    const keys = async () => [...(await withArchive(local, async (a) => (await a.storage.list('')).map((o) => o.key))), ...(await withArchive(remote, async (a) => (await a.storage.list('')).map((o) => o.key)))];
    const before = await keys();
    const segment = path.join(work, '000000010000000000000099');
    fs.writeFileSync(segment, Buffer.alloc(1 << 20));
    for (const args of [
      ['backup', 'delete', '--config', multi, '--everything', '--confirm'],
      ['wal-push', '--config', multi, segment],
      ['check', '--config', multi, '--repair'],
      // Into the site: it would have to write every archive of it.
      ['copy', '--config', multi, '--from', remote, '--to', 'multi'],
    ]) {
      const r = await runWalvault(args, {}, 60000);
      assert.notEqual(r.code, 0, `${args.join(' ')} refused`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      for (const s of ['site multi', 'writes one archive only', 'one archive for writing']) assert.ok(lines[0].includes(s), `${args.join(' ')}: ${lines[0]}`);
    }
    assert.deepEqual(await keys(), before, 'nothing written or deleted');
    assert.equal((await primary.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'walvault_multi'`))[0].n, 0, 'no slot created');
  });

  it("with the S3 archive down, backup list and a restore of the site's latest backup go on from the local one, naming S3", async () => {
    await s3.stop();
    try {
      const down = /s3:\/\/.* did not answer \(.+\): what only it holds is not listed; reading from the other archives/;
      const list = await runWalvault(['backup', 'list', '--config', multi], {}, 120000);
      assert.equal(list.code, 0, list.stderr.slice(-2000));
      assert.ok(list.stdout.includes(backup), list.stdout);
      assert.match(list.stderr, down);
      const target = path.join(work, 'restored-s3-down');
      const r = await runWalvault(['restore', '--config', multi, target], {}, 300000);
      assert.equal(r.code, 0, r.stderr.slice(-3000));
      assert.match(r.stdout, new RegExp(`restored backup ${backup} `));
      assert.match(r.stderr, down);
      assert.ok(fs.existsSync(path.join(target, 'global', 'pg_control')), 'restored to the end: pg_control in place');
      removeDir(target);
    } finally {
      await s3.restart();
    }
  });
});
