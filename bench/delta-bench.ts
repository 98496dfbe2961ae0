/**
 * `npm run bench`, part six: `walvault restore --delta` onto a data directory that diverged
 * from the backup by about 5%, against a full restore of the same backup and against
 * `pgbackrest restore --delta` on the same change (issue 20, acceptance 3).
 *
 * The database: "real" (bench-data.ts; BENCH_DELTA_DATABASES picks others), autovacuum off so
 * nothing writes between the two backups.
 *   1. Backups of the same cluster state: `walvault backup push --fast` beside a running
 *      receiver, into a local archive compressed with zstd level 1 by walvault
 *      (backup_compression = client: 32 KiB frames and a block index per tar, so a delta
 *      fetches only the blocks that differ; BENCH_DELTA_BACKUP_COMPRESSION=server for a
 *      backup the server compresses, which a delta reads whole), then a pgBackRest full
 *      backup (zst level 1, process-max 2).
 *      The primary is stopped. Each tool restores its backup once, untimed, into a base
 *      directory: a data directory equal to that tool's backup (the relation files of the two
 *      bases are compared and the differing ones counted: expected none).
 *   2. The change, the same for both tools in every round (a copy of the tool's base by
 *      `cp -a`, then changed; untimed): of the relation files under base/ (every fork and
 *      segment), BENCH_DELTA_CHANGE_PCT (default 5) percent of their bytes are overwritten, as
 *      single 8 KiB blocks at positions drawn (seed BENCH_DELTA_SEED, default 20) uniformly
 *      over all their blocks (BENCH_DELTA_RUN_BLOCKS=N: runs of N consecutive blocks from
 *      such positions, a change clustered as updates of recent rows are), with pseudo-random
 *      bytes; two relation files of at most 1 MiB
 *      (drawn from the same seed) are deleted; a 1 MiB file the backup does not have is added
 *      beside them (a relation created after the backup). It models the data directory of an
 *      old primary that diverged (random updates over the whole database). The bench prints
 *      how many files it touches and their share of the data directory's bytes: a delta that
 *      compares whole files (walvault's and pgBackRest's) fetches those again.
 *   3. BENCH_DELTA_ROUNDS (default BENCH_ROUNDS, 3) alternating rounds, each run after `sync`
 *      and a BENCH_SETTLE_MS pause: walvault full restore into an empty directory;
 *      pgBackRest full restore likewise; each full restore again into memory just freed (the
 *      target a cached copy of the base, deleted after the pause, just before the timed
 *      restore: the page cache the restore fills takes pages freed a moment before, where
 *      after the pause a VM may have handed them back to its host, which makes a page's
 *      first touch dear); walvault `restore --delta` onto a fresh changed copy;
 *      `pgbackrest restore --delta` (checksums, no --force) onto a fresh changed copy, owned
 *      by the server's OS user as pgBackRest runs; walvault `restore --delta` onto an
 *      unchanged copy (the floor: every file read and kept).
 *   4. After each tool's first delta restore (untimed), every file of the result is compared
 *      with that tool's base (a full restore of the same backup): the same paths, sizes and
 *      SHA-256 (pgBackRest's postgresql.auto.conf excepted: its restore_command names the
 *      target directory). A difference ends the bench: its times would not be a restore's.
 * Goal (issue 20): walvault's delta restore median at most 30% of its full restore's median,
 * in both states of memory.
 * Against pgBackRest's delta on the same change: reported, no goal.
 *
 * BENCH_CPU_PROF=<dir>: V8 CPU profiles of walvault's timed restores, every thread's
 * (bench/profile-summary.ts summarises), a directory per run named by its order and kind.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chownForServer, removeDir } from '../test/helpers/pg-cluster';
import { mulberry32, xorshift32 } from '../test/helpers/seeded-random';
import { WALVAULT_BIN } from '../test/helpers/walvault';
import { benchDatabases, DATABASE_KINDS, PGBACKREST, PgBackRest, requirePgBackRest, startSite, type Database, type DatabaseFacts } from './bench-data';
import { alternate, describe, digestDiff, envList, envNumber, fileDigests, filesUnder, fmt, MiB, ROUNDS, runBench, speedRatio, spawnTimed, summarizeAll, type Contender, type Measured, type Row } from './bench-util';

const DATABASES = envList('BENCH_DELTA_DATABASES', ['real'] as const, DATABASE_KINDS);
const ROUNDS_DELTA = Math.round(envNumber('BENCH_DELTA_ROUNDS', ROUNDS));
const CHANGE_PCT = envNumber('BENCH_DELTA_CHANGE_PCT', 5);
const RUN_BLOCKS = Math.round(envNumber('BENCH_DELTA_RUN_BLOCKS', 1));
const SEED = Math.round(envNumber('BENCH_DELTA_SEED', 20, { allowZero: true }));
const BACKUP_COMPRESSION = envList('BENCH_DELTA_BACKUP_COMPRESSION', ['client'] as const, ['client', 'server'] as const)[0];
const GOAL = 0.3;
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
const BLOCK = 8192;
const DELETED_FILES = 2;
const DELETE_MAX_BYTES = MiB;
const ADDED_BYTES = MiB;

/** `bytes` pseudo-random bytes from `seed`. */
function noise(seed: number, bytes: number): Buffer {
  const next = xorshift32(seed);
  const b = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes; i += 4) b.writeUInt32LE(next(), i);
  return b;
}

