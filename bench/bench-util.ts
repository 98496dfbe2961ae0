/**
 * What every bench shares: parameters from the environment, exact process accounting,
 * alternating rounds summarised as medians and spread, machine facts, the table in the shape
 * of issue 15's and the JSON results in bench/results/.
 *
 * What "CPU-s" and "peak RSS" count, in every bench:
 * - A command run to completion (spawnTimed: restore, backup push, pgBackRest, tar...): CPU is
 *   the growth of this bench process's cutime + cstime (/proc/self/stat) over the command's
 *   life: the user + system time the kernel adds to a parent when it reaps a child, which
 *   covers the command, all its threads, and every descendant process it waited for (tar's
 *   zstd, pgBackRest's local processes). Exact to the clock tick, provided no other child of
 *   the bench is reaped meanwhile: timed commands never overlap (spawnTimed refuses), and the
 *   benches start and stop their other children (servers, receivers) outside those spans.
 * - A long-running process over a window (a receiver while WAL is generated, treeCpuSeconds):
 *   utime + stime + cutime + cstime summed over the process and its live descendants
 *   (/proc/PID/stat), at the end minus at the start. A descendant that detaches from the tree
 *   before it is reaped is not counted; walvault's receivers have none.
 * - Peak RSS (TreeSampler): for one process, the kernel's VmHWM (threads share it, so worker
 *   threads count); for several (pgBackRest's processes, four pg_receivewal), the highest sum
 *   of their VmRSS sampled every 100 ms, never less than the largest single VmHWM.
 * `/usr/bin/time -v` reports the same CPU figure for a command (the wait4 rusage) and the
 * VmHWM of its largest process as "Maximum resident set size".
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { removeDir, serverUser } from '../test/helpers/pg-cluster';
import { repoRoot } from '../test/helpers/repo-root';

export const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Parameters

/** A positive number from the environment, or `fallback`; anything else ends the bench with its name. */
export function envNumber(name: string, fallback: number, opts: { allowZero?: boolean } = {}): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !opts.allowZero)) throw new Error(`${name}=${raw} is not a ${opts.allowZero ? 'non-negative' : 'positive'} number`);
  return n;
}

/** A comma-separated list from the environment, each item one of `allowed`. */
export function envList<T extends string>(name: string, fallback: readonly T[], allowed: readonly T[]): T[] {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return [...fallback];
  const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const item of items) if (!allowed.includes(item as T)) throw new Error(`${name}: "${item}" is not one of ${allowed.join(', ')}`);
  return items as T[];
}

/** Rounds per row (each tool runs once per round, in turn) and the pause before each run. */
export const ROUNDS = Math.round(envNumber('BENCH_ROUNDS', 3));
export const SETTLE_MS = envNumber('BENCH_SETTLE_MS', 3000, { allowZero: true });

// ---------------------------------------------------------------------------
// Process accounting from /proc

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // 100 is what Linux uses almost everywhere.
}

/**
 * CPU clock ticks of `pid` from /proc/PID/stat (fields 14-17): `own` = utime + stime (all its
 * threads), `reaped` = cutime + cstime (children it has waited for, with theirs); null once gone.
 */
function cpuTicks(pid: number | 'self'): { own: number; reaped: number } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

/** The pids of `roots` and all their descendants, from /proc. */
export function processTree(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(d));
      children.set(ppid, list);
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  for (const r of roots) walk(r);
  return out;
}

