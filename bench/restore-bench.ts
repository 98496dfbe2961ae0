/**
 * `npm run bench`, part four: restore and recovery, walvault against pgBackRest and tar.
 *
 * For each database of BENCH_DATABASES (default "real,pgbench"; sizes and what they hold:
 * bench-data.ts, BENCH_REAL_SCALE, BENCH_REAL_TEXT_MIB, BENCH_PGBENCH_SCALE):
 *   1. Backups of the same cluster: `walvault backup push --fast` beside a running receiver,
 *      into one local archive per codec of BENCH_RESTORE_CODECS (default "zstd,none": zstd
 *      level 1 compressed by the server, as the S3 default; none, the local-directory
 *      default); pgBackRest full (zst level 1, process-max 2); `pg_basebackup -Ft -X none`
 *      per codec (client-zstd:1, or a plain tar). The primary is then stopped.
 *   2. Restores, BENCH_ROUNDS (default 3) rounds in turn, each into an empty target after
 *      `sync` and a BENCH_SETTLE_MS (default 3000) pause: walvault restore from each archive,
 *      `pgbackrest restore`, `tar -xf` of each pg_basebackup tar. Rows "restore, zstd" and
 *      "restore, uncompressed archive": walvault against pgBackRest zst (the peer of both, as
 *      in issue 15), tar of the same codec beside it. MiB/s = database size / time.
 *   3. Recovery, first database only: BENCH_RECOVERY_WAL_MB (default 1024; 0 skips) of WAL
 *      of random-text rows written after the uncompressed backup (zstd if only that is
 *      measured) and archived by its receiver; the backup is restored once (untimed) and
 *      copied for every round; the server is started on the copy and timed to the end of
 *      recovery, with restore's restore_command (the prefetch shortcut, then `walvault
 *      wal-fetch`), and with `cp` from a directory holding the same segments.
 * Goals (issue 15): restore median >= 1.2x pgBackRest's, walvault's spread (slowest/fastest)
 * at most 1.2x pgBackRest's, peak RSS < 200 MiB; recovery through wal-fetch >= 0.8x `cp`.
 * At the defaults it takes about 12 minutes on a 2-core machine (building the two
 * databases is about one of them).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { chownForServer, clientBin, PgCluster, removeDir } from '../test/helpers/pg-cluster';
import { switchAndWaitArchived, WALVAULT_BIN } from '../test/helpers/walvault';
import { benchDatabases, DATABASES, generateWal, PGBACKREST, PgBackRest, requirePgBackRest, startSite, type Database, type DatabaseFacts } from './bench-data';
import { alternate, describe, envList, envNumber, fmt, MiB, pollUntil, runBench, speedRatio, spawnTimed, summarizeAll, type Contender, type Measured, type Row } from './bench-util';

const CODECS = envList('BENCH_RESTORE_CODECS', ['zstd', 'none'] as const, ['zstd', 'none'] as const);
type Codec = (typeof CODECS)[number];
const WAL_MB = envNumber('BENCH_RECOVERY_WAL_MB', 1024, { allowZero: true });
const RESTORE_GOAL = 1.2;
const SPREAD_GOAL = 1.2;
const RSS_GOAL_MIB = 200;
const RECOVERY_GOAL = 0.8;

const codecLabel = (c: Codec) => (c === 'zstd' ? 'zstd' : 'uncompressed archive (the local default)');

interface Backups {
  walvault: Record<string, { archive: string; name: string }>;
  pgBackRest: PgBackRest;
  tars: Record<string, string>;
  /** For the recovery rows: the archive and backup the WAL follows, the same segments as plain files. */
  recovery?: { codec: Codec; archive: string; name: string; walCopy: string };
}

