/**
 * `npm run bench`, part five: `walvault check` and `walvault verify` on an archive of
 * BENCH_CHECK_SEGMENTS (default 1000) WAL segments plus a base backup, on s3rver (a real
 * S3-protocol server over a socket). One PostgreSQL 15 cluster with 1 MiB segments; each
 * segment is a row and a pg_switch_wal(), archived by a walvault receiver (zstd).
 * Reports each command's wall time, objects per second and peak RSS. No target: the issue
 * asks for the figures.
 */
import * as path from 'node:path';
import { PgCluster, removeDir, tmpDir, waitFor } from '../test/helpers/pg-cluster';
import { S3Server } from '../test/helpers/s3-server';
import { pgConninfo, switchAndWaitArchived, WALVAULT_BIN, WalvaultProcess, writeConfig } from '../test/helpers/walvault';
import { fmt, machineFacts, printTable, saveResults, spawnTimed } from './bench-util';

const SEGMENTS = Number(process.env.BENCH_CHECK_SEGMENTS ?? 1000);

async function main(): Promise<number> {
  const startedAt = new Date();
  const work = tmpDir('walvault-check-bench-');
  let cluster: PgCluster | undefined;
  let s3: S3Server | undefined;
  let receiver: WalvaultProcess | undefined;
  try {
    console.log(`check/verify bench: ${SEGMENTS} segments of 1 MiB and a base backup on s3rver`);
    s3 = await S3Server.start();
    s3.useInThisProcess();
    cluster = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: `${SEGMENTS + 200}MB`, max_wal_size: '2GB' } });
    const archive = s3.url('bench/main');
    const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), compression: 'zstd', status_interval_seconds: 1 } }, 'warn');
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await waitFor(async () => (await cluster!.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE active`))[0].n > 0, { timeoutMs: 60000, what: 'the receiver to stream' });
    await cluster.pgbench(['-i', '-s', '2', '-q']);
    await spawnTimed(process.execPath, [WALVAULT_BIN, 'backup', 'push', '--config', config, '--fast'], {});
    await cluster.query('CREATE TABLE tick (n int)');
    for (let i = 0; i < SEGMENTS; i++) await cluster.query(`INSERT INTO tick VALUES (${i}); SELECT pg_switch_wal();`);
    await switchAndWaitArchived(cluster, archive, 1, 1800000);
    await receiver.stop('SIGTERM', 60000);
    receiver = undefined;

    const check = await spawnTimed(process.execPath, [WALVAULT_BIN, 'check', '--archive', archive, '--json'], {});
    const report = JSON.parse(check.stdout) as { ok: boolean; backups: unknown[] };
    const verify = await spawnTimed(process.execPath, [WALVAULT_BIN, 'verify', '--archive', archive, '--json'], {});
    const v = JSON.parse(verify.stdout) as { objects: number; storedBytes: number; ok: boolean };
    console.log('');
    printTable([
      ['command', 'seconds', 'objects/s', 'peak RSS MiB', 'CPU s', 'result'],
      ['walvault check', fmt(check.seconds), fmt(v.objects / check.seconds, 0), fmt(check.peakRssMiB), fmt(check.cpuSeconds), report.ok ? 'clean' : 'problems'],
      ['walvault verify', fmt(verify.seconds), fmt(v.objects / verify.seconds, 0), fmt(verify.peakRssMiB), fmt(verify.cpuSeconds), v.ok ? 'all good' : 'bad objects'],
    ]);
    console.log(`  ${v.objects} objects, ${fmt(v.storedBytes / 1048576)} MiB stored`);
    const file = saveResults(
      'check',
      {
        bench: 'check',
        startedAt: startedAt.toISOString(),
        machine: machineFacts(),
        segments: SEGMENTS,
        objects: v.objects,
        storedBytes: v.storedBytes,
        check: { ...check, stdout: undefined, ok: report.ok },
        verify: { ...verify, stdout: undefined, ok: v.ok },
      },
      startedAt,
    );
    console.log(`  results written to ${path.relative(process.cwd(), file) || file}`);
    return report.ok && v.ok ? 0 : 1;
  } catch (err) {
    console.error(`\ncheck bench failed: ${(err as Error).stack ?? String(err)}`);
    return 1;
  } finally {
    await receiver?.stop('SIGTERM', 30000).catch(() => undefined);
    await cluster?.destroy().catch(() => undefined);
    await s3?.destroy().catch(() => undefined);
    removeDir(work);
  }
}

main().then((code) => process.exit(code));
