/**
 * `npm run bench`, part two: the walvault receiver against pg_receivewal, in one run, on one
 * PostgreSQL 15 cluster (16 MiB segments, TLS on with a self-signed certificate generated
 * into its data directory). Its WAL is rows of random text and numbers (bench-data.ts); its
 * zstd level 1 ratio is measured first and printed.
 *
 * Cases (BENCH_RECEIVE_CASES, default all of "drain,s3-drain,sites,live,tls,s3-live"):
 *   drain     a backlog of BENCH_WAL_MB (default 1024) MiB held by slots reserved before it
 *             was written; each receiver starts cold on its own slot and is timed until
 *             every segment is complete where it puts them: walvault into a local archive
 *             (the site default: uncompressed, hard-linked from the spool when the archive
 *             shares the state directory's filesystem; BENCH_ARCHIVE_DIR=<dir> puts it
 *             elsewhere) against pg_receivewal into a directory. Goal: >= 1.0x.
 *   s3-drain  the same backlog, walvault into s3rver with the S3 default codec (zstd).
 *   sites     the same backlog on BENCH_SITES (default 4) slots: one walvault daemon with
 *             that many sites against as many pg_receivewal processes; aggregate MiB/s.
 *             Goal: >= 0.8x.
 *   live      each receiver alone, streaming and caught up; then BENCH_LIVE_MB (default
 *             1024) MiB of WAL generated at up to BENCH_LIVE_RATE_MIBS (default 130) MiB/s,
 *             pg_switch_wal(), and the catch-up time from the end of generation until the
 *             last segment is complete (pg_receivewal: fsynced and renamed; walvault:
 *             archived), over a plain connection (sslmode=disable). CPU-s is the receiver's
 *             process tree from the start of generation to caught up; peak RSS its VmHWM.
 *             Goal: CPU <= 1.5x pg_receivewal's, peak RSS < 64 MiB.
 *   tls       the live case over TLS (sslmode=require) for both. Same goal.
 *   s3-live   the live case, walvault into s3rver with zstd. Goal: caught up within 2 s,
 *             <= 6 CPU-s per GiB of WAL, peak RSS < 100 MiB.
 * Each case runs BENCH_ROUNDS (default 3) rounds, the tools in turn, each from the same
 * start (fresh slots, directories, archive, state and s3rver; `sync` and a BENCH_SETTLE_MS
 * pause). Every run checks that no segment is missing and that the connection was TLS or not
 * as asked. s3rver's own CPU is not counted (it is the storage).
 * At the defaults it takes about 12 minutes on a 2-core machine.
 *
 * BENCH_WALVAULT_SETTINGS='{"upload_concurrency":1}' adds site settings to every walvault
 * site (recorded with the results); BENCH_CPU_PROF=<dir> writes a V8 CPU profile of every
 * walvault run (bench/profile-summary.ts summarises one); BENCH_MEM_TRACE=<file> traces their
 * process.memoryUsage() (bench/mem-probe.ts) into <file>.<run>.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { defaultCompression } from '../src/config/keys';
import { parseLsn, parseSegmentFileName, segmentFileName, segmentNumber } from '../src/wal/lsn';
import type { Storage } from '../src/storage/storage';
import { clientBin, PgCluster, removeDir } from '../test/helpers/pg-cluster';
import { S3Server } from '../test/helpers/s3-server';

/** s3rver speaks plain http, where walvault signs payloads; a real store is https, where it does not. */
const HTTPS_LIKE = { s3: { sign_payloads: false } };
import { pgConninfo, WALVAULT_BIN, writeConfig, type SiteSettings } from '../test/helpers/walvault';
import { clientEnv, dropSlot, enableTls, generateWal, zstdRatioOfFiles } from './bench-data';
import {
  alternate,
  Child,
  cpuRatio,
  describe,
  envList,
  envNumber,
  fmt,
  MiB,
  pollUntil,
  printRows,
  ROUNDS,
  runBench,
  saveRows,
  speedRatio,
  summarizeAll,
  treeCpuSeconds,
  TreeSampler,
  type Contender,
  type Measured,
  type Row,
  type Summary,
  workDir,
} from './bench-util';

