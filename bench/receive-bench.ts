/**
 * `npm run bench`: the walvault receiver against pg_receivewal, on this machine, in one run.
 *
 *   1. One PostgreSQL 15 cluster (16 MiB segments), two physical slots reserved before a
 *      backlog of BENCH_WAL_MB (default 2048) MiB of WAL is generated, so both slots hold
 *      the same WAL.
 *   2. Drain: each receiver alone, started cold against its slot; timed until every segment
 *      of the backlog is complete in its directory (pg_receivewal) or archive (walvault).
 *      Peak RSS is the kernel's VmHWM of the process, cross-checked by sampling VmRSS.
 *   3. Latency: both receivers caught up and running; a burst of BENCH_BURST_MB of WAL,
 *      pg_switch_wal(), then the time from the switch returning until the switched
 *      segment is complete on each side. Median of BENCH_LATENCY_REPS.
 *
 * The bench reports, it does not gate: it exits 0 when a target is missed, and 1 only when
 * it could not measure. Results also go to bench/results/receive-<timestamp>.json.
 *
 * Caveats it cannot remove: page caches cannot be dropped (we are not allowed to, and the
 * server's WAL was just written, so both receivers read it from memory); other work on the
 * machine shows up as noise, so the load average is recorded with the results.
 *
 * walvault's archive is a local directory. By default it is on the same filesystem as the
 * state directory, where completed spool files are hard-linked into the archive (one write
 * per byte, as pg_receivewal does); BENCH_ARCHIVE_DIR=<dir> puts it elsewhere, e.g. on
 * another filesystem, where each segment is copied (a second write and read per byte).
 * The output says which case was measured.
 *
 * A third drain sends walvault's archive to s3rver (a real S3-protocol server on loopback,
 * as in the tests) with the site's default codec, from its own slot over the same backlog.
 * The backlog is heap inserts of repeated characters, so it compresses far better than
 * typical WAL: the codec bench (bench/codec-bench.ts) measures codecs on pgbench WAL.
 *
 * BENCH_CPU_PROF=<dir> makes the walvault drain write a V8 CPU profile into <dir> when it
 * stops (summarise it with `node dist/bench/profile-summary.js <file>`).
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { PgCluster, clientBin, removeDir, tmpDir } from '../test/helpers/pg-cluster';
import { fmt, machineFacts, printTable, ProcSampler, saveResults, type ProcUsage } from './bench-util';
import { WALVAULT_BIN, WalvaultProcess, archivedSegments, pgConninfo, writeConfig } from '../test/helpers/walvault';
import { parseLsn, parseSegmentFileName, segmentFileName, segmentNumber } from '../src/wal/lsn';
import { S3Server } from '../test/helpers/s3-server';
import type { Storage } from '../src/storage/storage';

const MiB = 1024 * 1024;
const SEG_MIB = 16;
const SEG_SIZE = SEG_MIB * MiB;
const SLOT_PGRW = 'bench_pgrw';
const SLOT_WALVAULT = 'bench_walvault';
const SLOT_WALVAULT_S3 = 'bench_walvault_s3';
const SLOTS = [SLOT_PGRW, SLOT_WALVAULT, SLOT_WALVAULT_S3];
const RSS_TARGET_MIB = 100;
const THROUGHPUT_TARGET_RATIO = 1.0;

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${raw} is not a positive number`);
  return n;
}

const WAL_MB = envNumber('BENCH_WAL_MB', 2048);
const BURST_MB = envNumber('BENCH_BURST_MB', 64);
const LATENCY_REPS = Math.round(envNumber('BENCH_LATENCY_REPS', 3));
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
/** BENCH_MEM_TRACE=<file>: walvault's process.memoryUsage() during the drain, as JSON lines (bench/mem-probe.ts). */
const MEM_TRACE = process.env.BENCH_MEM_TRACE ? path.resolve(process.env.BENCH_MEM_TRACE) : undefined;
/** Extra site settings for experiments, e.g. '{"upload_concurrency":1}'; recorded with the results. */
const WALVAULT_OVERRIDES: Record<string, unknown> = process.env.BENCH_WALVAULT_SETTINGS ? JSON.parse(process.env.BENCH_WALVAULT_SETTINGS) : {};
// Generous: the bench must finish on a loaded machine, but a hung receiver must not hang it.
const DRAIN_TIMEOUT_MS = 300_000 + WAL_MB * 500;