/** What the change does, drawn once from the base's relation files. */
interface Change {
  /** Relation file -> the block numbers overwritten in it. */
  blocks: Map<string, number[]>;
  deleted: string[];
  added: string;
  facts: {
    relationFiles: number;
    relationBytes: number;
    changedBlocks: number;
    changedBytes: number;
    /** Files overwritten, deleted or added. */
    touchedFiles: number;
    /** Their bytes in the base (the added one's too): what a whole-file delta fetches again. */
    touchedBytes: number;
    dataDirBytes: number;
  };
}

const RELATION_FILE = /^base\/[0-9]+\/[0-9]+(_(fsm|vm|init))?(\.[0-9]+)?$/;

function drawChange(base: string): Change {
  const all = filesUnder(base);
  const dataDirBytes = all.reduce((n, f) => n + fs.statSync(f.abs).size, 0);
  const rels = all.filter((f) => RELATION_FILE.test(f.rel)).map((f) => ({ rel: f.rel, size: fs.statSync(f.abs).size }));
  const relationBytes = rels.reduce((n, f) => n + f.size, 0);
  const next = mulberry32(SEED);
  // Deleted first (files no larger than 1 MiB), then blocks over the other files' blocks.
  const small = rels.filter((f) => f.size > 0 && f.size <= DELETE_MAX_BYTES);
  const deleted: string[] = [];
  while (deleted.length < Math.min(DELETED_FILES, small.length)) {
    const f = small[Math.floor(next() * small.length)].rel;
    if (!deleted.includes(f)) deleted.push(f);
  }
  const kept = rels.filter((f) => !deleted.includes(f.rel));
  const starts: number[] = [];
  let totalBlocks = 0;
  for (const f of kept) {
    starts.push(totalBlocks);
    totalBlocks += Math.floor(f.size / BLOCK);
  }
  const want = Math.min(totalBlocks, Math.round((relationBytes * CHANGE_PCT) / 100 / BLOCK));
  const chosen = new Set<number>();
  // Runs of RUN_BLOCKS blocks from uniform starts (1: single blocks), over the files in order.
  while (chosen.size < want) {
    const g = Math.floor(next() * totalBlocks);
    for (let k = 0; k < RUN_BLOCKS && g + k < totalBlocks && chosen.size < want; k++) chosen.add(g + k);
  }
  const blocks = new Map<string, number[]>();
  for (const g of [...chosen].sort((a, b) => a - b)) {
    let lo = 0;
    let hi = kept.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= g) lo = mid;
      else hi = mid - 1;
    }
    const list = blocks.get(kept[lo].rel) ?? [];
    list.push(g - starts[lo]);
    blocks.set(kept[lo].rel, list);
  }
  const db = path.dirname(kept[0]?.rel ?? rels[0].rel);
  const oids = rels.filter((f) => path.dirname(f.rel) === db).map((f) => Number(/([0-9]+)[^/]*$/.exec(f.rel)![1]));
  const added = `${db}/${Math.max(...oids) + 1000}`;
  const sizeOf = new Map(rels.map((f) => [f.rel, f.size]));
  const touched = [...blocks.keys(), ...deleted];
  return {
    blocks,
    deleted,
    added,
    facts: {
      relationFiles: rels.length,
      relationBytes,
      changedBlocks: chosen.size,
      changedBytes: chosen.size * BLOCK,
      touchedFiles: touched.length + 1,
      touchedBytes: touched.reduce((n, f) => n + sizeOf.get(f)!, 0) + ADDED_BYTES,
      dataDirBytes,
    },
  };
}