/** Every backup of `db`, and with `recoveryWal` that much WAL after the recovery backup. */
async function takeBackups(dir: string, db: Database, recoveryWal: number): Promise<Backups> {
  const { cluster } = db;
  const out: Backups = { walvault: {}, pgBackRest: new PgBackRest(path.join(dir, 'pgbackrest'), cluster, 'zst'), tars: {} };
  const recoveryCodec = CODECS.includes('none') ? 'none' : CODECS[0];
  for (const codec of CODECS) {
    const site = await startSite(path.join(dir, `walvault-${codec}`), cluster, `bench_${codec}`, { compression: codec });
    try {
      const push = await spawnTimed(process.execPath, [WALVAULT_BIN, 'backup', 'push', '--config', site.config, '--fast']);
      out.walvault[codec] = { archive: site.archive, name: push.stdout.trim() };
      if (recoveryWal > 0 && codec === recoveryCodec) {
        const wal = await generateWal(cluster, { mib: recoveryWal });
        const { lastName } = await switchAndWaitArchived(cluster, site.archive, 1, 900_000);
        const walCopy = path.join(dir, 'walcopy');
        fs.mkdirSync(walCopy);
        const walDir = path.dirname(cluster.walFilePath(lastName));
        for (const f of fs.readdirSync(walDir)) if (/^[0-9A-F]{24}$/.test(f) && f <= lastName) fs.copyFileSync(path.join(walDir, f), path.join(walCopy, f));
        chownForServer(walCopy);
        out.recovery = { codec, archive: site.archive, name: out.walvault[codec].name, walCopy };
        console.log(`  recovery WAL: ${fmt(wal.bytes / MiB, 0)} MiB of random-text rows in ${fmt(wal.seconds)} s, archived up to ${lastName}`);
      }
    } finally {
      await site.stop();
    }
  }
  await out.pgBackRest.reset();
  await out.pgBackRest.backup();
  for (const codec of CODECS) {
    const tarDir = path.join(dir, `pg_basebackup-${codec}`);
    await spawnTimed(clientBin('pg_basebackup'), ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-D', tarDir, '-Ft', '-X', 'none', '--checkpoint=fast', '--no-sync', ...(codec === 'zstd' ? ['--compress=client-zstd:1'] : [])]);
    out.tars[codec] = path.join(tarDir, codec === 'zstd' ? 'base.tar.zst' : 'base.tar');
  }
  return out;
}

function restoreRows(facts: DatabaseFacts, backups: Backups, target: string): { contenders: Contender[]; rows: (results: Map<string, Measured[]>) => Row[] } {
  const fresh = async () => removeDir(target);
  const withBytes = async (m: Promise<Measured>) => ({ ...(await m), bytes: facts.bytes });
  const wvName = (c: Codec) => `walvault restore, ${c}`;
  const tarName = (c: Codec) => `tar -xf ${path.basename(backups.tars[c])}`;
  const pbrName = 'pgBackRest restore (zst, process-max 2)';
  const walvault = (c: Codec): Contender => ({
    name: wvName(c),
    prepare: fresh,
    run: () => withBytes(spawnTimed(process.execPath, [WALVAULT_BIN, 'restore', '--archive', backups.walvault[c].archive, '--backup', backups.walvault[c].name, target])),
  });
  const tar = (c: Codec): Contender => ({
    name: tarName(c),
    prepare: fresh,
    run: () => {
      fs.mkdirSync(target, { mode: 0o700 });
      return withBytes(spawnTimed('tar', ['-xf', backups.tars[c], '-C', target]));
    },
  });
  const contenders: Contender[] = [];
  CODECS.forEach((c, i) => {
    contenders.push(walvault(c));
    if (i === 0) contenders.push({ name: pbrName, prepare: fresh, run: () => withBytes(backups.pgBackRest.restore(target)) });
    contenders.push(tar(c));
  });
  const db = `${facts.description} (${fmt(facts.bytes / MiB, 0)} MiB, zstd ${fmt(facts.zstdRatio, 1)}:1)`;
  return {
    contenders,
    rows: (results) => {
      const s = summarizeAll(results);
      return CODECS.map((c) => {
        const wv = s.get(wvName(c))!;
        const pbr = s.get(pbrName)!;
        const ratio = speedRatio(wv, pbr);
        return {
          measure: `restore, ${codecLabel(c)}: ${db}`,
          walvault: describe(wv, { throughput: true }),
          peer: `${describe(pbr, { throughput: true })}. ${describe(s.get(tarName(c))!, { throughput: true })}`,
          ratio: `${fmt(ratio, 2)}x pgBackRest; spread ${fmt(wv.spread, 2)}x vs ${fmt(pbr.spread, 2)}x`,
          goal: `>= ${RESTORE_GOAL}x (median), spread <= ${SPREAD_GOAL}x pgBackRest's, peak RSS < ${RSS_GOAL_MIB} MiB`,
          met: ratio >= RESTORE_GOAL && wv.spread <= pbr.spread * SPREAD_GOAL && wv.peakRssMiB < RSS_GOAL_MIB,
          data: { database: facts, walvault: wv, pgBackRest: pbr, tar: s.get(tarName(c)), speedRatio: ratio },
        };
      });
    },
  };
}

/** Starts PostgreSQL on a restored directory and times it to the end of recovery. */
async function timeRecovery(dataDir: string): Promise<Measured> {
  const started = performance.now();
  const server = await PgCluster.start({ dataDir });
  try {
    await pollUntil(async () => (await server.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 1_800_000, intervalMs: 100, what: `recovery of ${dataDir}` });
    return { seconds: (performance.now() - started) / 1000, bytes: WAL_MB * MiB };
  } finally {
    await server.destroy();
  }
}

async function recoveryRows(dir: string, rec: NonNullable<Backups['recovery']>): Promise<Row> {
  const viaFetch = path.join(dir, 'pristine-walfetch');
  const viaCp = path.join(dir, 'pristine-cp');
  await spawnTimed(process.execPath, [WALVAULT_BIN, 'restore', '--archive', rec.archive, '--backup', rec.name, viaFetch]);
  execFileSync('cp', ['-a', viaFetch, viaCp]);
  const auto = path.join(viaCp, 'postgresql.auto.conf');
  fs.writeFileSync(auto, fs.readFileSync(auto, 'utf8').replace(/^restore_command = .*$/m, `restore_command = 'cp ${rec.walCopy}/%f %p'`));
  const target = path.join(dir, 'recovering');
  const from = (pristine: string) => async () => {
    removeDir(target);
    execFileSync('cp', ['-a', pristine, target]);
  };
  const fetchName = 'restore_command = walvault (prefetch, then wal-fetch)';
  const cpName = 'restore_command = cp from a local directory';
  const results = await alternate([
    { name: fetchName, prepare: from(viaFetch), run: () => timeRecovery(target) },
    { name: cpName, prepare: from(viaCp), run: () => timeRecovery(target) },
  ]);
  removeDir(target);
  const s = summarizeAll(results);
  const wv = s.get(fetchName)!;
  const cp = s.get(cpName)!;
  const ratio = speedRatio(wv, cp);
  return {
    measure: `recovery of ${WAL_MB} MiB of random-text WAL from the ${rec.codec === 'none' ? 'uncompressed' : rec.codec} archive`,
    walvault: describe(wv, { throughput: true }),
    peer: describe(cp, { throughput: true }),
    ratio: `${fmt(ratio, 2)}x cp`,
    goal: `>= ${RECOVERY_GOAL}x (median)`,
    met: ratio >= RECOVERY_GOAL,
    data: { walvault: wv, cp, speedRatio: ratio },
  };
}

async function main(): Promise<void> {
  requirePgBackRest();
  console.log(`restore bench: databases ${DATABASES.join(', ')}; walvault archives ${CODECS.join(', ')}; recovery of ${WAL_MB} MiB of WAL`);
  // Recovery is measured on the first database only.
  const recoveryWal = (i: number) => (i === 0 ? WAL_MB : 0);
  await benchDatabases({
    kind: 'restore',
    title: "restore bench (ratio: the peer's median time / walvault's; above 1, walvault is faster)",
    settings: (i) => ({ archive_mode: 'on', archive_command: '/bin/true', wal_keep_size: `${recoveryWal(i) + 1024}MB` }),
    rowsOf: async (db, dir, i) => {
      const backups = await takeBackups(dir, db, recoveryWal(i));
      // The primary's checkpointer and walwriter have no part in a restore.
      await db.cluster.destroy();
      console.log(`restores of "${db.facts.kind}":`);
      const restores = restoreRows(db.facts, backups, path.join(dir, 'target'));
      const rows = restores.rows(await alternate(restores.contenders));
      removeDir(path.join(dir, 'target'));
      if (backups.recovery) {
        console.log('recovery:');
        rows.push(await recoveryRows(dir, backups.recovery));
      }
      return rows;
    },
    params: { codecs: CODECS, recoveryWalMiB: WAL_MB },
    tools: { pgBackRest: `${PGBACKREST} version` },
  });
}

runBench('restore bench', main);