/**
 * Polls until `fn` returns true. Unlike waitFor, a throw ends the wait at once: here it
 * means a receiver died, and waiting out a long timeout would only hide that.
 */
async function pollUntil(fn: () => boolean | Promise<boolean>, opts: { timeoutMs: number; intervalMs: number; what: string }): Promise<void> {
  const deadline = performance.now() + opts.timeoutMs;
  while (!(await fn())) {
    if (performance.now() >= deadline) throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs));
  }
}

// ---------------------------------------------------------------------------
// Receivers under test

interface Receiver {
  readonly label: string;
  readonly pid: number;
  running(): boolean;
  /** Whether segment `name` is complete where this receiver puts finished segments. */
  hasSegment(name: string): boolean;
  missingSegments(names: string[]): Promise<string[]>;
  outputTail(): string;
  stop(): Promise<void>;
}

/** PG* variables in our environment would point the client at some other server. */
function clientEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  env.LC_ALL = 'C';
  return env;
}

const liveChildren = new Set<ChildProcess>();

class PgReceivewal implements Receiver {
  readonly label = 'pg_receivewal';
  private readonly child: ChildProcess;
  private stderr = '';
  private readonly exited: Promise<void>;

  constructor(
    cluster: PgCluster,
    private readonly dir: string,
  ) {
    // Default durability (fsync when a segment is closed), like an operator would run it.
    const args = ['-D', dir, `--slot=${SLOT_PGRW}`, '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '--no-loop', '--no-password'];
    this.child = spawn(clientBin('pg_receivewal'), args, { env: clientEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    liveChildren.add(this.child);
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-8000)));
    this.exited = new Promise((resolve) =>
      this.child.on('exit', () => {
        liveChildren.delete(this.child);
        resolve();
      }),
    );
    if (this.child.pid === undefined) throw new Error('pg_receivewal did not start');
  }

  get pid(): number {
    return this.child.pid!;
  }

  running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  hasSegment(name: string): boolean {
    // pg_receivewal writes NAME.partial and renames it once the segment is full and fsynced.
    return fs.existsSync(path.join(this.dir, name));
  }

  async missingSegments(names: string[]): Promise<string[]> {
    const present = new Set(fs.readdirSync(this.dir));
    return names.filter((n) => !present.has(n));
  }

  outputTail(): string {
    return this.stderr.slice(-4000);
  }

  async stop(): Promise<void> {
    // SIGINT is pg_receivewal's documented way to stop.
    if (this.running()) this.child.kill('SIGINT');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(timer);
  }
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** What the bench needs of a running walvault, whichever way it was started. */
interface WalvaultHandle {
  readonly child: ChildProcess;
  readonly running: boolean;
  readonly stderr: string;
  readonly exited: Promise<Exit>;
  /** Parsed log lines, where the handle keeps them (WalvaultProcess does). */
  readonly lines?: ReadonlyArray<Record<string, unknown>>;
  stop(signal: NodeJS.Signals, timeoutMs: number): Promise<Exit>;
}

/**
 * `node --cpu-prof bin/walvault ...`: Node refuses --cpu-prof in NODE_OPTIONS, and
 * WalvaultProcess has no way to pass node flags, so the profiled run is spawned here.
 */
class ProfiledWalvault implements WalvaultHandle {
  readonly child: ChildProcess;
  stderr = '';
  readonly exited: Promise<Exit>;

