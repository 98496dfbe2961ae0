/**
 * Progress of a long job: on a terminal one line rewritten in place (bytes done, rate, time
 * left); otherwise a structured log line every interval, for journald and log shippers.
 *
 * The rate counts from the first bytes, not from the start: a backup first waits for the
 * server's checkpoint (minutes, when it is spread), and a rate averaged over that wait would
 * promise a time left that has nothing to do with the transfer. No time left is given until
 * bytes have flowed for ESTIMATE_AFTER_MS.
 */
import type { Logger } from 'pino';

export interface ProgressOptions {
  what: string;
  log: Logger;
  /** Where the terminal line goes; progress is drawn only when it is a TTY. */
  out?: NodeJS.WriteStream;
  logIntervalMs?: number;
  now?: () => number;
  /** More to show after the bytes (e.g. files checked and kept), on the line and in the log. */
  detail?: () => string;
}

const ESTIMATE_AFTER_MS = 5000;

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v.toFixed(0) : v.toFixed(1)} ${UNITS[u]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export class Progress {
  /** When bytes first moved, and how many had by then. */
  private flowStart: { at: number; done: number } | null = null;
  private lastDraw = 0;
  private lastLog: number;
  private done = 0;
  private total: number | null = null;
  private drawn = false;
  private readonly now: () => number;
  private readonly tty: boolean;

  constructor(private readonly o: ProgressOptions) {
    this.now = o.now ?? Date.now;
    this.lastLog = this.now();
    this.tty = (o.out ?? process.stderr).isTTY === true;
  }

  /** The server's estimate of the total, when it has one. */
  setTotal(total: number | null): void {
    this.total = total;
  }

  update(done: number): void {
    this.done = done;
    const t = this.now();
    if (this.flowStart === null && done > 0) this.flowStart = { at: t, done };
    if (this.tty && t - this.lastDraw >= 250) {
      this.lastDraw = t;
      this.draw();
    }
    if (!this.tty && t - this.lastLog >= (this.o.logIntervalMs ?? 10000)) {
      this.lastLog = t;
      this.o.log.info({ ...this.snapshot(), ...(this.o.detail ? { detail: this.o.detail() } : {}) }, `${this.o.what}: progress`);
    }
  }

  snapshot(): { bytesDone: number; bytesTotal: number | null; bytesPerSecond: number; secondsLeft: number | null } {
    const flowed = this.flowStart === null ? 0 : this.now() - this.flowStart.at;
    const rate = flowed > 0 ? ((this.done - this.flowStart!.done) * 1000) / flowed : 0;
    // The server's size estimate can fall short of what it sends: never show a negative time.
    const left = this.total !== null && rate > 0 && flowed >= ESTIMATE_AFTER_MS ? Math.max(0, this.total - this.done) / rate : null;
    return { bytesDone: this.done, bytesTotal: this.total, bytesPerSecond: Math.round(rate), secondsLeft: left === null ? null : Math.round(left) };
  }

  private draw(): void {
    const s = this.snapshot();
    const of = s.bytesTotal !== null ? ` of ~${formatBytes(s.bytesTotal)}` : '';
    const at = s.bytesPerSecond > 0 ? ` at ${formatBytes(s.bytesPerSecond)}/s` : '';
    const left = s.secondsLeft !== null ? `, ${formatDuration(s.secondsLeft)} left` : '';
    const detail = this.o.detail ? `; ${this.o.detail()}` : '';
    (this.o.out ?? process.stderr).write(`\r${this.o.what}: ${formatBytes(s.bytesDone)}${of}${at}${left}${detail}\x1b[K`);
    this.drawn = true;
  }

  /** Ends the terminal line so later output starts on a fresh one. */
  finish(): void {
    if (this.tty && this.drawn) {
      this.draw();
      (this.o.out ?? process.stderr).write('\n');
    }
  }
}
