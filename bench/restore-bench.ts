/**
 * `npm run bench`, part four: restore and recovery.
 *
 *   1. One PostgreSQL 15 cluster (16 MiB segments) with pgbench data (BENCH_RESTORE_SCALE,
 *      default 135: about 2 GiB), backed up with zstd level 1 by walvault (server-side
 *      compression, as the S3 default would), by pgBackRest (process-max 2) and by
 *      `pg_basebackup -Ft --compress=client-zstd:1`.
 *   2. Restore throughput: `walvault restore` vs `pgbackrest restore` (process-max 2) vs
 *      extracting the pg_basebackup tar with `tar` (zstd); database size / wall time, the
 *      best of BENCH_RESTORE_ROUNDS (default 3) rounds taken in turn, each from the same start.
 *   3. Recovery: BENCH_RECOVERY_WAL_MB (default 1024) of WAL written after a backup, archived
 *      by a walvault receiver into a local directory (the local default: uncompressed);
 *      the same backup restored twice, once recovering through `walvault wal-fetch`
 *      (restore's default restore_command, prefetch 8) and once through `cp` from a directory
 *      holding the same segments; time from start to the end of recovery.
 *   Targets: restore at least 1.2x pgBackRest's throughput; recovery through wal-fetch at
 *   least 0.8x the speed of the local copy.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { chownForServer, clientBin, PgCluster, removeDir, tmpDir, waitFor } from '../test/helpers/pg-cluster';
import { pgConninfo, switchAndWaitArchived, WALVAULT_BIN, WalvaultProcess, writeConfig } from '../test/helpers/walvault';
import { fmt, machineFacts, pgBackRestConfig, printTable, saveResults, spawnTimed } from './bench-util';

const MiB = 1024 * 1024;
const SCALE = Number(process.env.BENCH_RESTORE_SCALE ?? 135);
const WAL_MB = Number(process.env.BENCH_RECOVERY_WAL_MB ?? 1024);
const PGBACKREST = '/usr/bin/pgbackrest';
const RESTORE_TARGET = 1.2;
const ROUNDS = Number(process.env.BENCH_RESTORE_ROUNDS ?? 3);
const SETTLE_MS = 3000;
const RECOVERY_TARGET = 0.8;

async function startReceiver(work: string, tag: string, cluster: PgCluster, compression: string): Promise<{ proc: WalvaultProcess; config: string; archive: string }> {
  const dir = path.join(work, tag);
  fs.mkdirSync(dir, { recursive: true });
  const archive = path.join(dir, 'archive');
  const config = writeConfig(dir, { main: { pg: pgConninfo(cluster), archive, state: path.join(dir, 'state'), slot: `bench_${tag}`, compression, status_interval_seconds: 1, partial_interval_seconds: 1 } }, 'warn');
  const proc = WalvaultProcess.start(['run', '--config', config]);
  await waitFor(async () => {
    if (!proc.running) throw new Error(`walvault run exited:\n${proc.stderr}`);
    return (await cluster.query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_${tag}'`))[0]?.active === true;
  }, { timeoutMs: 60000, what: `receiver ${tag} to stream` });
  return { proc, config, archive };
}

/** Starts PostgreSQL on a restored directory and times it to the end of recovery. */
async function timeRecovery(dataDir: string): Promise<number> {
  const started = performance.now();
  const server = await PgCluster.start({ dataDir });
  try {
    await waitFor(async () => (await server.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 1800000, intervalMs: 100, what: `recovery of ${dataDir}` });
    return (performance.now() - started) / 1000;
  } finally {
    await server.destroy();
  }
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const work = tmpDir('walvault-restore-bench-');
  let cluster: PgCluster | undefined;
  const receivers: WalvaultProcess[] = [];
  try {
    if (!fs.existsSync(PGBACKREST)) throw new Error(`pgBackRest is not installed (${PGBACKREST}); apt-get install pgbackrest`);
    console.log(`restore bench: PostgreSQL 15, pgbench scale ${SCALE}, recovery of ${WAL_MB} MiB of WAL`);
    cluster = await PgCluster.start({ walSegSizeMiB: 16, settings: { max_wal_size: '4GB', wal_keep_size: `${WAL_MB + 2048}MB`, archive_mode: 'on', archive_command: '/bin/true' } });
    await cluster.pgbench(['-i', '-s', String(SCALE), '-q']);
    await cluster.query('CHECKPOINT');
    const dbBytes = Number((await cluster.query(`SELECT sum(pg_database_size(oid))::bigint AS b FROM pg_database`))[0].b);
    console.log(`  database: ${fmt(dbBytes / MiB, 0)} MiB`);

    // Backups, zstd level 1 everywhere.
    const zstdSite = await startReceiver(work, 'zstd', cluster, 'zstd');
    receivers.push(zstdSite.proc);
    const push = await spawnTimed(process.execPath, [WALVAULT_BIN, 'backup', 'push', '--config', zstdSite.config, '--fast'], {});
    const zstdBackup = push.stdout.trim();
    const pgbbDir = path.join(work, 'pgbb');
    await spawnTimed(clientBin('pg_basebackup'), ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-D', pgbbDir, '-Ft', '-X', 'none', '--checkpoint=fast', '--no-sync', '--compress=client-zstd:1'], {});
    const repo = path.join(work, 'pgbackrest');
    fs.mkdirSync(path.join(repo, 'log'), { recursive: true });
    fs.mkdirSync(path.join(repo, 'lock'), { recursive: true });
    const conf = path.join(work, 'pgbackrest.conf');
    fs.writeFileSync(conf, pgBackRestConfig(repo, cluster, true));
    chownForServer(repo);
    chownForServer(conf);
    await spawnTimed(PGBACKREST, [`--config=${conf}`, '--stanza=bench', 'stanza-create'], { asServer: true });
    await spawnTimed(PGBACKREST, [`--config=${conf}`, '--stanza=bench', '--type=full', 'backup'], { asServer: true });

    // Restore throughput. Each restore starts alike: the previous target removed, the page
    // cache flushed, a pause (on this machine's discard-mounted disk the blocks just freed
    // make the next large write slower for a while). ROUNDS rounds in turn; the best counts.
    const tools: Array<{ tool: string; run: (target: string) => Promise<{ seconds: number; peakRssMiB: number; cpuSeconds: number; stdout: string }> }> = [
      { tool: 'walvault restore', run: (t) => spawnTimed(process.execPath, [WALVAULT_BIN, 'restore', '--archive', zstdSite.archive, '--backup', zstdBackup, t], {}) },
      {
        tool: 'pgBackRest restore (process-max 2)',
        run: async (t) => {
          fs.mkdirSync(t, { mode: 0o700 });
          chownForServer(t);
          return spawnTimed(PGBACKREST, [`--config=${conf}`, '--stanza=bench', `--pg1-path=${t}`, 'restore'], { asServer: true });
        },
      },
      {
        tool: 'tar -x of pg_basebackup base.tar.zst',
        run: async (t) => {
          fs.mkdirSync(t, { mode: 0o700 });
          return spawnTimed('tar', ['-xf', path.join(pgbbDir, 'base.tar.zst'), '-C', t], {});
        },
      },
    ];
    const samples = new Map<string, Array<{ seconds: number; peakRssMiB: number; cpuSeconds: number; stdout: string }>>(tools.map((t) => [t.tool, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const t of tools) {
        const target = path.join(work, 'restore-target');
        removeDir(target);
        execFileSync('sync');
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        const r = await t.run(target);
        samples.get(t.tool)!.push(r);
        console.log(`  round ${round + 1}: ${t.tool}: ${fmt(r.seconds)} s`);
      }
    }
    removeDir(path.join(work, 'restore-target'));
    const rows = tools.map((t) => {
      const all = samples.get(t.tool)!;
      const best = all.reduce((a, b) => (b.seconds < a.seconds ? b : a));
      return { tool: t.tool, ...best, allSeconds: all.map((x) => x.seconds) };
    });
    removeDir(pgbbDir);
    removeDir(repo);
    zstdSite.proc.child.kill('SIGTERM');

    // Recovery of WAL_MB through wal-fetch vs cp.
    const plainSite = await startReceiver(work, 'plain', cluster, 'none');
    receivers.push(plainSite.proc);
    const basePush = await spawnTimed(process.execPath, [WALVAULT_BIN, 'backup', 'push', '--config', plainSite.config, '--fast'], {});
    const plainBackup = basePush.stdout.trim();
    const startLsn = (await cluster.query(`SELECT pg_current_wal_lsn() AS l`))[0].l;
    await cluster.query(`CREATE TABLE filler (id bigint, pad text)`);
    for (;;) {
      await cluster.query(`INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 200000) g`);
      const done = Number((await cluster.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${startLsn}')::bigint AS d`))[0].d);
      if (done >= WAL_MB * MiB) break;
    }
    const { lastName } = await switchAndWaitArchived(cluster, plainSite.archive, 1, 600000);
    // The same segments in a plain directory, for `cp`.
    const walCopy = path.join(work, 'walcopy');
    fs.mkdirSync(walCopy);
    const walDir = path.dirname(cluster.walFilePath(lastName));
    for (const f of fs.readdirSync(walDir)) if (/^[0-9A-F]{24}$/.test(f) && f <= lastName) fs.copyFileSync(path.join(walDir, f), path.join(walCopy, f));
    chownForServer(walCopy);

    const viaFetch = path.join(work, 'recover-walfetch');
    await spawnTimed(process.execPath, [WALVAULT_BIN, 'restore', '--archive', plainSite.archive, '--backup', plainBackup, viaFetch], {});
    const viaCp = path.join(work, 'recover-cp');
    await spawnTimed(process.execPath, [WALVAULT_BIN, 'restore', '--archive', plainSite.archive, '--backup', plainBackup, viaCp], {});
    const auto = path.join(viaCp, 'postgresql.auto.conf');
    fs.writeFileSync(auto, fs.readFileSync(auto, 'utf8').replace(/^restore_command = .*$/m, `restore_command = 'cp ${walCopy}/%f %p'`));
    chownForServer(plainSite.archive);
    const fetchSeconds = await timeRecovery(viaFetch);
    const cpSeconds = await timeRecovery(viaCp);

    console.log('');
    printTable([
      ['restore', 'seconds', 'MiB/s', 'peak RSS MiB', 'CPU s'],
      ...rows.map((r) => [r.tool, fmt(r.seconds), fmt(dbBytes / MiB / r.seconds), fmt(r.peakRssMiB), fmt(r.cpuSeconds)]),
    ]);
    console.log('');
    printTable([
      [`recovery of ${WAL_MB} MiB of WAL`, 'seconds', 'MiB/s'],
      ['restore_command = walvault wal-fetch (prefetch 8)', fmt(fetchSeconds), fmt(WAL_MB / fetchSeconds)],
      ['restore_command = cp from a local directory', fmt(cpSeconds), fmt(WAL_MB / cpSeconds)],
    ]);
    const restoreRatio = rows[1].seconds / rows[0].seconds;
    const recoveryRatio = cpSeconds / fetchSeconds;
    console.log('');
    console.log(`  restore: walvault / pgBackRest throughput ${fmt(restoreRatio, 2)}x (target >= ${RESTORE_TARGET}): ${restoreRatio >= RESTORE_TARGET ? 'PASS' : 'FAIL'}`);
    console.log(`  recovery: wal-fetch / local copy speed ${fmt(recoveryRatio, 2)}x (target >= ${RECOVERY_TARGET}): ${recoveryRatio >= RECOVERY_TARGET ? 'PASS' : 'FAIL'}`);
    const file = saveResults(
      'restore',
      {
        bench: 'restore',
        startedAt: startedAt.toISOString(),
        machine: machineFacts({ pgBackRest: `${PGBACKREST} version` }),
        scale: SCALE,
        databaseBytes: dbBytes,
        restores: rows,
        recovery: { walMiB: WAL_MB, walFetchSeconds: fetchSeconds, localCopySeconds: cpSeconds },
        verdicts: { restoreRatio, restorePass: restoreRatio >= RESTORE_TARGET, recoveryRatio, recoveryPass: recoveryRatio >= RECOVERY_TARGET },
      },
      startedAt,
    );
    console.log(`  results written to ${path.relative(process.cwd(), file) || file}`);
    return 0;
  } catch (err) {
    console.error(`\nrestore bench failed: ${(err as Error).stack ?? String(err)}`);
    return 1;
  } finally {
    for (const r of receivers) await r.stop('SIGTERM', 30000).catch(() => undefined);
    await cluster?.destroy().catch(() => undefined);
    removeDir(work);
  }
}

main().then((code) => process.exit(code));