  constructor(args: string[], profileDir: string, env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, WALVAULT_BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-8000)));
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(signal: NodeJS.Signals, timeoutMs: number): Promise<Exit> {
    if (this.running) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

class Walvault implements Receiver {
  readonly label: string = 'walvault';
  private readonly proc: WalvaultHandle;
  private stopped: Promise<void> | null = null;

  constructor(
    configFile: string,
    private readonly archiveDir: string,
    opts: { profileDir?: string; memTrace?: string; env?: NodeJS.ProcessEnv } = {},
  ) {
    const args = ['run', '--config', configFile];
    const env: NodeJS.ProcessEnv = { ...opts.env };
    if (opts.memTrace) {
      env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --require ${path.join(__dirname, 'mem-probe.js')}`.trim();
      env.WALVAULT_BENCH_MEM_TRACE = opts.memTrace;
    }
    this.proc = opts.profileDir ? new ProfiledWalvault(args, opts.profileDir, env) : WalvaultProcess.start(args, env);
    liveChildren.add(this.proc.child);
    void this.proc.exited.then(() => liveChildren.delete(this.proc.child));
    if (this.proc.child.pid === undefined) throw new Error('walvault did not start');
  }

  get pid(): number {
    // WalvaultProcess runs `node bin/walvault` directly: this is the node process itself.
    return this.proc.child.pid!;
  }

  running(): boolean {
    return this.proc.running;
  }

  hasSegment(name: string): boolean {
    // LocalStorage renames a fully written, fsynced temp file into place: presence means complete.
    return fs.existsSync(path.join(this.archiveDir, 'wal', name));
  }

  async missingSegments(names: string[]): Promise<string[]> {
    const present = new Set(await archivedSegments(this.archiveDir));
    return names.filter((n) => !present.has(n));
  }

  outputTail(): string {
    return this.proc.stderr.slice(-4000);
  }

  /** Epoch ms of the log line `msg` about `segment` (debug level only), if it was logged. */
  logTime(msg: string, segment: string): number | undefined {
    const line = this.proc.lines?.find((l) => l.msg === msg && l.segment === segment);
    return typeof line?.time === 'number' ? line.time : undefined;
  }

  stop(): Promise<void> {
    this.stopped ??= this.proc.stop('SIGTERM', 60_000).then((exit) => {
      if (exit.code !== 0) console.error(`  note: walvault exited with ${exit.signal ?? `code ${exit.code}`} on SIGTERM:\n${this.outputTail()}`);
    });
    return this.stopped;
  }
}

/**
 * walvault archiving to S3: segments are present when listed. A background listing keeps
 * the cheap hasSegment check synchronous, as drain() wants it.
 */
class S3Walvault extends Walvault {
  override readonly label: string = 'walvault (s3rver)';
  private known = new Set<string>();
  private readonly poller: NodeJS.Timeout;
  private listing = false;

  constructor(
    configFile: string,
    private readonly storage: Storage,
    env: NodeJS.ProcessEnv,
  ) {
    super(configFile, '', { env });
    this.poller = setInterval(() => {
      if (this.listing) return;
      this.listing = true;
      void this.listed()
        .then((names) => (this.known = names))
        .catch(() => undefined)
        .finally(() => (this.listing = false));
    }, 250);
  }

  private async listed(): Promise<Set<string>> {
    return new Set((await this.storage.list('wal/')).map((o) => o.key.slice('wal/'.length)));
  }

  override hasSegment(name: string): boolean {
    return this.known.has(name);
  }

  override async missingSegments(names: string[]): Promise<string[]> {
    const present = await this.listed();
    return names.filter((n) => !present.has(n));
  }

  override stop(): Promise<void> {
    clearInterval(this.poller);
    return super.stop();
  }
}

/** The codec a site gets when its config names none. */
function loadDefaultCodec(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { defaultCompression } = require('../src/config/config') as typeof import('../src/config/config');
  return defaultCompression('/a/local/archive');
}

// ---------------------------------------------------------------------------
// The backlog

interface Backlog {
  tli: number;
  /** First segment each slot holds, and the last segment of the backlog (complete after the switch). */
  startSegNo: Record<string, bigint>;
  endSegNo: bigint;
  endName: string;
  generatedBytes: number;
  generateSeconds: number;
  bytesPerRow: number;
}

function segNames(tli: number, from: bigint, to: bigint): string[] {
  const names: string[] = [];
  for (let s = from; s <= to; s++) names.push(segmentFileName(tli, s, SEG_SIZE));
  return names;
}

async function one<T>(cluster: PgCluster, sql: string, col: string): Promise<T> {
  const rows = await cluster.query(sql);
  if (rows.length === 0) throw new Error(`no row from: ${sql}`);
  return rows[0][col] as T;
}

async function slotRestartLsns(cluster: PgCluster): Promise<Record<string, bigint>> {
  const rows = await cluster.query(
    `SELECT slot_name, restart_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name IN (${SLOTS.map((s) => `'${s}'`).join(', ')})`,
  );
  const out: Record<string, bigint> = {};
  for (const r of rows) out[r.slot_name] = parseLsn(r.lsn);
  if (SLOTS.some((s) => out[s] === undefined)) throw new Error('bench slots are missing');
  return out;
}

async function makeBacklog(cluster: PgCluster): Promise<Backlog> {
  for (const slot of SLOTS) await cluster.query(`SELECT pg_create_physical_replication_slot('${slot}', true)`);
  const restart = await slotRestartLsns(cluster);
  const oldest = SLOTS.map((s) => restart[s]).reduce((a, b) => (a < b ? a : b));
  const target = WAL_MB * MiB;
  const lsnNow = async () => parseLsn(await one<string>(cluster, 'SELECT pg_current_wal_lsn()::text AS l', 'l'));

  // Heap inserts of ~500-byte rows: ordinary WAL records, not something a receiver could special-case.
  let bytesPerRow = 600;
  const t0 = performance.now();
  const startLsn = await lsnNow();
  for (let chunk = 0; ; chunk++) {
    const held = Number((await lsnNow()) - oldest);
    if (held >= target) break;
    const want = Math.min(target - held, 256 * MiB);
    const rows = Math.max(1000, Math.ceil(want / bytesPerRow));
    const before = await lsnNow();
    await cluster.query(`CREATE TABLE bench_fill_${chunk} AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, ${rows}) AS g`);
    const after = await lsnNow();
    // The rows are only there to make WAL; dropping them keeps the data directory small.
    await cluster.query(`DROP TABLE bench_fill_${chunk}`);
    bytesPerRow = Math.max(100, Number(after - before) / rows);
    // A progress line is for a terminal; a log file gets only the final state.
    if (process.stdout.isTTY) process.stdout.write(`\r  generated ${(Number(after - oldest) / MiB).toFixed(0)} / ${WAL_MB} MiB of WAL`);
  }
  const switchRow = (await cluster.query(`SELECT s::text AS lsn, pg_walfile_name(s) AS name FROM pg_switch_wal() AS s`))[0];
  const generateSeconds = (performance.now() - t0) / 1000;
  if (process.stdout.isTTY) process.stdout.write('\n');
  const tli = await one<number>(cluster, 'SELECT timeline_id FROM pg_control_checkpoint()', 'timeline_id');
  const endName = String(switchRow.name);
  // pg_walfile_name maps a segment-boundary LSN to the segment before it, which is exactly
  // the last segment holding backlog WAL.
  const endSegNo = parseSegmentFileName(endName, SEG_SIZE).segNo;
  return {
    tli,
    startSegNo: Object.fromEntries(SLOTS.map((s) => [s, segmentNumber(restart[s], SEG_SIZE)])),
    endSegNo,
    endName,
    generatedBytes: Number(parseLsn(String(switchRow.lsn)) - startLsn),
    generateSeconds,
    bytesPerRow,
  };
}

// ---------------------------------------------------------------------------
// Drain

interface DrainResult {
  receiver: string;
  segments: number;
  bytes: number;
  seconds: number;
  throughputMiBs: number;
  usage: ProcUsage;
}

async function drain(receiver: Receiver, names: string[]): Promise<DrainResult> {
  const t0 = performance.now();
  const sampler = new ProcSampler(receiver.pid);
  const last = names[names.length - 1];
  let seconds = 0;
  try {
    await pollUntil(
      async () => {
        if (!receiver.running()) throw new Error(`${receiver.label} exited before draining the backlog`);
        // Cheap test first: a directory listing on every poll would cost the receivers CPU.
        if (!receiver.hasSegment(last)) return false;
        if ((await receiver.missingSegments(names)).length > 0) return false;
        seconds = (performance.now() - t0) / 1000;
        return true;
      },
      { timeoutMs: DRAIN_TIMEOUT_MS, intervalMs: 20, what: `${receiver.label} to hold ${names[0]}..${last}` },
    );
  } catch (err) {
    sampler.finish();
    const missing = await receiver.missingSegments(names).catch(() => names);
    throw new Error(`${(err as Error).message}\n  ${missing.length} of ${names.length} segments missing\n${receiver.outputTail()}`);
  }
  const usage = sampler.finish();
  const bytes = names.length * SEG_SIZE;
  return { receiver: receiver.label, segments: names.length, bytes, seconds, throughputMiBs: bytes / MiB / seconds, usage };
}

// ---------------------------------------------------------------------------
// Latency

interface LatencySample {
  segment: string;
  walvaultMs: number;
  pgReceivewalMs: number;
  /** When walvault had the segment complete in its spool (fsynced, renamed), from its debug log. */
  walvaultSpooledMs: number | null;
}

async function caughtUp(cluster: PgCluster): Promise<boolean> {
  const rows = await cluster.query(
    `SELECT s.slot_name, r.state, r.sent_lsn >= pg_current_wal_lsn() AS sent_all
       FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
      WHERE s.slot_name IN ('${SLOT_PGRW}', '${SLOT_WALVAULT}')`,
  );
  return rows.length === 2 && rows.every((r) => r.state === 'streaming' && r.sent_all === true);
}

async function measureLatency(cluster: PgCluster, pgrw: Receiver, wv: Walvault, bytesPerRow: number): Promise<LatencySample[]> {
  await cluster.query(`CREATE TABLE IF NOT EXISTS bench_burst (g int, pad text)`);
  const rows = Math.ceil((BURST_MB * MiB) / bytesPerRow);
  const samples: LatencySample[] = [];
  for (let rep = 0; rep < LATENCY_REPS; rep++) {
    await pollUntil(
      async () => {
        for (const r of [pgrw, wv]) if (!r.running()) throw new Error(`${r.label} exited:\n${r.outputTail()}`);
        // A failed query is "not yet": the receivers are what this waits for, not the server.
        return caughtUp(cluster).catch(() => false);
      },
      { timeoutMs: 120_000, intervalMs: 100, what: 'both receivers to be streaming and caught up' },
    );
    await cluster.query(`INSERT INTO bench_burst SELECT g, repeat('x', 500) FROM generate_series(1, ${rows}) AS g`);
    const row = (await cluster.query(`SELECT pg_walfile_name(s) AS name FROM pg_switch_wal() AS s`))[0];
    const t0 = performance.now();
    const t0Epoch = Date.now();
    const name = String(row.name);
    const done: Record<string, number> = {};
    await pollUntil(
      () => {
        for (const r of [pgrw, wv]) {
          if (!r.running()) throw new Error(`${r.label} exited:\n${r.outputTail()}`);
          if (done[r.label] === undefined && r.hasSegment(name)) done[r.label] = performance.now() - t0;
        }
        return done[pgrw.label] !== undefined && done[wv.label] !== undefined;
      },
      { timeoutMs: 120_000, intervalMs: 5, what: `segment ${name} on both sides` },
    );
    // The log line may trail the file by a moment: stderr is a pipe.
    await new Promise((r) => setTimeout(r, 200));
    const spooledAt = wv.logTime('segment complete', name);
    const walvaultSpooledMs = spooledAt === undefined ? null : spooledAt - t0Epoch;
    samples.push({ segment: name, walvaultMs: done[wv.label], pgReceivewalMs: done[pgrw.label], walvaultSpooledMs });
    console.log(
      `  burst ${rep + 1}/${LATENCY_REPS}: ${name}  walvault ${done[wv.label].toFixed(0)} ms` +
        (walvaultSpooledMs === null ? '' : ` (in its spool at ${walvaultSpooledMs} ms)`) +
        `, pg_receivewal ${done[pgrw.label].toFixed(0)} ms`,
    );
    await cluster.query(`TRUNCATE bench_burst`);
  }
  return samples;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ---------------------------------------------------------------------------
// Report

// ---------------------------------------------------------------------------

async function main(): Promise<number> {
  const work = tmpDir('walvault-bench-');
  const pgrwDir = path.join(work, 'pg_receivewal');
  const archiveParent = process.env.BENCH_ARCHIVE_DIR ? fs.mkdtempSync(path.join(path.resolve(process.env.BENCH_ARCHIVE_DIR), 'walvault-bench-archive-')) : work;
  const archiveDir = path.join(archiveParent, 'archive');
  const stateDir = path.join(work, 'state');
  fs.mkdirSync(pgrwDir);
  // The site default unless overridden; only uncompressed, unencrypted segments can be linked.
  const codec = String(WALVAULT_OVERRIDES.compression ?? loadDefaultCodec());
  const sameFs = fs.statSync(archiveParent).dev === fs.statSync(work).dev;
  const archiveLinked = sameFs && codec === 'none' && WALVAULT_OVERRIDES.encryption_public_key_file === undefined;
  console.log(
    archiveLinked
      ? `walvault archive ${archiveDir}: same filesystem as its state directory, codec none (spool files are linked into the archive)`
      : `walvault archive ${archiveDir}: codec ${codec}, ${sameFs ? 'same filesystem' : 'another filesystem'} (segments are written into the archive)`,
  );
  let cluster: PgCluster | undefined;
  const receivers: Receiver[] = [];

  const cleanupSync = (): void => {
    for (const c of liveChildren) c.kill('SIGKILL');
    try {
      removeDir(work);
      if (archiveParent !== work) removeDir(archiveParent);
    } catch {
      /* best effort */
    }
  };
  // The cluster helper stops its servers on exit and on signals; our children and files are ours to remove.
  process.on('exit', cleanupSync);
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`\n${sig}: stopping the bench`);
    cleanupSync();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const startedAt = new Date();
  const loadBefore = os.loadavg();
  try {
    console.log(`walvault receive bench: ${WAL_MB} MiB backlog, ${SEG_MIB} MiB segments, ${LATENCY_REPS} x ${BURST_MB} MiB bursts`);
    if (Object.keys(WALVAULT_OVERRIDES).length > 0) console.log(`  walvault settings overridden: ${JSON.stringify(WALVAULT_OVERRIDES)}`);
    if (CPU_PROF_DIR) console.log('  CPU profiling is on: walvault numbers include its overhead');
    console.log(`  load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} cores`);
    cluster = await PgCluster.start({
      walSegSizeMiB: SEG_MIB,
      settings: {
        // Only the slots may hold WAL, and no checkpoint may recycle or add to it mid-run.
        max_wal_size: '16GB',
        min_wal_size: '80MB',
        wal_keep_size: '0',
        checkpoint_timeout: '1h',
      },
    });

    const backlog = await makeBacklog(cluster);
    const pgrwNames = segNames(backlog.tli, backlog.startSegNo[SLOT_PGRW], backlog.endSegNo);
    const wvNames = segNames(backlog.tli, backlog.startSegNo[SLOT_WALVAULT], backlog.endSegNo);
    console.log(
      `  backlog: ${pgrwNames.length} segments up to ${backlog.endName} generated in ${fmt(backlog.generateSeconds)} s ` +
        `(${fmt(backlog.generatedBytes / MiB / backlog.generateSeconds)} MiB/s)`,
    );

    const configFile = writeConfig(
      work,
      {
        main: {
          pg: pgConninfo(cluster),
          archive: archiveDir,
          state: stateDir,
          slot: SLOT_WALVAULT,
          mode: 'archive',
          partial_interval_seconds: 10,
          status_interval_seconds: 10,
          ...WALVAULT_OVERRIDES,
        },
      },
      // Per-segment debug lines would be work pg_receivewal does not do.
      'info',
    );

    // pg_receivewal goes first: the server's WAL is then equally hot in the page cache for both.
    console.log('drain: pg_receivewal');
    const pgrw1 = new PgReceivewal(cluster, pgrwDir);
    receivers.push(pgrw1);
    const pgrwDrain = await drain(pgrw1, pgrwNames);
    await pgrw1.stop();
    console.log(`  ${fmt(pgrwDrain.seconds, 2)} s, ${fmt(pgrwDrain.throughputMiBs)} MiB/s, peak RSS ${fmt(pgrwDrain.usage.peakRssMiB)} MiB`);

    console.log('drain: walvault');
    if (CPU_PROF_DIR) fs.mkdirSync(CPU_PROF_DIR, { recursive: true });
    const wv1 = new Walvault(configFile, archiveDir, { profileDir: CPU_PROF_DIR, memTrace: MEM_TRACE });
    receivers.push(wv1);
    const wvDrain = await drain(wv1, wvNames);
    await wv1.stop();
    console.log(`  ${fmt(wvDrain.seconds, 2)} s, ${fmt(wvDrain.throughputMiBs)} MiB/s, peak RSS ${fmt(wvDrain.usage.peakRssMiB)} MiB`);
    if (CPU_PROF_DIR) console.log(`  CPU profile of the walvault drain written to ${CPU_PROF_DIR}`);

    console.log('drain: walvault to s3rver (default codec)');
    const s3 = await S3Server.start({ bucket: 'walvault-bench' });
    let s3Drain: DrainResult;
    try {
      const s3Names = segNames(backlog.tli, backlog.startSegNo[SLOT_WALVAULT_S3], backlog.endSegNo);
      const s3Dir = path.join(work, 's3-config');
      fs.mkdirSync(s3Dir);
      const s3Config = writeConfig(
        s3Dir,
        { main: { ...JSON.parse(fs.readFileSync(configFile, 'utf8')).sites.main, archive: s3.url('bench'), state: path.join(work, 'state-s3'), slot: SLOT_WALVAULT_S3 } },
        'info',
      );
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { S3Storage, parseS3Url } = require('../src/storage/s3') as typeof import('../src/storage/s3');
      const lister = new S3Storage(parseS3Url(s3.url('bench'))!, s3.settings());
      const wv3 = new S3Walvault(s3Config, lister, s3.env());
      receivers.push(wv3);
      s3Drain = await drain(wv3, s3Names);
      await wv3.stop();
      await lister.close();
    } finally {
      await s3.destroy();
    }
    console.log(`  ${fmt(s3Drain.seconds, 2)} s, ${fmt(s3Drain.throughputMiBs)} MiB/s, peak RSS ${fmt(s3Drain.usage.peakRssMiB)} MiB`);

    console.log('latency: both receivers running, burst then pg_switch_wal()');
    // Restarted, not kept running: each drain above had the machine to itself.
    const pgrw2 = new PgReceivewal(cluster, pgrwDir);
    // Debug level for its per-segment lines, which split the latency into spool and upload.
    const debugDir = path.join(work, 'debug-config');
    fs.mkdirSync(debugDir);
    const debugConfig = writeConfig(debugDir, JSON.parse(fs.readFileSync(configFile, 'utf8')).sites, 'debug');
    const wv2 = new Walvault(debugConfig, archiveDir);
    receivers.push(pgrw2, wv2);
    const pgrwSampler = new ProcSampler(pgrw2.pid);
    const wvSampler = new ProcSampler(wv2.pid);
    const samples = await measureLatency(cluster, pgrw2, wv2, backlog.bytesPerRow);
    const pgrwLatUsage = pgrwSampler.finish();
    const wvLatUsage = wvSampler.finish();
    await Promise.all([pgrw2.stop(), wv2.stop()]);

    const wvLatency = median(samples.map((s) => s.walvaultMs));
    const pgrwLatency = median(samples.map((s) => s.pgReceivewalMs));
    const spooled = samples.map((s) => s.walvaultSpooledMs).filter((v): v is number => v !== null);
    const wvSpooledLatency = spooled.length > 0 ? median(spooled) : NaN;
    const throughputRatio = wvDrain.throughputMiBs / pgrwDrain.throughputMiBs;
    const wvPeakRss = Math.max(wvDrain.usage.peakRssMiB, wvLatUsage.peakRssMiB);
    const pgrwPeakRss = Math.max(pgrwDrain.usage.peakRssMiB, pgrwLatUsage.peakRssMiB);
    const throughputPass = throughputRatio >= THROUGHPUT_TARGET_RATIO;
    const rssPass = wvPeakRss < RSS_TARGET_MIB;
    const loadAfter = os.loadavg();

    console.log('');
    console.log(`results (${WAL_MB} MiB backlog; ratio = walvault / pg_receivewal)`);
    printTable([
      ['metric', 'walvault', 'pg_receivewal', 'ratio', 'target', 'verdict'],
      ['backlog drained (MiB)', fmt(wvDrain.bytes / MiB, 0), fmt(pgrwDrain.bytes / MiB, 0), '', '', ''],
      ['drain time (s)', fmt(wvDrain.seconds, 2), fmt(pgrwDrain.seconds, 2), fmt(wvDrain.seconds / pgrwDrain.seconds, 2), '', ''],
      [
        'drain throughput (MiB/s)',
        fmt(wvDrain.throughputMiBs),
        fmt(pgrwDrain.throughputMiBs),
        fmt(throughputRatio, 2),
        `>= ${THROUGHPUT_TARGET_RATIO.toFixed(1)}`,
        throughputPass ? 'PASS' : 'FAIL',
      ],
      ['drain to s3rver, default codec (MiB/s)', fmt(s3Drain.throughputMiBs), fmt(pgrwDrain.throughputMiBs), fmt(s3Drain.throughputMiBs / pgrwDrain.throughputMiBs, 2), '', ''],
      ['drain CPU time (s)', fmt(wvDrain.usage.cpuSeconds, 2), fmt(pgrwDrain.usage.cpuSeconds, 2), fmt(wvDrain.usage.cpuSeconds / pgrwDrain.usage.cpuSeconds, 2), '', ''],
      [
        `end of generation -> archived, median of ${samples.length} (ms)`,
        fmt(wvLatency, 0),
        fmt(pgrwLatency, 0),
        fmt(wvLatency / pgrwLatency, 2),
        '',
        '',
      ],
      ['  walvault: segment complete in its spool (ms)', fmt(wvSpooledLatency, 0), '', '', '', ''],
      ['peak RSS, VmHWM (MiB)', fmt(wvPeakRss), fmt(pgrwPeakRss), fmt(wvPeakRss / pgrwPeakRss, 1), `< ${RSS_TARGET_MIB}`, rssPass ? 'PASS' : 'FAIL'],
    ]);
    console.log('');
    console.log(`  drain throughput target: ${throughputPass ? 'PASS' : 'FAIL'} (walvault ${fmt(throughputRatio, 2)}x pg_receivewal)`);
    console.log(`  peak RSS target:         ${rssPass ? 'PASS' : 'FAIL'} (walvault ${fmt(wvPeakRss)} MiB, limit ${RSS_TARGET_MIB} MiB)`);
    console.log(`  load average after: ${loadAfter.map((l) => l.toFixed(2)).join(' ')}; page caches were not dropped (not possible here)`);

    const results = {
      bench: 'receive',
      startedAt: startedAt.toISOString(),
      machine: machineFacts({ pgReceivewal: clientBin('pg_receivewal') }),
      loadAverage: { before: loadBefore, after: loadAfter },
      params: {
        walMiB: WAL_MB,
        segmentMiB: SEG_MIB,
        burstMiB: BURST_MB,
        latencyReps: LATENCY_REPS,
        cpuProfile: CPU_PROF_DIR ?? null,
        memTrace: MEM_TRACE ?? null,
        walvaultOverrides: WALVAULT_OVERRIDES,
        archiveDir,
        archiveLinked,
        codec,
      },
      backlog: {
        segments: pgrwNames.length,
        endSegment: backlog.endName,
        generatedMiB: backlog.generatedBytes / MiB,
        generateSeconds: backlog.generateSeconds,
      },
      drain: { walvault: wvDrain, walvaultS3: s3Drain, pgReceivewal: pgrwDrain },
      latency: {
        samples,
        medianMs: { walvault: wvLatency, pgReceivewal: pgrwLatency, walvaultSpooled: Number.isFinite(wvSpooledLatency) ? wvSpooledLatency : null },
        usageWhileRunning: { walvault: wvLatUsage, pgReceivewal: pgrwLatUsage },
      },
      targets: {
        throughputRatio: { value: throughputRatio, target: THROUGHPUT_TARGET_RATIO, pass: throughputPass },
        walvaultPeakRssMiB: { value: wvPeakRss, target: RSS_TARGET_MIB, pass: rssPass },
      },
    };
    const file = saveResults('receive', results, startedAt);
    console.log(`  results written to ${path.relative(process.cwd(), file) || file}`);
    return 0;
  } catch (err) {
    console.error(`\nbench failed: ${(err as Error).stack ?? String(err)}`);
    return 1;
  } finally {
    await Promise.all(receivers.map((r) => r.stop().catch(() => undefined)));
    if (cluster) await cluster.destroy().catch((err) => console.error(`could not destroy the cluster: ${(err as Error).message}`));
    cleanupSync();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