const SEG_SIZE = 16 * MiB;
const CASES = ['drain', 's3-drain', 'sites', 'live', 'tls', 's3-live'] as const;
const RUN = envList('BENCH_RECEIVE_CASES', CASES, CASES);
const WAL_MB = envNumber('BENCH_WAL_MB', 1024);
const LIVE_MB = envNumber('BENCH_LIVE_MB', 1024);
const LIVE_RATE = envNumber('BENCH_LIVE_RATE_MIBS', 130);
const SITES = Math.round(envNumber('BENCH_SITES', 4));
const OVERRIDES: Partial<SiteSettings> = process.env.BENCH_WALVAULT_SETTINGS ? JSON.parse(process.env.BENCH_WALVAULT_SETTINGS) : {};
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
const MEM_TRACE = process.env.BENCH_MEM_TRACE ? path.resolve(process.env.BENCH_MEM_TRACE) : undefined;
// Generous: the bench must finish on a loaded machine, but a hung receiver must not hang it.
const TIMEOUT_MS = 300_000 + Math.max(WAL_MB * SITES, LIVE_MB) * 500;

// ---------------------------------------------------------------------------
// Where receivers put finished segments

interface Output {
  has(name: string): Promise<boolean>;
  missing(names: string[]): Promise<string[]>;
}

/** A directory of segment files: pg_receivewal's (NAME.partial renamed once full and fsynced), or a local archive's wal/. */
function dirOutput(dir: string): Output {
  return {
    has: async (name) => fs.existsSync(path.join(dir, name)),
    missing: async (names) => {
      const present = new Set(fs.existsSync(dir) ? fs.readdirSync(dir) : []);
      return names.filter((n) => !present.has(n));
    },
  };
}

/** An S3 archive's wal/ prefix: an object is there once stored and read back. */
function s3Output(storage: Storage): Output {
  return {
    // s3rver can fail a request while it writes: "not yet", the next poll asks again.
    has: async (name) => (await storage.head(`wal/${name}`).catch(() => null)) !== null,
    missing: async (names) => {
      const present = new Set((await storage.list('wal/')).map((o) => o.key.slice('wal/'.length)));
      return names.filter((n) => !present.has(n));
    },
  };
}

// ---------------------------------------------------------------------------
// Tools

interface Started {
  procs: Child[];
  /** One per slot, in the slots' order. */
  outputs: Output[];
  stopSignal: NodeJS.Signals;
  close?: () => Promise<void>;
}

interface Tool {
  name: string;
  key: string;
  /** Slots (streams) it takes. */
  streams: number;
  /** How often to look for a finished segment: a file's existence is cheap, an S3 HEAD is not. */
  pollMs: number;
  tls: boolean;
  /** Untimed, before the settle pause (an s3rver). */
  before?: () => Promise<void>;
  start(slots: string[], dir: string, run: string): Started;
  after?: () => Promise<void>;
}

let cluster: PgCluster;
let archiveParent: string;

const conninfo = (tls: boolean) => `${pgConninfo(cluster)} sslmode=${tls ? 'require' : 'disable'}`;

function pgReceivewal(opts: { streams?: number; tls?: boolean } = {}): Tool {
  const streams = opts.streams ?? 1;
  const tls = opts.tls ?? false;
  return {
    name: streams > 1 ? `${streams} x pg_receivewal` : `pg_receivewal${tls ? ' (TLS)' : ''}`,
    key: `pgrw${streams}${tls ? 't' : ''}`,
    streams,
    tls,
    pollMs: 10,
    start: (slots, dir) => {
      const procs: Child[] = [];
      const outputs: Output[] = [];
      slots.forEach((slot, i) => {
        const out = path.join(dir, `pg_receivewal-${i}`);
        fs.mkdirSync(out, { recursive: true });
        // Default durability (fsync when a segment is closed), as an operator would run it.
        procs.push(new Child(`pg_receivewal (${slot})`, clientBin('pg_receivewal'), ['-D', out, `--slot=${slot}`, '-d', conninfo(tls), '--no-loop', '--no-password'], clientEnv()));
        outputs.push(dirOutput(out));
      });
      // SIGINT is pg_receivewal's documented way to stop.
      return { procs, outputs, stopSignal: 'SIGINT' };
    },
  };
}

/** walvault's site codec where the bench does not override it: the default for that archive. */
const codecOf = (archive: string) => String(OVERRIDES.compression ?? defaultCompression(archive));

