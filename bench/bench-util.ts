/**
 * What every bench shares: process accounting from /proc, machine facts for the results,
 * and table printing.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { serverUser } from '../test/helpers/pg-cluster';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Process accounting from /proc

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // 100 is what Linux uses almost everywhere.
}

export interface ProcUsage {
  /** VmHWM: the kernel's own peak resident set, so short spikes between samples count too. */
  peakRssMiB: number;
  /** Highest VmRSS we sampled: a sanity check on VmHWM. */
  sampledMaxRssMiB: number;
  cpuSeconds: number;
}

export class ProcSampler {
  private hwmKiB = 0;
  private maxRssKiB = 0;
  private cpuTicks = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), 100);
  }

  private sample(): void {
    try {
      const status = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
      const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
      this.hwmKiB = Math.max(this.hwmKiB, kib('VmHWM'));
      this.maxRssKiB = Math.max(this.maxRssKiB, kib('VmRSS'));
      // The command name may hold spaces and parentheses: the fields start after the last ')'.
      const stat = fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      this.cpuTicks = Number(fields[11]) + Number(fields[12]);
    } catch {
      // The process is gone: keep what the last sample saw.
    }
  }

  /** Takes a last sample; call it while the process still runs. */
  finish(): ProcUsage {
    this.sample();
    clearInterval(this.timer);
    return {
      peakRssMiB: this.hwmKiB / 1024,
      sampledMaxRssMiB: this.maxRssKiB / 1024,
      cpuSeconds: this.cpuTicks / clockTicks,
    };
  }
}

export function repoRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
  return dir;
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

export function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(line(rows[0]));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows.slice(1)) console.log(line(r));
}

/**
 * CPU, cores, memory, Node, and the version of each named tool (label -> path); a path may
 * carry its own arguments after a space (`pgbackrest version` has no --version).
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
  return { cpu, cores: os.cpus().length, memMiB: Math.round(os.totalmem() / MiB), node: process.version, ...versions };
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

/** The pids of `root` and all its descendants, from /proc. */
export function processTree(root: number): number[] {
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
  walk(root);
  return out;
}

/** Samples a process tree: peak of the summed VmRSS (workers come and go), summed CPU of what it saw. */
export class TreeSampler {
  private peakKiB = 0;
  private readonly samplers = new Map<number, ProcSampler>();
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly root: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), 100);
  }
  private sample(): void {
    let sum = 0;
    for (const pid of processTree(this.root)) {
      if (!this.samplers.has(pid)) this.samplers.set(pid, new ProcSampler(pid));
      try {
        sum += Number(/^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
      } catch {
        /* gone */
      }
    }
    this.peakKiB = Math.max(this.peakKiB, sum);
  }
  finish(): { peakRssMiB: number; cpuSeconds: number } {
    this.sample();
    clearInterval(this.timer);
    let cpu = 0;
    let single = 0;
    for (const s of this.samplers.values()) {
      const u = s.finish();
      cpu += u.cpuSeconds;
      single = Math.max(single, u.peakRssMiB);
    }
    // One process: its VmHWM is exact; a tree: the summed samples.
    return { peakRssMiB: this.samplers.size === 1 ? single : Math.max(single, this.peakKiB / 1024), cpuSeconds: cpu };
  }
}

export function spawnTimed(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; asServer?: boolean }): Promise<{ seconds: number; peakRssMiB: number; cpuSeconds: number; stdout: string }> {
  const u = opts.asServer ? serverUser() : undefined;
  const started = performance.now();
  const child: ChildProcess = spawn(cmd, args, {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: '/tmp',
    ...(u ? { uid: u.uid, gid: u.gid } : {}),
  });
  const sampler = new TreeSampler(child.pid!);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
  return new Promise((resolve, reject) => {
    // Sample right before the exit is reaped: 'exit' fires after, so take usage on close of stdout.
    let usage: { peakRssMiB: number; cpuSeconds: number } | null = null;
    child.stdout!.once('end', () => (usage = sampler.finish()));
    child.on('exit', (code, signal) => {
      const seconds = (performance.now() - started) / 1000;
      const u2 = usage ?? sampler.finish();
      if (code !== 0) return reject(new Error(`${path.basename(cmd)} ${args.join(' ')} failed (${signal ?? code}):\n${stderr}`));
      resolve({ seconds, ...u2, stdout });
    });
  });
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


/** A pgBackRest configuration for one stanza "bench" on `cluster`, repository under `repo`. */
export function pgBackRestConfig(repo: string, cluster: { dataDir: string; port: number; socketDir: string }, zstd: boolean): string {
  return [
    '[global]',
    `repo1-path=${repo}/repo`,
    `log-path=${repo}/log`,
    `lock-path=${repo}/lock`,
    'log-level-console=warn',
    'process-max=2',
    `compress-type=${zstd ? 'zst' : 'none'}`,
    ...(zstd ? ['compress-level=1'] : []),
    'start-fast=y',
    'archive-check=n',
    'archive-copy=n',
    '',
    '[bench]',
    `pg1-path=${cluster.dataDir}`,
    `pg1-port=${cluster.port}`,
    `pg1-socket-path=${cluster.socketDir}`,
    'pg1-user=postgres',
    '',
  ].join('\n');
}
