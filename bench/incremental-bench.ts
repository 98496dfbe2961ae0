/**
 * `npm run bench`, part five: incremental backups (PostgreSQL 17, the embedded binaries)
 * against full ones of the same database, and the restore of a chain against the restore of
 * a full backup of the same final data.
 *
 * The database: two tables of random text and numbers (bench-data.ts fillRandomText), one of
 * BENCH_INCR_BIG_MIB (default 1280: a relation of two 1 GiB segment files) and one of
 * BENCH_INCR_SMALL_MIB (default 768) MiB, with primary keys; autovacuum off, so what changes
 * is what the rounds change. A walvault site archives its WAL into a local archive
 * (uncompressed, the local default).
 *   1. A full backup F0.
 *   2. BENCH_ROUNDS (default 3) rounds, each: change about 5% of the blocks in a contiguous
 *      part of the tables (an update of 1% of the big table's rows and 0.4% of the small one's,
 *      a delete of 0.4% of the small one's, new rows of 0.4% of its size; the share of
 *      blocks that really changed is counted from the server's WAL summaries and printed), then an
 *      incremental push continuing the chain (`--parent` the previous one), then a full push
 *      of the same data; both timed (wall, CPU, peak RSS), stored bytes from the metadata.
 *   3. Restores, alternating BENCH_INCR_RESTORE_ROUNDS (default 5, at least BENCH_ROUNDS) rounds: the last incremental (its whole chain, full
 *      backup F0 first) and the last full backup, each into an empty directory, its backups'
 *      files read once before (warmFiles: both from the page cache, where the chain's oldest
 *      member was often evicted and read from disk), then `sync` and a settle pause.
 *      Throughput: bytes of the restored data directory per second.
 * Goals (issue 16): an incremental takes at most 25% of a full push's time and 15% of its
 * stored bytes (medians); the chain restores at no less than 0.8x the full restore's
 * throughput; peak RSS of either under 200 MiB.
 * At the defaults it takes about 10 minutes on a 2-core machine, most of it building the data.
 * BENCH_INCR_KEEP=DIR keeps the archive and what was pushed in DIR; BENCH_INCR_REUSE=DIR runs
 * only the restores, on what a run with BENCH_INCR_KEEP=DIR kept (for work on restore).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { PgCluster, removeDir } from '../test/helpers/pg-cluster';
import { WALVAULT_BIN } from '../test/helpers/walvault';
import { fillRandomText, startSite } from './bench-data';
import { alternate, describe, dirBytes, warmFiles, envNumber, fmt, MiB, printRows, ROUNDS, runBench, saveRows, spawnTimed, summarize, summarizeAll, type Measured, type Row, workDir } from './bench-util';

const BIG_MIB = envNumber('BENCH_INCR_BIG_MIB', 1280);
const SMALL_MIB = envNumber('BENCH_INCR_SMALL_MIB', 768);
const TIME_GOAL = 0.25;
const BYTES_GOAL = 0.15;
const RESTORE_GOAL = 0.8;
const RSS_GOAL_MIB = 200;
/**
 * Restores are short (seconds) and the page cache's writeback makes single rounds swing by a
 * quarter: at least 5 alternating rounds, so the median is not one lucky or unlucky pair.
 */
const RESTORE_ROUNDS = Math.max(ROUNDS, Math.round(envNumber('BENCH_INCR_RESTORE_ROUNDS', 5)));
const KEEP = process.env.BENCH_INCR_KEEP || null;
const REUSE = process.env.BENCH_INCR_REUSE || null;

interface Pushed extends Measured {
  name: string;
  startLsn: string;
}

async function push(config: string, extra: string[]): Promise<Pushed> {
  const m = await spawnTimed(process.execPath, [WALVAULT_BIN, 'backup', 'push', '--config', config, '--fast', ...extra]);
  const name = m.stdout.trim();
  const show = await spawnTimed(process.execPath, [WALVAULT_BIN, 'backup', 'show', name, '--config', config]);
  const meta = JSON.parse(show.stdout) as { storedBytes: number; rawBytes: number; startLsn: string };
  return { seconds: m.seconds, cpuSeconds: m.cpuSeconds, peakRssMiB: m.peakRssMiB, storedBytes: meta.storedBytes, bytes: meta.rawBytes, name, startLsn: meta.startLsn };
}

/**
 * The share of the database's blocks that changed between two backups' starts, as the server's
 * WAL summaries count them (every relation fork's block named in a summary of that range).
 */
async function changedShare(cluster: PgCluster, from: string, to: string): Promise<number> {
  const [row] = await cluster.query(
    `SELECT count(*)::bigint AS n FROM (
       SELECT DISTINCT c.relfilenode, c.reltablespace, c.reldatabase, c.relforknumber, c.relblocknumber
         FROM pg_available_wal_summaries() s CROSS JOIN LATERAL pg_wal_summary_contents(s.tli, s.start_lsn, s.end_lsn) c
        WHERE s.end_lsn > '${from}'::pg_lsn AND s.start_lsn < '${to}'::pg_lsn AND NOT c.is_limit_block) x`,
  );
  const bytes = Number((await cluster.query(`SELECT sum(pg_database_size(oid))::bigint AS b FROM pg_database`))[0].b);
  return (Number(row.n) * 8192) / bytes;
}

