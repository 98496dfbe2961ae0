/**
 * `npm run bench`, part three: base backup throughput and peak RSS of `walvault backup push`
 * against `pg_basebackup -Ft` and pgBackRest, on the same database, in one run.
 *
 *   1. One PostgreSQL 15 cluster (16 MiB segments) with pgbench data of BENCH_BACKUP_SCALE
 *      (default 135, about 2 GiB). walvault's receiver streams its WAL (a backup's
 *      completion waits for it, so the receiver is part of the real cost).
 *   2. For each codec of BENCH_BACKUP_CODECS (default "zstd"): each tool takes a full backup
 *      with an immediate checkpoint and the same codec at the same level:
 *        walvault    site compression (zstd level 1), parts into a local directory archive
 *        pg_basebackup  -Ft -X none --compress=client-zstd:1 into a directory
 *        pgBackRest  backup --type=full --process-max=2 --compress-type=zst --compress-level=1
 *                    into a local repository (it reads the data directory itself)
 *      Throughput = database size (pg_database_size of every database plus the rest of the
 *      tar, as walvault counts it) / wall time; peak RSS = VmHWM, summed over a tool's
 *      process tree for pgBackRest (its workers are processes).
 *   3. Targets: walvault at least 1.2 times pgBackRest's throughput, peak RSS under 200 MiB.
 *
 * Page cache: every tool reads a database that is already in memory after pgbench; the
 * order is fixed (pg_basebackup, pgBackRest, walvault) and recorded.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { clientBin, PgCluster, removeDir, tmpDir, chownForServer } from '../test/helpers/pg-cluster';
import { pgConninfo, WALVAULT_BIN, WalvaultProcess, writeConfig } from '../test/helpers/walvault';
import { dirBytes, fmt, machineFacts, pgBackRestConfig, printTable, saveResults, spawnTimed } from './bench-util';

const MiB = 1024 * 1024;
const SCALE = Number(process.env.BENCH_BACKUP_SCALE ?? 135);
const CODECS = (process.env.BENCH_BACKUP_CODECS ?? 'zstd').split(',').map((c) => c.trim()).filter(Boolean);
const THROUGHPUT_TARGET = 1.2;
const RSS_TARGET_MIB = 200;
const PGBACKREST = '/usr/bin/pgbackrest';
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
const MEM_TRACE = process.env.BENCH_MEM_TRACE ? path.resolve(process.env.BENCH_MEM_TRACE) : undefined;

interface Run {
  tool: string;
  codec: string;
  seconds: number;
  bytes: number;
  peakRssMiB: number;
  cpuSeconds: number;
  storedBytes: number;
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const work = tmpDir('walvault-backup-bench-');
  let cluster: PgCluster | undefined;
  let receiver: WalvaultProcess | undefined;
  try {
    if (!fs.existsSync(PGBACKREST)) throw new Error(`pgBackRest is not installed (${PGBACKREST}); apt-get install pgbackrest`);
    console.log(`backup bench: PostgreSQL 15, pgbench scale ${SCALE}, codecs ${CODECS.join(', ')}`);
    cluster = await PgCluster.start({ walSegSizeMiB: 16, settings: { max_wal_size: '4GB', archive_mode: 'on', archive_command: '/bin/true' } });
    const initStart = performance.now();
    await cluster.pgbench(['-i', '-s', String(SCALE), '-q']);
    await cluster.query('CHECKPOINT');
    const dbBytes = Number((await cluster.query(`SELECT sum(pg_database_size(oid))::bigint AS b FROM pg_database`))[0].b);
    console.log(`  database: ${fmt(dbBytes / MiB, 0)} MiB (pgbench -i took ${fmt((performance.now() - initStart) / 1000)} s)`);

    const runs: Run[] = [];
    for (const codec of CODECS) {
      const zstd = codec === 'zstd';
      if (!['zstd', 'none'].includes(codec)) throw new Error(`BENCH_BACKUP_CODECS: ${codec} is not one all three tools share; use zstd or none`);

      // pg_basebackup
      const pgbbDir = path.join(work, `pgbb-${codec}`);
      const pgbb = await spawnTimed(
        clientBin('pg_basebackup'),
        ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-D', pgbbDir, '-Ft', '-X', 'none', '--checkpoint=fast', '--no-sync', ...(zstd ? ['--compress=client-zstd:1'] : [])],
        {},
      );
      runs.push({ tool: 'pg_basebackup -Ft', codec, seconds: pgbb.seconds, bytes: dbBytes, peakRssMiB: pgbb.peakRssMiB, cpuSeconds: pgbb.cpuSeconds, storedBytes: dirBytes(pgbbDir) });
      removeDir(pgbbDir);

      // pgBackRest
      const repo = path.join(work, `pgbackrest-${codec}`);
      const conf = path.join(work, `pgbackrest-${codec}.conf`);
      fs.mkdirSync(path.join(repo, 'log'), { recursive: true });
      fs.mkdirSync(path.join(repo, 'lock'), { recursive: true });
      fs.writeFileSync(conf, pgBackRestConfig(repo, cluster, zstd));
      chownForServer(repo);
      chownForServer(conf);
      await spawnTimed(PGBACKREST, [`--config=${conf}`, '--stanza=bench', 'stanza-create'], { asServer: true });
      const pbr = await spawnTimed(PGBACKREST, [`--config=${conf}`, '--stanza=bench', '--type=full', 'backup'], { asServer: true });
      runs.push({ tool: 'pgBackRest (process-max 2)', codec, seconds: pbr.seconds, bytes: dbBytes, peakRssMiB: pbr.peakRssMiB, cpuSeconds: pbr.cpuSeconds, storedBytes: dirBytes(path.join(repo, 'repo', 'backup')) });
      removeDir(repo);

      // walvault
      const archive = path.join(work, `walvault-${codec}`);
      const siteDir = path.join(work, `site-${codec}`);
      fs.mkdirSync(siteDir);
      const config = writeConfig(siteDir, { main: { pg: pgConninfo(cluster), archive, state: path.join(siteDir, 'state'), slot: `bench_${codec}`, compression: codec, status_interval_seconds: 1, partial_interval_seconds: 1 } }, 'warn');
      receiver = WalvaultProcess.start(['run', '--config', config]);
      await new Promise<void>((resolve, reject) => {
        const t = setInterval(() => {
          if (!receiver!.running) {
            clearInterval(t);
            reject(new Error(`walvault run exited:\n${receiver!.stderr}`));
          }
          // At 'warn' nothing is logged on start; an active slot says it streams.
          void cluster!
            .query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_${codec}'`)
            .then((r) => {
              if (r[0]?.active) {
                clearInterval(t);
                resolve();
              }
            })
            .catch(() => undefined);
        }, 200);
      });
      // BENCH_MEM_TRACE=<file>: the push's process.memoryUsage() as JSON lines (bench/mem-probe.ts).
      const memEnv = MEM_TRACE ? { NODE_OPTIONS: `--require ${path.join(__dirname, 'mem-probe.js')}`, WALVAULT_BENCH_MEM_TRACE: `${MEM_TRACE}.${codec}` } : {};
      // BENCH_CPU_PROF=<dir>: a V8 CPU profile of the push (summarise with dist/bench/profile-summary.js).
      const prof = CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`] : [];
      const wv = await spawnTimed(process.execPath, [...prof, WALVAULT_BIN, 'backup', 'push', '--config', config, '--fast'], { env: memEnv });
      await receiver.stop('SIGTERM', 60000);
      receiver = undefined;
      const name = wv.stdout.trim();
      const meta = JSON.parse(execFileSync(process.execPath, [WALVAULT_BIN, 'backup', 'show', name, '--archive', archive], { encoding: 'utf8' }));
      runs.push({ tool: 'walvault backup push', codec, seconds: wv.seconds, bytes: dbBytes, peakRssMiB: wv.peakRssMiB, cpuSeconds: wv.cpuSeconds, storedBytes: meta.storedBytes });
      removeDir(archive);
    }

    console.log('');
    printTable([
      ['tool', 'codec', 'seconds', 'MiB/s', 'peak RSS MiB', 'CPU s', 'stored MiB'],
      ...runs.map((r) => [r.tool, r.codec, fmt(r.seconds), fmt(r.bytes / MiB / r.seconds), fmt(r.peakRssMiB), fmt(r.cpuSeconds), fmt(r.storedBytes / MiB)]),
    ]);
    const verdicts = CODECS.map((codec) => {
      const wv = runs.find((r) => r.codec === codec && r.tool.startsWith('walvault'))!;
      const pbr = runs.find((r) => r.codec === codec && r.tool.startsWith('pgBackRest'))!;
      const ratio = pbr.seconds / wv.seconds;
      return { codec, ratioVsPgBackRest: ratio, throughputPass: ratio >= THROUGHPUT_TARGET, peakRssMiB: wv.peakRssMiB, rssPass: wv.peakRssMiB < RSS_TARGET_MIB };
    });
    console.log('');
    for (const v of verdicts) {
      console.log(`  ${v.codec}: walvault / pgBackRest throughput ${fmt(v.ratioVsPgBackRest, 2)}x (target >= ${THROUGHPUT_TARGET}): ${v.throughputPass ? 'PASS' : 'FAIL'}`);
      console.log(`  ${v.codec}: walvault peak RSS ${fmt(v.peakRssMiB)} MiB (target < ${RSS_TARGET_MIB}): ${v.rssPass ? 'PASS' : 'FAIL'}`);
    }
    const file = saveResults('backup', { bench: 'backup', startedAt: startedAt.toISOString(), machine: machineFacts({ pgBasebackup: clientBin('pg_basebackup'), pgBackRest: `${PGBACKREST} version` }), scale: SCALE, databaseBytes: dbBytes, runs, verdicts }, startedAt);
    console.log(`  results written to ${path.relative(process.cwd(), file) || file}`);
    return 0;
  } catch (err) {
    console.error(`\nbackup bench failed: ${(err as Error).stack ?? String(err)}`);
    return 1;
  } finally {
    await receiver?.stop('SIGTERM', 30000).catch(() => undefined);
    await cluster?.destroy().catch(() => undefined);
    removeDir(work);
  }
}

main().then((code) => process.exit(code));