/** CPU seconds so far of `roots` and their live descendants, their reaped children included. */
export function treeCpuSeconds(roots: number[]): number {
  let ticks = 0;
  for (const pid of processTree(roots)) {
    const t = cpuTicks(pid);
    if (t) ticks += t.own + t.reaped;
  }
  return ticks / clockTicks;
}

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Peak RSS of process trees, sampled every 100 ms from construction to finish(). */
export class TreeSampler {
  private peakSumKiB = 0;
  private readonly hwmKiB = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly roots: number[]) {
    this.sample();
    this.timer = setInterval(() => this.sample(), 100);
  }

  private sample(): void {
    let sum = 0;
    for (const pid of processTree(this.roots)) {
      sum += statusKiB(pid, 'VmRSS');
      this.hwmKiB.set(pid, Math.max(this.hwmKiB.get(pid) ?? 0, statusKiB(pid, 'VmHWM')));
    }
    this.peakSumKiB = Math.max(this.peakSumKiB, sum);
  }

  /**
   * Takes a last sample; call it while the processes still run. `peakRssMiB` is the tree's,
   * `largestProcessRssMiB` the highest VmHWM of any one process in it (what `time -v` reports).
   */
  finish(): { peakRssMiB: number; largestProcessRssMiB: number } {
    this.sample();
    clearInterval(this.timer);
    const hwm = [...this.hwmKiB.values()];
    const single = Math.max(0, ...hwm);
    // One process: its VmHWM is exact; several: the summed samples.
    return { peakRssMiB: (hwm.length <= 1 ? single : Math.max(single, this.peakSumKiB)) / 1024, largestProcessRssMiB: single / 1024 };
  }
}

/** What a run measured: `seconds` is its timed span; the rest where the run has them. */
export interface Measured {
  seconds: number;
  cpuSeconds?: number;
  peakRssMiB?: number;
  /** Bytes moved in `seconds` (MiB/s = bytes / seconds), or the WAL generated in a live run. */
  bytes?: number;
  /** What a backup stored. */
  storedBytes?: number;
  /** The highest VmHWM of any single process of the tree (equal to peakRssMiB for one process). */
  largestProcessRssMiB?: number;
  /** A live run: how long the primary took to generate its WAL while this receiver ran. */
  generationSeconds?: number;
}

let timedCommandRunning = false;

/** Runs a command to completion: wall time, CPU of its whole tree (see the header), peak RSS, stdout. */
export async function spawnTimed(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; asServer?: boolean; cwd?: string } = {}): Promise<Measured & { cpuSeconds: number; peakRssMiB: number; stdout: string }> {
  if (timedCommandRunning) throw new Error('spawnTimed: another timed command is running; their CPU would mix');
  timedCommandRunning = true;
  const u = opts.asServer ? serverUser() : undefined;
  const cpuBefore = cpuTicks('self')!.reaped;
  const started = performance.now();
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd ?? '/tmp', ...(u ? { uid: u.uid, gid: u.gid } : {}) });
  } catch (err) {
    timedCommandRunning = false;
    throw err;
  }
  const sampler = new TreeSampler([child.pid!]);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
  // The last sample must come before the exit is reaped: end of stdout is the latest sure moment.
  let rss: { peakRssMiB: number; largestProcessRssMiB: number } | undefined;
  child.stdout!.once('end', () => (rss ??= sampler.finish()));
  return new Promise((resolve, reject) => {
    child.on('error', (err) => {
      timedCommandRunning = false;
      sampler.finish();
      reject(err);
    });
    child.on('exit', (code, signal) => {
      const seconds = (performance.now() - started) / 1000;
      // Node has reaped the child by now: its rusage is in our cutime/cstime.
      const cpuSeconds = (cpuTicks('self')!.reaped - cpuBefore) / clockTicks;
      rss ??= sampler.finish();
      timedCommandRunning = false;
      if (code !== 0) return reject(new Error(`${path.basename(cmd)} ${args.join(' ')} failed (${signal ?? code}):\n${stderr}`));
      resolve({ seconds, cpuSeconds, ...rss, stdout });
    });
  });
}

const liveChildren = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of liveChildren) c.kill('SIGKILL');
});

/** A long-running child (a receiver): its pid for accounting, the tail of its stderr, a clean stop. */
export class Child {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stderr = '';

