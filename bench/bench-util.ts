/**
 * What every bench shares: process accounting from /proc, machine facts for the results,
 * and table printing.
 */
import { execFileSync } from 'node:child_process';
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
