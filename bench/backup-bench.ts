/**
 * `npm run bench`, part three: base backups, walvault against pgBackRest and pg_basebackup.
 *
 * For each database of BENCH_DATABASES (default "real,pgbench"; sizes and what they hold:
 * bench-data.ts, BENCH_REAL_SCALE, BENCH_REAL_TEXT_MIB, BENCH_PGBENCH_SCALE) and each codec
 * of BENCH_BACKUP_CODECS (default "zstd"; "zstd,none" adds the uncompressed case), one full
 * backup per tool with an immediate checkpoint and the same codec at level 1:
 *   walvault       `backup push --fast` into a local archive, beside the site's running
 *                  receiver (completion waits for the backup's WAL, so the receiver's
 *                  archiving counts in the push's time; zstd: the server compresses)
 *   pgBackRest     full backup, process-max 2, into a local repository (it reads the data
 *                  directory itself)
 *   pg_basebackup  -Ft -X none (--compress=client-zstd:1) into a directory
 * BENCH_ROUNDS (default 3) rounds in turn, each from the same start: the previous backup
 * removed (`walvault backup delete`, a new pgBackRest repository and stanza, the directory),
 * `sync`, a BENCH_SETTLE_MS pause. MiB/s = database size / time. CPU-s is each tool's own
 * process tree: with zstd, walvault's compression runs in the server, pgBackRest's in its
 * processes. Goal (issue 15): walvault >= 1.2x pgBackRest (median) on both databases.
 * At the defaults it takes about 6 minutes on a 2-core machine (10 with "zstd,none").
 *
 * BENCH_CPU_PROF=<dir>: V8 CPU profiles of the pushes (bench/profile-summary.ts summarises);
 * BENCH_MEM_TRACE=<file>: the pushes' process.memoryUsage() as JSON lines (bench/mem-probe.ts).
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { clientBin, removeDir } from '../test/helpers/pg-cluster';
import { WALVAULT_BIN } from '../test/helpers/walvault';
import { benchDatabases, DATABASES, PGBACKREST, PgBackRest, requirePgBackRest, startSite, type Database } from './bench-data';
import { alternate, describe, dirBytes, envList, fmt, MiB, runBench, speedRatio, spawnTimed, summarizeAll, type Row } from './bench-util';

const CODECS = envList('BENCH_BACKUP_CODECS', ['zstd'] as const, ['zstd', 'none'] as const);
type Codec = (typeof CODECS)[number];
const SPEED_GOAL = 1.2;
const RSS_GOAL_MIB = 200;
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
const MEM_TRACE = process.env.BENCH_MEM_TRACE ? path.resolve(process.env.BENCH_MEM_TRACE) : undefined;

async function backupRow(dir: string, db: Database, codec: Codec): Promise<Row> {
  const { cluster, facts } = db;
  const site = await startSite(path.join(dir, `walvault-${codec}`), cluster, `bench_${codec}`, { compression: codec });
  const pbr = new PgBackRest(path.join(dir, `pgbackrest-${codec}`), cluster, codec === 'zstd' ? 'zst' : 'none');
  const tarDir = path.join(dir, `pg_basebackup-${codec}`);
  let last: string | undefined;
  const wvName = 'walvault backup push';
  const pbrName = `pgBackRest backup (${codec === 'zstd' ? 'zst' : 'none'}, process-max 2)`;
  const pgbbName = 'pg_basebackup -Ft';
  const env = MEM_TRACE ? { NODE_OPTIONS: `--require ${path.join(__dirname, 'mem-probe.js')}`, WALVAULT_BENCH_MEM_TRACE: `${MEM_TRACE}.${facts.kind}.${codec}` } : {};
  const prof = CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`] : [];
  try {
    const results = await alternate([
      {
        name: wvName,
        prepare: async () => {
          if (last) execFileSync(process.execPath, [WALVAULT_BIN, 'backup', 'delete', last, '--archive', site.archive, '--confirm'], { stdio: 'ignore' });
        },
        run: async () => {
          const r = await spawnTimed(process.execPath, [...prof, WALVAULT_BIN, 'backup', 'push', '--config', site.config, '--fast'], { env });
          last = r.stdout.trim();
          const meta = JSON.parse(execFileSync(process.execPath, [WALVAULT_BIN, 'backup', 'show', last, '--archive', site.archive], { encoding: 'utf8' }));
          return { ...r, bytes: facts.bytes, storedBytes: meta.storedBytes };
        },
      },
      { name: pbrName, prepare: () => pbr.reset(), run: async () => ({ ...(await pbr.backup()), bytes: facts.bytes, storedBytes: pbr.storedBytes() }) },
      {
        name: pgbbName,
        prepare: async () => removeDir(tarDir),
        run: async () => {
          const args = ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-D', tarDir, '-Ft', '-X', 'none', '--checkpoint=fast', '--no-sync', ...(codec === 'zstd' ? ['--compress=client-zstd:1'] : [])];
          return { ...(await spawnTimed(clientBin('pg_basebackup'), args)), bytes: facts.bytes, storedBytes: dirBytes(tarDir) };
        },
      },
    ]);
    const s = summarizeAll(results);
    const wv = s.get(wvName)!;
    const peer = s.get(pbrName)!;
    const ratio = speedRatio(wv, peer);
    return {
      measure: `backup push, ${codec === 'zstd' ? 'zstd (server-compressed)' : 'uncompressed'}: ${facts.description} (${fmt(facts.bytes / MiB, 0)} MiB, zstd ${fmt(facts.zstdRatio, 1)}:1)`,
      walvault: describe(wv, { throughput: true }),
      peer: `${describe(peer, { throughput: true })}. ${describe(s.get(pgbbName)!, { throughput: true })}`,
      ratio: `${fmt(ratio, 2)}x pgBackRest`,
      goal: `>= ${SPEED_GOAL}x (median), peak RSS < ${RSS_GOAL_MIB} MiB`,
      met: ratio >= SPEED_GOAL && wv.peakRssMiB < RSS_GOAL_MIB,
      data: { database: facts, codec, walvault: wv, pgBackRest: peer, pgBasebackup: s.get(pgbbName), speedRatio: ratio },
    };
  } finally {
    await site.stop();
    removeDir(tarDir);
  }
}

async function main(): Promise<void> {
  requirePgBackRest();
  console.log(`backup bench: databases ${DATABASES.join(', ')}; codecs ${CODECS.join(', ')}`);
  await benchDatabases({
    kind: 'backup',
    title: "backup bench (ratio: pgBackRest's median time / walvault's; above 1, walvault is faster)",
    settings: () => ({ archive_mode: 'on', archive_command: '/bin/true' }),
    rowsOf: async (db, dir) => {
      const rows: Row[] = [];
      for (const codec of CODECS) {
        console.log(`backups of "${db.facts.kind}", ${codec}:`);
        rows.push(await backupRow(dir, db, codec));
      }
      return rows;
    },
    params: { codecs: CODECS, cpuProfile: CPU_PROF_DIR ?? null, memTrace: MEM_TRACE ?? null },
    tools: { pgBasebackup: clientBin('pg_basebackup'), pgBackRest: `${PGBACKREST} version` },
  });
}

runBench('backup bench', main);