  constructor(
    readonly label: string,
    cmd: string,
    args: string[],
    env: NodeJS.ProcessEnv = {},
  ) {
    this.child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    if (this.child.pid === undefined) throw new Error(`${label} did not start`);
    liveChildren.add(this.child);
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-8000)));
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        liveChildren.delete(this.child);
        resolve({ code, signal });
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(): string {
    return this.stderr.slice(-4000);
  }

  /** Signals it (SIGKILL after `timeoutMs`) and waits for the exit; complains if it did not exit 0. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 60_000): Promise<void> {
    if (this.running) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    if (exit.code !== 0 && exit.signal !== signal) console.error(`  note: ${this.label} exited with ${exit.signal ?? `code ${exit.code}`} on ${signal}:\n${this.tail()}`);
  }
}

// ---------------------------------------------------------------------------
// Rounds

export interface Contender {
  name: string;
  /** Untimed work before the settle pause (a fresh target, a new repository...). */
  prepare?: (round: number) => Promise<void>;
  run: (round: number) => Promise<Measured>;
  /** Untimed work after the run. */
  cleanup?: (round: number) => Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * ROUNDS rounds; in each, every contender runs once, in the given order (walvault, peer,
 * walvault, peer...), each from the same start: its prepare(), then the page cache written
 * back (`sync`) and a pause of SETTLE_MS (on a disk mounted with `discard`, blocks just freed
 * slow the next large write for a while), then the timed run.
 */
export async function alternate(contenders: Contender[], rounds = ROUNDS): Promise<Map<string, Measured[]>> {
  const out = new Map<string, Measured[]>(contenders.map((c) => [c.name, []]));
  for (let round = 0; round < rounds; round++) {
    for (const c of contenders) {
      await c.prepare?.(round);
      execFileSync('sync');
      await sleep(SETTLE_MS);
      // Only the numbers are kept: a command's stdout, say, is not a measurement.
      const m = Object.fromEntries(Object.entries(await c.run(round)).filter(([, v]) => typeof v === 'number')) as unknown as Measured;
      await c.cleanup?.(round);
      out.get(c.name)!.push(m);
      console.log(`  round ${round + 1}/${rounds}  ${c.name}: ${fmt(m.seconds, 2)} s` + (m.cpuSeconds === undefined ? '' : `, ${fmt(m.cpuSeconds, 2)} CPU-s`) + (m.peakRssMiB === undefined ? '' : `, peak RSS ${fmt(m.peakRssMiB, 0)} MiB`));
    }
  }
  return out;
}

/**
 * Polls until `fn` returns true. Unlike the tests' waitFor, a throw ends the wait at once:
 * here it means a receiver died, and waiting out a long timeout would only hide that.
 */