function walvault(opts: { sites?: number; tls?: boolean; s3?: boolean } = {}): Tool {
  const sites = opts.sites ?? 1;
  const tls = opts.tls ?? false;
  let s3: S3Server | undefined;
  const name = opts.s3 ? `walvault into s3rver (${codecOf('s3://x')})` : sites > 1 ? `walvault, ${sites} sites in one daemon` : `walvault${tls ? ' (TLS)' : ''}`;
  return {
    name,
    key: `wv${sites}${tls ? 't' : ''}${opts.s3 ? 's' : ''}`,
    streams: sites,
    tls,
    pollMs: opts.s3 ? 50 : 10,
    before: opts.s3
      ? async () => {
          s3 = await S3Server.start({ bucket: 'walvault-bench' });
        }
      : undefined,
    after: opts.s3
      ? async () => {
          await s3?.destroy();
          s3 = undefined;
        }
      : undefined,
    start: (slots, dir, run) => {
      const archives = slots.map((_, i) => (s3 ? s3.url(`site${i}`) : path.join(archiveParent, path.basename(dir), `site${i}`, 'archive')));
      const config = writeConfig(
        dir,
        Object.fromEntries(slots.map((slot, i) => [`site${i}`, { pg: conninfo(tls), archive: archives[i], state: path.join(dir, `site${i}`, 'state'), slot, ...(s3 ? HTTPS_LIKE : {}), ...OVERRIDES }])),
        // Per-segment debug lines would be work pg_receivewal does not do.
        'info',
      );
      const env: NodeJS.ProcessEnv = { ...(s3?.env() ?? {}) };
      if (MEM_TRACE) Object.assign(env, { NODE_OPTIONS: `--require ${path.join(__dirname, 'mem-probe.js')}`, WALVAULT_BENCH_MEM_TRACE: `${MEM_TRACE}.${run}` });
      const prof = CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`] : [];
      const proc = new Child(name, process.execPath, [...prof, WALVAULT_BIN, 'run', '--config', config], env);
      if (!s3) return { procs: [proc], outputs: archives.map((a) => dirOutput(path.join(a, 'wal'))), stopSignal: 'SIGTERM' };
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { S3Storage, parseS3Url } = require('../src/storage/s3') as typeof import('../src/storage/s3');
      const storages = archives.map((a) => new S3Storage(parseS3Url(a)!, { ...s3!.settings(), signPayloads: false }));
      return { procs: [proc], outputs: storages.map(s3Output), stopSignal: 'SIGTERM', close: async () => void (await Promise.all(storages.map((s) => s.close()))) };
    },
  };
}

// ---------------------------------------------------------------------------
// Runs

let work: string;

async function lsnOf(sql: string): Promise<bigint> {
  return parseLsn(String((await cluster.query(sql))[0].l));
}

function segNames(from: bigint, to: bigint): string[] {
  const names: string[] = [];
  for (let s = from; s <= to; s++) names.push(segmentFileName(1, s, SEG_SIZE));
  return names;
}

async function createSlots(slots: string[]): Promise<Map<string, bigint>> {
  const first = new Map<string, bigint>();
  for (const slot of slots) {
    const lsn = await lsnOf(`SELECT lsn::text AS l FROM pg_create_physical_replication_slot('${slot}', true)`);
    first.set(slot, segmentNumber(lsn, SEG_SIZE));
  }
  return first;
}

/** Every slot streamed by a walsender in state streaming, over TLS exactly when `tls`. */
async function waitStreaming(slots: string[], started: Started, tls: boolean): Promise<void> {
  const list = slots.map((s) => `'${s}'`).join(', ');
  let ssl: boolean[] = [];
  await pollUntil(
    async () => {
      for (const p of started.procs) if (!p.running) throw new Error(`${p.label} exited:\n${p.tail()}`);
      const rows = await cluster.query(
        `SELECT r.state, s.ssl FROM pg_replication_slots sl JOIN pg_stat_replication r ON r.pid = sl.active_pid JOIN pg_stat_ssl s ON s.pid = r.pid WHERE sl.slot_name IN (${list})`,
      );
      ssl = rows.map((r) => r.ssl === true);
      return rows.length === slots.length && rows.every((r) => r.state === 'streaming');
    },
    { timeoutMs: 60_000, intervalMs: 50, what: `streaming on ${list}` },
  );
  if (ssl.some((s) => s !== tls)) throw new Error(`the connections on ${list} are ${tls ? 'not all' : 'partly'} TLS, but ${tls ? 'sslmode=require' : 'sslmode=disable'} was asked`);
}

/** Polls until every output holds `last`, then until none of its names is missing. */
async function waitComplete(started: Started, names: string[][], intervalMs: number): Promise<void> {
  await pollUntil(
    async () => {
      for (const p of started.procs) if (!p.running) throw new Error(`${p.label} exited before it held every segment:\n${p.tail()}`);
      // Cheap test first: a listing on every poll would cost the receivers CPU.
      for (const [i, o] of started.outputs.entries()) if (!(await o.has(names[i][names[i].length - 1]))) return false;
      for (const [i, o] of started.outputs.entries()) if ((await o.missing(names[i])).length > 0) return false;
      return true;
    },
    { timeoutMs: TIMEOUT_MS, intervalMs, what: `${started.procs[0].label} to hold ${names[0][0]}..${names[0][names[0].length - 1]}` },
  );
}

/**
 * Starts `tool` on `slots`, lets `body` do the timed part, and always stops it, drops the
 * slots and removes its files.
 */
async function withTool(tool: Tool, slots: string[], run: string, body: (started: Started, sampler: TreeSampler) => Promise<Measured>): Promise<Measured> {
  const dir = path.join(work, run);
  fs.mkdirSync(dir, { recursive: true });
  const started = tool.start(slots, dir, run);
  const sampler = new TreeSampler(started.procs.map((p) => p.pid));
  try {
    return await body(started, sampler);
  } finally {
    sampler.finish();
    await Promise.all(started.procs.map((p) => p.stop(started.stopSignal)));
    await started.close?.();
    for (const s of slots) await dropSlot(cluster, s);
    removeDir(dir);
    removeDir(path.join(archiveParent, run));
  }
}

/** Drain contender: slots reserved before the backlog, `drain<round>_<key>_<i>`. */
function drainSlots(tool: Tool, round: number): string[] {
  return Array.from({ length: tool.streams }, (_, i) => `drain${round}_${tool.key}_${i}`);
}

function drainContender(tool: Tool, backlog: { first: Map<string, bigint>; endSegNo: bigint }): Contender {
  return {
    name: tool.name,
    prepare: tool.before,
    cleanup: tool.after,
    run: (round) => {
      const slots = drainSlots(tool, round);
      const names = slots.map((s) => segNames(backlog.first.get(s)!, backlog.endSegNo));
      const t0 = performance.now();
      return withTool(tool, slots, `drain-${tool.key}-${round}`, async (started, sampler) => {
        await waitComplete(started, names, tool.pollMs);
        const seconds = (performance.now() - t0) / 1000;
        // Fresh processes: all their CPU is the drain's (start-up included, as in the wall time).
        const cpuSeconds = treeCpuSeconds(started.procs.map((p) => p.pid));
        return { seconds, cpuSeconds, ...sampler.finish(), bytes: names.flat().length * SEG_SIZE };
      });
    },
  };
}

function liveContender(tool: Tool): Contender {
  return {
    name: tool.name,
    prepare: tool.before,
    cleanup: tool.after,
    run: async (round) => {
      const slots = Array.from({ length: tool.streams }, (_, i) => `live${round}_${tool.key}_${i}`);
      const first = await createSlots(slots);
      return withTool(tool, slots, `live-${tool.key}-${round}`, async (started, sampler) => {
        await waitStreaming(slots, started, tool.tls);
        const pids = started.procs.map((p) => p.pid);
        const cpu0 = treeCpuSeconds(pids);
        const gen = await generateWal(cluster, { mib: LIVE_MB, rateMiBs: LIVE_RATE });
        const t0 = performance.now();
        const last = String((await cluster.query(`SELECT pg_walfile_name(pg_switch_wal()) AS n`))[0].n);
        const endSegNo = parseSegmentFileName(last, SEG_SIZE).segNo;
        await waitComplete(started, slots.map((s) => segNames(first.get(s)!, endSegNo)), tool.pollMs);
        const seconds = (performance.now() - t0) / 1000;
        const cpuSeconds = treeCpuSeconds(pids) - cpu0;
        return { seconds, cpuSeconds, ...sampler.finish(), bytes: gen.bytes, generationSeconds: gen.seconds };
      });
    },
  };
}

// ---------------------------------------------------------------------------
// Rows

/** walvault's and the peer's summaries, from the results by tool name. */
function pair(res: Map<string, Measured[]>, names: [string, string]): [Summary, Summary] {
  const s = summarizeAll(res);
  return [s.get(names[0])!, s.get(names[1])!];
}

function throughputRow(measure: string, res: Map<string, Measured[]>, names: [string, string], goal?: number): Row {
  const [w, p] = pair(res, names);
  const ratio = speedRatio(w, p);
  return {
    measure,
    walvault: describe(w, { throughput: true }),
    peer: describe(p, { throughput: true }),
    ratio: `${fmt(ratio, 2)}x ${names[1]} (throughput); CPU ${fmt(cpuRatio(w, p), 2)}x`,
    goal: goal === undefined ? 'none set' : `>= ${goal}x (median)`,
    met: goal === undefined ? undefined : ratio >= goal,
    data: { walvault: w, peer: p, throughputRatio: ratio, cpuRatio: cpuRatio(w, p) },
  };
}

function liveRow(measure: string, res: Map<string, Measured[]>, names: [string, string]): Row {
  const [w, p] = pair(res, names);
  const cpu = cpuRatio(w, p);
  return {
    measure,
    walvault: describe(w, { label: 'caught up in', cpuPerGiB: true, generation: true }),
    peer: describe(p, { label: 'caught up in', cpuPerGiB: true, generation: true }),
    ratio: `CPU ${fmt(cpu, 2)}x; peak RSS ${fmt(w.peakRssMiB / p.peakRssMiB, 1)}x`,
    goal: 'CPU <= 1.5x pg_receivewal, peak RSS < 64 MiB',
    met: cpu <= 1.5 && w.peakRssMiB < 64,
    data: { walvault: w, peer: p, cpuRatio: cpu },
  };
}

async function main(): Promise<void> {
  const startedAt = new Date();
  work = workDir('walvault-receive-bench-');
  archiveParent = process.env.BENCH_ARCHIVE_DIR ? workDir('walvault-bench-archive-', path.resolve(process.env.BENCH_ARCHIVE_DIR)) : work;
  const localCodec = codecOf(archiveParent);
  const linked = fs.statSync(archiveParent).dev === fs.statSync(work).dev && localCodec === 'none' && OVERRIDES.encryption_public_key_file === undefined;
  const archiveKind = `${localCodec}, ${linked ? 'spool files hard-linked into it' : 'segments written into it'}`;
  const rows: Row[] = [];
  const facts: Record<string, unknown> = {};
  console.log(`receive bench: cases ${RUN.join(', ')}; backlog ${WAL_MB} MiB, live ${LIVE_MB} MiB at up to ${LIVE_RATE} MiB/s, ${SITES} sites; local archive ${archiveKind}`);
  const [wvLocal, pgrw, wvS3] = [walvault(), pgReceivewal(), walvault({ s3: true })];
  const [wvSites, pgrwSites] = [walvault({ sites: SITES }), pgReceivewal({ streams: SITES })];
  const [wvTls, pgrwTls] = [walvault({ tls: true }), pgReceivewal({ tls: true })];
  const drainTools = [
    ...(RUN.includes('drain') ? [wvLocal, pgrw] : []),
    ...(RUN.includes('s3-drain') ? [wvS3] : []),
    ...(RUN.includes('s3-drain') && !RUN.includes('drain') ? [pgrw] : []),
    ...(RUN.includes('sites') ? [wvSites, pgrwSites] : []),
  ];
  const slotsNeeded = drainTools.reduce((n, t) => n + t.streams, 0) * ROUNDS + SITES + 4;
  try {
    cluster = await PgCluster.start({
      walSegSizeMiB: 16,
      settings: {
        // Only the slots may hold WAL, and no checkpoint may recycle or add to it mid-run.
        max_wal_size: '16GB',
        min_wal_size: '80MB',
        wal_keep_size: '0',
        checkpoint_timeout: '1h',
        max_replication_slots: slotsNeeded,
        max_wal_senders: 2 * SITES + 4,
      },
    });
    await enableTls(cluster);

    // What the WAL is like: 64 MiB of it, held by a slot, each segment through zstd -1.
    const probe = await createSlots(['ratio_probe']);
    await generateWal(cluster, { mib: 64 });
    const probeEnd = parseSegmentFileName(String((await cluster.query(`SELECT pg_walfile_name(pg_switch_wal()) AS n`))[0].n), SEG_SIZE).segNo;
    facts.walZstdRatio = zstdRatioOfFiles(segNames(probe.get('ratio_probe')! + 1n, probeEnd).map((n) => cluster.walFilePath(n)));
    await dropSlot(cluster, 'ratio_probe');
    console.log(`WAL of random-text rows: zstd -1 ratio ${fmt(facts.walZstdRatio as number, 2)}:1 (16 MiB segments, each alone)`);

    if (drainTools.length > 0) {
      const slots = Array.from({ length: ROUNDS }, (_, r) => drainTools.flatMap((t) => drainSlots(t, r))).flat();
      const first = await createSlots(slots);
      const t0 = performance.now();
      const wal = await generateWal(cluster, { mib: WAL_MB });
      const endName = String((await cluster.query(`SELECT pg_walfile_name(pg_switch_wal()) AS n`))[0].n);
      const backlog = { first, endSegNo: parseSegmentFileName(endName, SEG_SIZE).segNo };
      facts.backlog = { mib: wal.bytes / MiB, seconds: (performance.now() - t0) / 1000, endSegment: endName };
      console.log(`backlog: ${fmt(wal.bytes / MiB, 0)} MiB up to ${endName}, written in ${fmt(wal.seconds)} s; drains:`);
      const res = await alternate(drainTools.map((t) => drainContender(t, backlog)));
      if (RUN.includes('drain')) rows.push(throughputRow(`WAL backlog drain, ${fmt(WAL_MB, 0)} MiB, into a local archive (${archiveKind})`, res, [wvLocal.name, pgrw.name], 1.0));
      if (RUN.includes('s3-drain')) rows.push(throughputRow(`WAL backlog drain, ${fmt(WAL_MB, 0)} MiB, into s3rver (${codecOf('s3://x')}); the peer into a local directory`, res, [wvS3.name, pgrw.name]));
      if (RUN.includes('sites')) rows.push(throughputRow(`WAL backlog drain, ${fmt(WAL_MB, 0)} MiB per site, ${SITES} sites at once (aggregate)`, res, [wvSites.name, pgrwSites.name], 0.8));
    }

    const liveTools = [...(RUN.includes('live') ? [wvLocal, pgrw] : []), ...(RUN.includes('tls') ? [wvTls, pgrwTls] : []), ...(RUN.includes('s3-live') ? [wvS3] : [])];
    if (liveTools.length > 0) {
      console.log(`live WAL, ${fmt(LIVE_MB, 0)} MiB at up to ${LIVE_RATE} MiB/s:`);
      const res = await alternate(liveTools.map(liveContender));
      if (RUN.includes('live')) rows.push(liveRow(`WAL streamed live at ~${LIVE_RATE} MiB/s into a local archive (${archiveKind}), ${fmt(LIVE_MB, 0)} MiB, plain connection`, res, [wvLocal.name, pgrw.name]));
      if (RUN.includes('tls')) rows.push(liveRow(`the same over TLS (sslmode=require)`, res, [wvTls.name, pgrwTls.name]));
      if (RUN.includes('s3-live')) {
        const s = summarizeAll(res).get(wvS3.name)!;
        const perGiB = s.median.cpuSeconds / (s.median.bytes / (1024 * MiB));
        rows.push({
          measure: `the same into s3rver with ${codecOf('s3://x')} (the S3 default), plain connection`,
          walvault: describe(s, { label: 'caught up in', cpuPerGiB: true, generation: true }),
          peer: '-',
          ratio: '-',
          goal: 'caught up within 2 s; <= 6 CPU-s per GiB; peak RSS < 100 MiB',
          met: s.median.seconds <= 2 && perGiB <= 6 && s.peakRssMiB < 100,
          data: { walvault: s, cpuPerGiB: perGiB },
        });
      }
    }

    printRows('receive bench (CPU ratio: walvault / pg_receivewal, lower is better; throughput ratio: above 1, walvault is faster)', rows);
    saveRows('receive', startedAt, { params: { cases: RUN, backlogMiB: WAL_MB, liveMiB: LIVE_MB, liveRateMiBs: LIVE_RATE, sites: SITES, localArchive: archiveKind, walvaultOverrides: OVERRIDES, cpuProfile: CPU_PROF_DIR ?? null, memTrace: MEM_TRACE ?? null }, ...facts }, rows, { pgReceivewal: clientBin('pg_receivewal') });
  } finally {
    await cluster?.destroy().catch((err) => console.error(`could not destroy the cluster: ${(err as Error).message}`));
    removeDir(work);
    if (archiveParent !== work) removeDir(archiveParent);
  }
}

runBench('receive bench', main);