/**
 * About 5% of the blocks (the bench measures it: changedShare), in contiguous id ranges that
 * move on each round. Without free space in the heap an updated row's new version goes to
 * the table's end, so an update changes about twice the blocks its rows fill.
 */
async function change(cluster: PgCluster, round: number, rows: { big: number; small: number }): Promise<void> {
  const span = (n: number, pct: number, slot: number) => {
    const width = Math.floor((n * pct) / 100);
    const from = 1 + ((slot * width * 7) % Math.max(1, n - width));
    return [from, from + width - 1];
  };
  const [b0, b1] = span(rows.big, 1, round);
  const [s0, s1] = span(rows.small, 0.4, round);
  const [d0, d1] = span(rows.small, 0.4, round + 50);
  await cluster.query(`UPDATE bench_big SET status = 'changed-${round}', amount = amount + 1 WHERE id BETWEEN ${b0} AND ${b1}`);
  await cluster.query(`UPDATE bench_small SET qty = qty + 1 WHERE id BETWEEN ${s0} AND ${s1}`);
  await cluster.query(`DELETE FROM bench_small WHERE id BETWEEN ${d0} AND ${d1}`);
  const next = Number((await cluster.query(`SELECT max(id)::bigint AS m FROM bench_small`))[0].m) + 1;
  await cluster.query(
    `INSERT INTO bench_small (id, customer, status, amount, qty, created, ref, note)
     SELECT g, 'customer-' || (random() * 100000)::int, 'new', round((random() * 10000)::numeric, 2), (random() * 1000)::int, now(),
            md5(random()::text), concat_ws(' ', md5(random()::text), (random() * 1e9)::bigint, md5(g::text))
       FROM generate_series(${next}, ${next + Math.floor(rows.small / 250)}) g`,
  );
}

/** What the pushes left: the archive, and the backups to restore. */
interface Built {
  archive: string;
  dbBytes: number;
  shares: number[];
  first: string;
  incrementals: Pushed[];
  fulls: Pushed[];
}

const BUILT_FILE = 'bench-state.json';

async function main(): Promise<void> {
  const startedAt = new Date();
  const work = workDir('walvault-incremental-bench-');
  try {
    const built = REUSE ? (JSON.parse(fs.readFileSync(path.join(REUSE, BUILT_FILE), 'utf8')) as Built) : await build(work);
    if (KEEP && !REUSE) {
      fs.mkdirSync(KEEP, { recursive: true });
      const kept = path.join(KEEP, 'archive');
      fs.cpSync(built.archive, kept, { recursive: true });
      fs.writeFileSync(path.join(KEEP, BUILT_FILE), JSON.stringify({ ...built, archive: kept }));
      console.log(`kept the archive in ${kept}: BENCH_INCR_REUSE=${KEEP} runs the restores on it`);
    }
    await measure(work, built, startedAt);
  } finally {
    removeDir(work);
  }
}

async function build(work: string): Promise<Built> {
  console.log(`incremental bench: PostgreSQL 17, ${BIG_MIB} + ${SMALL_MIB} MiB of random text and numbers, ${ROUNDS} rounds`);
  const cluster = await PgCluster.start({ major: 17, walSegSizeMiB: 16, settings: { summarize_wal: 'on', autovacuum: 'off', max_wal_size: '4GB' } });
  try {
    const t0 = performance.now();
    await fillRandomText(cluster, 'bench_big', BIG_MIB, { primaryKey: true });
    await fillRandomText(cluster, 'bench_small', SMALL_MIB, { primaryKey: true });
    await cluster.query('VACUUM ANALYZE');
    await cluster.query('CHECKPOINT');
    const dbBytes = Number((await cluster.query(`SELECT sum(pg_database_size(oid))::bigint AS b FROM pg_database`))[0].b);
    const rows = {
      big: Number((await cluster.query(`SELECT max(id)::bigint AS n FROM bench_big`))[0].n),
      small: Number((await cluster.query(`SELECT max(id)::bigint AS n FROM bench_small`))[0].n),
    };
    console.log(`database: ${fmt(dbBytes / MiB, 0)} MiB (built in ${fmt((performance.now() - t0) / 1000, 0)} s)`);

    const site = await startSite(path.join(work, 'site'), cluster, 'bench_incr', { compression: 'none' });
    const incrementals: Pushed[] = [];
    let first = '';
    const shares: number[] = [];
    const fulls: Pushed[] = [];
    try {
      const f0 = await push(site.config, []);
      first = f0.name;
      console.log(`  full F0: ${fmt(f0.seconds, 2)} s, stored ${fmt(f0.storedBytes! / MiB, 0)} MiB`);
      let parent = f0.name;
      for (let round = 0; round < ROUNDS; round++) {
        await change(cluster, round, rows);
        const parentStart = (incrementals[incrementals.length - 1] ?? f0).startLsn;
        const inc = await push(site.config, ['--incremental', '--parent', parent]);
        shares.push(await changedShare(cluster, parentStart, inc.startLsn));
        parent = inc.name;
        incrementals.push(inc);
        const full = await push(site.config, []);
        fulls.push(full);
        console.log(
          `  round ${round + 1}/${ROUNDS}  ${fmt(shares[round] * 100, 1)}% of blocks changed; incremental: ${fmt(inc.seconds, 2)} s, ${fmt(inc.cpuSeconds, 2)} CPU-s, stored ${fmt(inc.storedBytes! / MiB, 1)} MiB; ` +
            `full: ${fmt(full.seconds, 2)} s, ${fmt(full.cpuSeconds, 2)} CPU-s, stored ${fmt(full.storedBytes! / MiB, 0)} MiB`,
        );
      }
    } finally {
      await site.stop();
    }
    return { archive: site.archive, dbBytes, shares, first, incrementals, fulls };
  } finally {
    await cluster.destroy();
  }
}