export async function pollUntil(fn: () => boolean | Promise<boolean>, opts: { timeoutMs: number; intervalMs: number; what: string }): Promise<void> {
  const deadline = performance.now() + opts.timeoutMs;
  while (!(await fn())) {
    if (performance.now() >= deadline) throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`);
    await sleep(opts.intervalMs);
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** One tool's rounds: the median of every measured field, and the spread of the timed span. */
export interface Summary {
  tool: string;
  rounds: Measured[];
  median: Record<string, number>;
  fastest: number;
  slowest: number;
  /** Slowest round / fastest round. */
  spread: number;
  /** The highest peak RSS of any round. */
  peakRssMiB: number;
}

export function summarize(tool: string, rounds: Measured[]): Summary {
  const fields = rounds as unknown as Array<Record<string, number | undefined>>;
  const keys = new Set(fields.flatMap((r) => Object.keys(r)));
  const med: Record<string, number> = {};
  for (const k of keys) med[k] = median(fields.map((r) => r[k]).filter((v): v is number => v !== undefined));
  const secs = rounds.map((r) => r.seconds);
  const fastest = Math.min(...secs);
  const slowest = Math.max(...secs);
  return { tool, rounds, median: med, fastest, slowest, spread: slowest / fastest, peakRssMiB: Math.max(...rounds.map((r) => r.peakRssMiB ?? NaN)) };
}

export function summarizeAll(results: Map<string, Measured[]>): Map<string, Summary> {
  return new Map([...results].map(([tool, rounds]) => [tool, summarize(tool, rounds)]));
}

/** The peer's median time over walvault's: above 1, walvault is faster. */
export function speedRatio(walvault: Summary, peer: Summary): number {
  return peer.median.seconds / walvault.median.seconds;
}

/** walvault's median CPU over the peer's: above 1, walvault spends more. */
export function cpuRatio(walvault: Summary, peer: Summary): number {
  return walvault.median.cpuSeconds / peer.median.cpuSeconds;
}

// ---------------------------------------------------------------------------
// Report

export function fmt(n: number | undefined, digits = 1): string {
  return n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

function range(values: Array<number | undefined>, digits: number): string {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (v.length === 0) return 'n/a';
  const lo = Math.min(...v);
  const hi = Math.max(...v);
  return fmt(lo, digits) === fmt(hi, digits) ? fmt(lo, digits) : `${fmt(lo, digits)}-${fmt(hi, digits)}`;
}

/**
 * A table cell for one tool: the median of the timed span with every round and the spread,
 * MiB/s when bytes moved, CPU (and per GiB) and peak RSS with their range over the rounds.
 */
export function describe(s: Summary, opts: { label?: string; throughput?: boolean; cpuPerGiB?: boolean; generation?: boolean } = {}): string {
  const parts = [`${opts.label ? `${opts.label} ` : ''}${fmt(s.median.seconds, 2)} s median (${s.rounds.map((r) => fmt(r.seconds, 2)).join(', ')}; spread ${fmt(s.spread, 2)}x)`];
  if (opts.throughput && s.median.bytes !== undefined) parts.push(`${fmt(s.median.bytes / MiB / s.median.seconds, 0)} MiB/s`);
  if (s.median.cpuSeconds !== undefined) {
    let cpu = `${fmt(s.median.cpuSeconds, 2)} CPU-s (${range(s.rounds.map((r) => r.cpuSeconds), 2)})`;
    if (opts.cpuPerGiB && s.median.bytes) cpu += `, ${fmt(s.median.cpuSeconds / (s.median.bytes / (1024 * MiB)), 2)} CPU-s per GiB`;
    parts.push(cpu);
  }
  if (Number.isFinite(s.peakRssMiB)) parts.push(`peak RSS ${range(s.rounds.map((r) => r.peakRssMiB), 0)} MiB`);
  if (opts.generation && s.median.bytes !== undefined) {
    parts.push(`the primary wrote ${fmt(s.median.bytes / MiB, 0)} MiB at ${range(s.rounds.map((r) => (r.bytes ?? NaN) / MiB / (r.generationSeconds ?? NaN)), 0)} MiB/s`);
  }
  return `${s.tool}: ${parts.join('; ')}`;
}

/** A row of the issue's table: measure | walvault | peer | ratio | goal. */
export interface Row {
  measure: string;
  walvault: string;
  peer: string;
  ratio: string;
  goal: string;
  /** Whether the goal holds in this run; undefined where it cannot be judged from the row. */
  met?: boolean;
  /** The summaries behind the cells, for the JSON results. */
  data: Record<string, unknown>;
}

export function printRows(title: string, rows: Row[]): void {
  console.log(`\n${title}\n`);
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  console.log('| measure | walvault | peer | ratio | goal |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) {
    const goal = r.met === undefined ? r.goal : `${r.goal} (${r.met ? 'met' : 'not met'} in this run)`;
    console.log(`| ${[r.measure, r.walvault, r.peer, r.ratio, goal].map(cell).join(' | ')} |`);
  }
}

export function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(line(rows[0]));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows.slice(1)) console.log(line(r));
}


/**
 * CPU, cores, memory, Node, load average, and the version of each named tool (label -> path);
 * a path may carry its own arguments after a space (`pgbackrest version` has no --version).
 */
export function machineFacts(tools: Record<string, string> = {}): Record<string, unknown> {
  let cpu = 'unknown';
  try {
    cpu = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpu;
  } catch {
    /* not Linux */
  }
  const versions: Record<string, string> = {};
  for (const [label, bin] of Object.entries(tools)) {
    try {
      const [cmd, ...args] = bin.split(' ');
      versions[label] = execFileSync(cmd, args.length > 0 ? args : ['--version'], { encoding: 'utf8' }).trim();
    } catch {
      versions[label] = 'unknown';
    }
  }
  return { cpu, cores: os.cpus().length, memMiB: Math.round(os.totalmem() / MiB), node: process.version, loadAverage: os.loadavg(), ...versions };
}

/** Writes `results` to bench/results/<kind>-<start time>.json and returns the path. */
export function saveResults(kind: string, results: unknown, startedAt: Date): string {
  const dir = path.join(repoRoot(), 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const file = path.join(dir, `${kind}-${stamp}.json`);
  fs.writeFileSync(file, JSON.stringify(results, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
  return file;
}

/** The rows, the parameters and the machine as bench/results/<kind>-<time>.json; prints where. */
export function saveRows(kind: string, startedAt: Date, extra: Record<string, unknown>, rows: Row[], tools: Record<string, string> = {}): void {
  const file = saveResults(kind, { bench: kind, startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), machine: machineFacts(tools), rounds: ROUNDS, settleMs: SETTLE_MS, ...extra, rows }, startedAt);
  console.log(`\nresults written to ${path.relative(process.cwd(), file) || file}`);
}

export function dirBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) total += fs.statSync(p).size;
  }
  return total;
}

/** Every regular file under `dir` (links not followed), as paths relative to `dir` with their absolute paths, sorted. */
export function filesUnder(dir: string, rel = ''): Array<{ rel: string; abs: string }> {
  const out: Array<{ rel: string; abs: string }> = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const r = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...filesUnder(dir, r));
    else if (e.isFile()) out.push({ rel: r, abs: path.join(dir, r) });
  }
  return out;
}

/** Reads `file` whole through `buf`, handing each chunk read to `chunk`. */
function readThrough(file: string, buf: Buffer, chunk: (b: Buffer) => void = () => undefined): void {
  const fd = fs.openSync(file, 'r');
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) chunk(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads every file under `dirs` once, so they are in the page cache: two restores compared
 * then differ by their own work, not by which of their backups the machine's page cache
 * happened to keep (the oldest backup of a chain was often read from disk, the newest full
 * backup, just written, from memory).
 */
export function warmFiles(dirs: string[]): void {
  const buf = Buffer.allocUnsafe(4 * MiB);
  for (const d of dirs) for (const f of filesUnder(d)) readThrough(f.abs, buf);
}

/** Every regular file under `dir` by relative path: size and SHA-256 (read in 4 MiB pieces). */
export function fileDigests(dir: string): Map<string, { size: number; sha256: string }> {
  const buf = Buffer.allocUnsafe(4 * MiB);
  const out = new Map<string, { size: number; sha256: string }>();
  for (const f of filesUnder(dir)) {
    const h = createHash('sha256');
    let size = 0;
    readThrough(f.abs, buf, (b) => {
      h.update(b);
      size += b.length;
    });
    out.set(f.rel, { size, sha256: h.digest('hex') });
  }
  return out;
}

/** The paths whose size or contents differ between two fileDigests, or that only one has. */
export function digestDiff(a: Map<string, { size: number; sha256: string }>, b: Map<string, { size: number; sha256: string }>): string[] {
  const out: string[] = [];
  for (const [p, x] of a) {
    const y = b.get(p);
    if (!y) out.push(`${p}: only in the first`);
    else if (x.size !== y.size || x.sha256 !== y.sha256) out.push(`${p}: ${x.size} bytes vs ${y.size}${x.size === y.size ? ', other contents' : ''}`);
  }
  for (const p of b.keys()) if (!a.has(p)) out.push(`${p}: only in the second`);
  return out;
}

const workDirs: string[] = [];

/**
 * A new directory for a bench's files under `parent` (default: the temp dir), readable by the
 * servers' OS user, removed when the bench exits, however it ends.
 */
export function workDir(prefix: string, parent = os.tmpdir()): string {
  const dir = fs.mkdtempSync(path.join(parent, prefix));
  fs.chmodSync(dir, 0o755);
  workDirs.push(dir);
  return dir;
}

/**
 * Runs a bench's main: exit code 1 with the stack when it could not measure. On Ctrl-C or
 * SIGTERM it exits through 'exit', so servers, receivers and work directories go too.
 */
export function runBench(name: string, main: () => Promise<void>): void {
  process.on('exit', () => {
    for (const d of workDirs) removeDir(d);
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      console.error(`\n${sig}: stopping the ${name}`);
      process.exit(130);
    });
  }
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(`\n${name} failed: ${(err as Error).stack ?? String(err)}`);
      process.exit(1);
    },
  );
}
