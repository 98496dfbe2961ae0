/**
 * A site writing to two archives, a local directory and S3 (s3rver) (issue 19, items 1-2 and
 * acceptance 1). Under a pgbench run S3 is stopped for 60 s, then started again:
 *   - by default (every archive must hold WAL) the reported flush position stops at what S3
 *     holds, so the slot keeps the server's WAL; S3 is caught up from the spool afterwards;
 *   - with `archived_quorum = 1` the slot moves on with the local archive, the spool keeps
 *     what S3 lacks (the spool alert names S3), and S3 is caught up afterwards.
 * Either way both archives end complete, every segment byte-identical to the server's, and
 * the metrics, /health-style problems and `status` show each archive on its own; a base
 * backup of the site lands in both, and the S3 archive checks out on its own.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { S3Server } from '../helpers/s3-server';
import { archivedSegments, assertArchiveMatchesServer, listenHttp, pgConninfo, runWalvault, switchAndWaitArchived, WalvaultProcess } from '../helpers/walvault';
import { parseLsn } from '../../src/wal/lsn';

const OUTAGE_MS = 60_000;

/** The value of `name` with exactly these labels in a Prometheus text file, or undefined. */
function metric(file: string, name: string, labels: string): number | undefined {
  if (!fs.existsSync(file)) return undefined;
  const line = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

for (const quorum of [undefined, 1] as const)
describe(`a site writing to a local and an S3 archive, S3 down for 60 s under pgbench (${quorum === undefined ? 'default: every archive' : 'archived_quorum = 1'})`, () => {
  let s3: S3Server;
  let cluster: PgCluster;
  let work: string;
  let started: WalvaultProcess | undefined;

  before(async () => {
    s3 = await S3Server.start();
    s3.useInThisProcess();
    cluster = await PgCluster.start({
      walSegSizeMiB: 1,
      // The server keeps its WAL files for the comparison at the end (the slot's position is
      // what the test watches, and wal_keep_size does not move it).
      settings: { wal_keep_size: '2048MB', max_wal_size: '4096MB', wal_sender_timeout: '10s' },
    });
    work = tmpDir('walvault-multi-write-');
  });

  after(async () => {
    await started?.kill9();
    await cluster?.destroy();
    await s3?.destroy();
    if (work) removeDir(work);
  });

  it('keeps both archives complete; the slot waits for S3 by default, or moves on with the quorum while the spool keeps what S3 lacks', async () => {
    const local = path.join(work, 'archive');
    const remote = s3.url(`${path.basename(work)}/site`);
    const state = path.join(work, 'state');
    const metricsFile = path.join(state, 'metrics.prom');
    const { endpoint, accessKeyId, secretAccessKey, region } = s3.settings();
    const config = path.join(work, 'walvault.json');
    fs.writeFileSync(
      config,
      JSON.stringify({
        log: { level: 'info' },
        sites: {
          main: {
            pg: pgConninfo(cluster),
            state,
            status_interval_seconds: 1,
            partial_interval_seconds: 2,
            spool_alert_mib: 1,
            backup_interval_hours: 0,
            check_interval_hours: 0,
            ...(quorum === undefined ? {} : { archived_quorum: quorum }),
            archives: [{ url: local }, { url: remote, s3: { endpoint, access_key_id: accessKeyId, secret_access_key: secretAccessKey, region } }],
          },
        },
      }),
    );
    const port = await freePort();
    listenHttp(config, port);
    const localLabel = `site="main",archive="file://${local}"`;
    const remoteLabel = (text: string) => new RegExp(`^walvault_archive_archived_lsn_bytes\\{site="main",archive="(s3://[^"]+)"\\} `, 'm').exec(text)?.[1];
    const receiver = WalvaultProcess.start(['run', '--config', config]);
    started = receiver;
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await cluster.pgbench(['-i', '-s', '2', '-q']);
    const load = cluster.pgbenchProcess(['-c', '2', '-T', '600', '-n', '-R', '300']);
    const slotLsn = async () => parseLsn((await cluster.query(`SELECT restart_lsn::text AS l FROM pg_replication_slots WHERE slot_name = 'walvault_main'`))[0].l);
    const serverLsn = async () => parseLsn((await cluster.query('SELECT pg_current_wal_lsn()::text AS l'))[0].l);
    let s3Label = '';
    try {
      await waitFor(async () => (await archivedSegments(remote)).length >= 3 && (await archivedSegments(local)).length >= 3, { timeoutMs: 60000, what: 'a few segments in both archives' });
      await waitFor(() => (s3Label = remoteLabel(fs.readFileSync(metricsFile, 'utf8')) ?? '') !== '', { timeoutMs: 10000, what: 'per-archive metrics' });
      const s3Labels = `site="main",archive="${s3Label}"`;

      await s3.stop();
      const linesBefore = receiver.lines.length;
      const slotAtStop = await slotLsn();
      await new Promise((r) => setTimeout(r, OUTAGE_MS));
      const slotAtEnd = await slotLsn();
      const serverAtEnd = await serverLsn();
      const localHeld = metric(metricsFile, 'walvault_archive_archived_lsn_bytes', localLabel) ?? 0;
      const s3Held = metric(metricsFile, 'walvault_archive_archived_lsn_bytes', s3Labels) ?? 0;
      assert.ok(receiver.running, `walvault keeps running; stderr:\n${receiver.stderr.slice(-2000)}`);
      assert.equal(metric(metricsFile, 'walvault_archive_storage_failing', s3Labels), 1, 'the metrics file shows the S3 archive failing');
      assert.equal(metric(metricsFile, 'walvault_archive_storage_failing', localLabel), 0, 'and the local one working');
      assert.ok(localHeld > s3Held + 2 * 1048576, `the local archive went on (${localHeld} vs S3 ${s3Held})`);
      const onS3 = receiver.lines.slice(linesBefore).filter((l) => l.level === 50 && /^archiving \S+ to s3:\/\/.* failed: /.test(String(l.msg)));
      assert.ok(onS3.length >= 1, 'the failure is logged naming the S3 archive');
      const status = await runWalvault(['status', '--config', config], {}, 60000);
      assert.match(status.stdout, new RegExp(`archive ${s3Label.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: archived [0-9A-F]+/[0-9A-F]+, \\d+ segment\\(s\\) queued, failing for \\d+ s`), status.stdout);
      assert.match(status.stdout, new RegExp(`problem: archiving to ${s3Label.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} has been failing`), status.stdout);
      // /health names the failing archive, and only that one.
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      const said = await health.text();
      assert.equal(health.status, 503, said);
      assert.ok(said.includes(`archiving to ${s3Label} has been failing for`), said);
      assert.ok(!said.includes(`archiving to file://${local}`), said);
      if (quorum === undefined) {
        // Every archive must hold the WAL: the slot keeps it on the server while S3 is down.
        assert.ok(slotAtEnd <= BigInt(s3Held) + 1048576n, `the slot stays at what S3 holds (slot ${slotAtEnd}, S3 ${s3Held})`);
        assert.ok(serverAtEnd - slotAtEnd > 2n * 1048576n, 'while the server writes on');
      } else {
        // One archive is enough: the slot follows the local archive, past what S3 holds.
        assert.ok(slotAtEnd > slotAtStop + 2n * 1048576n, `the slot moved on during the outage (${slotAtStop} -> ${slotAtEnd})`);
        assert.ok(slotAtEnd > BigInt(s3Held), 'past what S3 holds');
        const alert = receiver.lines.find((l) => l.level === 50 && String(l.msg).startsWith('unarchived WAL is past spool_alert_mib: archive s3://'));
        assert.ok(alert, `the spool alert names the lagging archive: ${receiver.lines.filter((l) => String(l.msg).includes('spool_alert')).map((l) => l.msg).join(' | ')}`);
        // What S3 lacks is still in the spool.
        const spooled = fs.readdirSync(path.join(state, 'spool')).filter((n) => /^[0-9A-F]{24}$/.test(n));
        assert.ok(spooled.length >= 2, `the spool keeps the segments S3 lacks (${spooled.length})`);
      }

      await s3.restart();
      await receiver.waitForLog((l) => l.msg === `archiving to ${s3Label} works again`, 90000, 'the S3 archive to recover');
      await waitFor(() => metric(metricsFile, 'walvault_archive_storage_failing', s3Labels) === 0, { timeoutMs: 20000, what: 'the metrics to show the recovery' });
    } finally {
      load.kill('SIGINT');
      await new Promise((r) => (load.exitCode === null ? load.once('exit', r) : r(undefined)));
    }
    const { lastName } = await switchAndWaitArchived(cluster, remote, 1, 180000).catch((err: Error) => {
      err.message += `\n--- walvault stderr (tail) ---\n${receiver.stderr.slice(-3000)}`;
      throw err;
    });
    await switchAndWaitArchived(cluster, local, 1, 60000);
    // Caught up: both archives' positions reach the last switch, and the spool is empty of it.
    await waitFor(() => (metric(metricsFile, 'walvault_archive_upload_queue_segments', `site="main",archive="${s3Label}"`) ?? 1) === 0, { timeoutMs: 60000, what: 'the S3 queue to drain' });
    // Nothing lost in either: every segment from the first to the last, equal to the server's.
    const inLocal = await assertArchiveMatchesServer(local, cluster, path.join(work, 'cmp-local'), lastName);
    const inS3 = await assertArchiveMatchesServer(remote, cluster, path.join(work, 'cmp-s3'), lastName);
    assert.deepEqual(inS3.names.filter((n) => n <= lastName), inLocal.names.filter((n) => n <= lastName), 'the same segments in both archives');
    if (quorum === undefined) {
      // A base backup of the site lands in both archives (taken into the first, copied verified).
      const push = await runWalvault(['backup', 'push', '--config', config, '--fast'], {}, 240000);
      assert.equal(push.code, 0, push.stderr.slice(-3000));
      const name = push.stdout.trim();
      for (const url of [local, remote]) {
        const list = await runWalvault(['backup', 'list', '--archive', url, '--json'], {}, 60000);
        assert.equal(list.code, 0, list.stderr);
        assert.ok((JSON.parse(list.stdout) as Array<{ name: string }>).some((b) => b.name === name), `backup ${name} is listed in ${url}`);
      }
      const check = await runWalvault(['check', '--archive', remote], {}, 120000);
      assert.equal(check.code, 0, `the S3 archive checks out on its own: ${check.stdout}${check.stderr}`);
      // A backup that cannot reach the second archive: complete in the first, and the push
      // says in one line which archive lacks it and how to fill it.
      await s3.stop();
      const failed = await runWalvault(['backup', 'push', '--config', config, '--fast'], {}, 240000);
      await s3.restart();
      assert.notEqual(failed.code, 0, 'the push reports the archive it could not fill');
      // (Its progress is logged on stderr too, as JSON lines off a terminal.)
      const lines = failed.stderr.trim().split('\n').filter((l) => l.startsWith('walvault: '));
      assert.equal(lines.length, 1, `one error line: ${failed.stderr}`);
      assert.match(lines[0], /^walvault: .*backup \S+: copying backups from \S+ to s3:\/\/\S+ at \S+ failed: .*; the backup is complete in \S+; fill the others with walvault copy/, lines[0]);
      const second = failed.stdout.trim();
      const inFirst = await runWalvault(['backup', 'list', '--archive', local, '--json'], {}, 60000);
      assert.ok((JSON.parse(inFirst.stdout) as Array<{ name: string }>).some((b) => b.name === second), `backup ${second} is complete in the first archive`);
    }
    const exit = await receiver.stop('SIGTERM');
    assert.equal(exit.code, 0, `clean exit; stderr:\n${receiver.stderr.slice(-2000)}`);
    const leftInSpool = fs.readdirSync(path.join(state, 'spool')).filter((n) => /^[0-9A-F]{24}$/.test(n) && n <= lastName);
    assert.deepEqual(leftInSpool, [], 'the spool let go of every segment both archives hold');
  });
});