async function measure(work: string, built: Built, startedAt: Date): Promise<void> {
  const { archive, dbBytes, shares, first, incrementals, fulls } = built;
  const target = path.join(work, 'target');
  const lastInc = incrementals[incrementals.length - 1].name;
  const lastFull = fulls[fulls.length - 1].name;
  const backupDirs = (names: string[]) => names.map((n) => path.join(archive, 'backups', n));
  const prepare = (names: string[]) => async () => {
    removeDir(target);
    warmFiles(backupDirs(names));
  };
  const restore = (name: string) => async (): Promise<Measured> => {
    const m = await spawnTimed(process.execPath, [WALVAULT_BIN, 'restore', '--archive', archive, '--backup', name, target]);
    return { ...m, bytes: dirBytes(target) };
  };
  const chainName = `walvault restore of the chain (full + ${incrementals.length} incrementals)`;
  const fullName = 'walvault restore of a full backup of the same data';
  console.log('restores:');
  const results = summarizeAll(
    await alternate([
      { name: chainName, prepare: prepare([first, ...incrementals.map((i) => i.name)]), run: restore(lastInc) },
      { name: fullName, prepare: prepare([lastFull]), run: restore(lastFull) },
    ], RESTORE_ROUNDS),
  );
  removeDir(target);

  const numbers = ({ name: _name, ...m }: Pushed): Measured => m;
  const inc = summarize('walvault backup push --incremental', incrementals.map(numbers));
  const full = summarize('walvault backup push (full)', fulls.map(numbers));
  const timeRatio = inc.median.seconds / full.median.seconds;
  const bytesRatio = inc.median.storedBytes / full.median.storedBytes;
  const chain = results.get(chainName)!;
  const whole = results.get(fullName)!;
  const throughput = (s: typeof chain) => s.median.bytes / s.median.seconds;
  const restoreRatio = throughput(chain) / throughput(whole);
  const db = `${fmt(dbBytes / MiB, 0)} MiB of random text and numbers, ${shares.map((x) => fmt(x * 100, 1)).join('%, ')}% of its blocks changed in the rounds (WAL summaries)`;
  const out: Row[] = [
    {
      measure: `incremental push against a full push of the same data: ${db}`,
      walvault: `${describe(inc)}; stored ${fmt(inc.median.storedBytes / MiB, 1)} MiB median`,
      peer: `${describe(full)}; stored ${fmt(full.median.storedBytes / MiB, 0)} MiB median`,
      ratio: `time ${fmt(timeRatio * 100, 1)}%, stored bytes ${fmt(bytesRatio * 100, 1)}% of the full's`,
      goal: `time <= ${TIME_GOAL * 100}%, stored bytes <= ${BYTES_GOAL * 100}%, peak RSS < ${RSS_GOAL_MIB} MiB`,
      met: timeRatio <= TIME_GOAL && bytesRatio <= BYTES_GOAL && inc.peakRssMiB < RSS_GOAL_MIB && full.peakRssMiB < RSS_GOAL_MIB,
      data: { incremental: inc, full, timeRatio, bytesRatio },
    },
    {
      measure: `restore of full + ${incrementals.length} incrementals against a full backup of the same final data: ${db}`,
      walvault: describe(chain, { throughput: true }),
      peer: describe(whole, { throughput: true }),
      ratio: `${fmt(restoreRatio, 2)}x the full restore's throughput`,
      goal: `>= ${RESTORE_GOAL}x (median), peak RSS < ${RSS_GOAL_MIB} MiB`,
      met: restoreRatio >= RESTORE_GOAL && chain.peakRssMiB < RSS_GOAL_MIB,
      data: { chain, full: whole, restoreRatio },
    },
  ];
  printRows('incremental bench (PostgreSQL 17)', out);
  saveRows('incremental', startedAt, { params: { bigMiB: BIG_MIB, smallMiB: SMALL_MIB, databaseBytes: dbBytes, changedShares: shares, ...(REUSE ? { reusedArchive: REUSE } : {}) } }, out);
}

runBench('incremental bench', main);