/** A copy of `base` at `target` with `change` applied (untimed). */
function changedCopy(base: string, target: string, change: Change | null, forServer: boolean): void {
  removeDir(target);
  execFileSync('cp', ['-a', base, target]);
  if (change) {
    for (const [rel, blocks] of change.blocks) {
      const fd = fs.openSync(path.join(target, rel), 'r+');
      try {
        for (const b of blocks) fs.writeSync(fd, noise(SEED * 7919 + b + rel.length * 104729, BLOCK), 0, BLOCK, b * BLOCK);
      } finally {
        fs.closeSync(fd);
      }
    }
    for (const rel of change.deleted) fs.rmSync(path.join(target, rel));
    fs.writeFileSync(path.join(target, change.added), noise(SEED + 1, ADDED_BYTES), { mode: 0o600 });
  }
  if (forServer) chownForServer(target);
}

async function rowsOf(db: Database, dir: string): Promise<Row[]> {
  const { cluster, facts } = db;
  fs.mkdirSync(dir, { recursive: true });
  // 1. The two backups of the same state, then the primary stopped.
  const site = await startSite(path.join(dir, 'walvault'), cluster, 'bench_delta', { compression: 'zstd', backup_compression: BACKUP_COMPRESSION });
  let wv: { archive: string; name: string };
  try {
    const push = await spawnTimed(process.execPath, [WALVAULT_BIN, 'backup', 'push', '--config', site.config, '--fast']);
    wv = { archive: site.archive, name: push.stdout.trim() };
  } finally {
    await site.stop();
  }
  const pbr = new PgBackRest(path.join(dir, 'pgbackrest'), cluster, 'zst');
  await pbr.reset();
  await pbr.backup();
  await cluster.destroy();

  const wvBase = path.join(dir, 'base-walvault');
  const pbrBase = path.join(dir, 'base-pgbackrest');
  let profiled = 0;
  // A directory per run: each thread of it writes a profile there.
  const profile = (what: string) => (CPU_PROF_DIR ? ['--cpu-prof', '--cpu-prof-dir', path.join(CPU_PROF_DIR, `${String(++profiled).padStart(2, '0')}-${what}`)] : []);
  const restoreArgs = (target: string, delta: boolean, what = 'untimed') => [...profile(what), WALVAULT_BIN, 'restore', '--archive', wv.archive, '--backup', wv.name, ...(delta ? ['--delta'] : []), target];
  await spawnTimed(process.execPath, [WALVAULT_BIN, 'restore', '--archive', wv.archive, '--backup', wv.name, wvBase]);
  await pbr.restore(pbrBase);
  const wvDigests = fileDigests(wvBase);
  const pbrDigests = fileDigests(pbrBase);
  const relationsOnly = (m: Map<string, { size: number; sha256: string }>) => new Map([...m].filter(([p]) => RELATION_FILE.test(p)));
  const basesDiffer = digestDiff(relationsOnly(wvDigests), relationsOnly(pbrDigests));
  const change = drawChange(wvBase);
  const c = change.facts;
  console.log(
    `  change: ${c.changedBlocks} blocks of 8 KiB overwritten (${fmt(c.changedBytes / MiB, 1)} MiB, ${fmt((100 * c.changedBytes) / c.relationBytes, 1)}% of ${c.relationFiles} relation files' ${fmt(c.relationBytes / MiB, 0)} MiB), ` +
      `${change.deleted.length} deleted (${change.deleted.join(', ')}), ${change.added} added; ${c.touchedFiles} files touched, ${fmt((100 * c.touchedBytes) / c.dataDirBytes, 1)}% of the data directory's ${fmt(c.dataDirBytes / MiB, 0)} MiB`,
  );
  console.log(`  relation files differing between the two tools' bases: ${basesDiffer.length}${basesDiffer.length ? ` (${basesDiffer.slice(0, 5).join('; ')})` : ''}`);

  // 3. The rounds.
  const target = path.join(dir, 'target');
  const withBytes = async (m: Promise<Measured>) => ({ ...(await m), bytes: facts.bytes });
  const names = {
    wvFull: 'walvault restore (full)',
    pbrFull: 'pgBackRest restore (full)',
    wvFullFreed: 'walvault restore (full), into memory just freed',
    pbrFullFreed: 'pgBackRest restore (full), into memory just freed',
    wvDelta: 'walvault restore --delta',
    pbrDelta: 'pgBackRest restore --delta',
    wvSame: 'walvault restore --delta, nothing changed',
  };
  const verified: Record<string, string> = {};
  // 4. Once per tool: the delta's result is its full restore's, file by file.
  const verify = (tool: string, full: Map<string, { size: number; sha256: string }>, except: { file: string; why: string } | null) => async () => {
    if (verified[tool] !== undefined) return;
    const diff = digestDiff(full, fileDigests(target)).filter((d) => except === null || !d.startsWith(`${except.file}: `));
    if (diff.length > 0) throw new Error(`${tool} restore --delta did not give the full restore's files (${diff.length} differ):\n${diff.slice(0, 20).join('\n')}`);
    verified[tool] = `after the first delta, all ${full.size} files equal the full restore's (path, size, SHA-256)${except ? `, but ${except.file} (${except.why})` : ''}`;
    console.log(`  checked, ${tool}: ${verified[tool]}`);
  };
  const contenders: Contender[] = [
    { name: names.wvFull, prepare: async () => removeDir(target), run: () => withBytes(spawnTimed(process.execPath, restoreArgs(target, false, 'full'))) },
    { name: names.pbrFull, prepare: async () => removeDir(target), run: () => withBytes(pbr.restore(target)) },
    // The same, but the target is a copy of the base (cached), deleted after the pause, just
    // before the timed restore: the page cache it writes takes pages freed a moment before.
    {
      name: names.wvFullFreed,
      prepare: async () => changedCopy(wvBase, target, null, false),
      run: async () => (removeDir(target), withBytes(spawnTimed(process.execPath, restoreArgs(target, false, 'full-freed')))),
    },
    { name: names.pbrFullFreed, prepare: async () => changedCopy(pbrBase, target, null, false), run: async () => (removeDir(target), withBytes(pbr.restore(target))) },
    {
      name: names.wvDelta,
      prepare: async () => changedCopy(wvBase, target, change, false),
      run: () => withBytes(spawnTimed(process.execPath, restoreArgs(target, true, 'delta'))),
      cleanup: verify('walvault', wvDigests, null),
    },
    {
      name: names.pbrDelta,
      prepare: async () => changedCopy(pbrBase, target, change, true),
      run: () => withBytes(pbr.restore(target, { delta: true })),
      cleanup: verify('pgBackRest', pbrDigests, { file: 'postgresql.auto.conf', why: "its restore_command names the restore's target directory" }),
    },
    { name: names.wvSame, prepare: async () => changedCopy(wvBase, target, null, false), run: () => withBytes(spawnTimed(process.execPath, restoreArgs(target, true, 'unchanged'))) },
  ];
  console.log(`restores of "${facts.kind}":`);
  const s = summarizeAll(await alternate(contenders, ROUNDS_DELTA));
  removeDir(target);

  const [wvFull, pbrFull, wvFullFreed, pbrFullFreed, wvDelta, pbrDelta, wvSame] = [names.wvFull, names.pbrFull, names.wvFullFreed, names.pbrFullFreed, names.wvDelta, names.pbrDelta, names.wvSame].map((n) => s.get(n)!);
  const share = wvDelta.median.seconds / wvFull.median.seconds;
  const shareFreed = wvDelta.median.seconds / wvFullFreed.median.seconds;
  const pbrShare = pbrDelta.median.seconds / pbrFull.median.seconds;
  const pbrShareFreed = pbrDelta.median.seconds / pbrFullFreed.median.seconds;
  const vsPeer = speedRatio(wvDelta, pbrDelta);
  const what =
    `${fmt(CHANGE_PCT, 0)}% of the relation bytes changed (${c.changedBlocks} 8 KiB blocks${RUN_BLOCKS > 1 ? ` in runs of ${RUN_BLOCKS}` : ''} at random, ${change.deleted.length} files deleted, 1 added: ` +
    `${c.touchedFiles} files, ${fmt((100 * c.touchedBytes) / c.dataDirBytes, 0)}% of the directory's bytes, touched)`;
  const dbText = `${facts.description} (${fmt(facts.bytes / MiB, 0)} MiB, zstd ${fmt(facts.zstdRatio, 1)}:1)`;
  const data = { database: facts, change: { ...c, deleted: change.deleted, added: change.added, seed: SEED, pct: CHANGE_PCT }, basesDiffer, verified, walvault: { full: wvFull, fullFreed: wvFullFreed, delta: wvDelta, unchanged: wvSame }, pgBackRest: { full: pbrFull, fullFreed: pbrFullFreed, delta: pbrDelta } };
  return [
    {
      measure: `delta restore / full restore, ${what}; walvault backup_compression ${BACKUP_COMPRESSION}: ${dbText}`,
      walvault: `${describe(wvDelta)}. ${describe(wvFull, { throughput: true })}. ${describe(wvFullFreed, { throughput: true })}. ${describe(wvSame)}`,
      peer: `${describe(pbrDelta)}. ${describe(pbrFull, { throughput: true })}. ${describe(pbrFullFreed, { throughput: true })}`,
      ratio: `walvault ${fmt(share, 2)} of its full restore, ${fmt(shareFreed, 2)} of it into memory just freed; pgBackRest ${fmt(pbrShare, 2)} and ${fmt(pbrShareFreed, 2)} of its own`,
      goal: `<= ${fmt(GOAL, 2)} (medians) of both full restores`,
      met: Math.max(share, shareFreed) <= GOAL,
      data: { ...data, deltaShare: share, deltaShareFreed: shareFreed, pgBackRestDeltaShare: pbrShare, pgBackRestDeltaShareFreed: pbrShareFreed },
    },
    {
      measure: `restore --delta on the same change, walvault (zstd archive, backup_compression ${BACKUP_COMPRESSION}) against pgBackRest (zst, process-max 2): ${dbText}`,
      walvault: describe(wvDelta),
      peer: describe(pbrDelta),
      ratio: `${fmt(vsPeer, 2)}x pgBackRest`,
      goal: 'none: reported',
      data: { walvault: wvDelta, pgBackRest: pbrDelta, speedRatio: vsPeer },
    },
  ];
}

async function main(): Promise<void> {
  requirePgBackRest();
  console.log(`delta bench: databases ${DATABASES.join(', ')}; ${fmt(CHANGE_PCT, 1)}% of the relation bytes changed (seed ${SEED}); ${ROUNDS_DELTA} rounds`);
  await benchDatabases({
    kind: 'delta',
    title: "delta restore bench (ratio: the delta's median time / the full restore's; walvault against pgBackRest: the peer's median time / walvault's)",
    databases: DATABASES,
    settings: () => ({ archive_mode: 'on', archive_command: '/bin/true', autovacuum: 'off' }),
    rowsOf: (db, dir) => rowsOf(db, dir),
    params: { changePct: CHANGE_PCT, runBlocks: RUN_BLOCKS, seed: SEED, deltaRounds: ROUNDS_DELTA, walvaultCodec: `zstd (${BACKUP_COMPRESSION})`, pgBackRest: 'zst level 1, process-max 2' },
    tools: { pgBackRest: `${PGBACKREST} version` },
  });
}

runBench('delta bench', main);
