/**
 * Progress of a long job: on a terminal one line rewritten in place (bytes done, rate, time
 * left); otherwise a structured log line every interval, for journald and log shippers.
 */
import type { Logger } from 'pino';

export interface ProgressOptions {
  what: string;
  log: Logger;
  /** Where the terminal line goes; progress is drawn only when it is a TTY. */
  out?: NodeJS.WriteStream;
  logIntervalMs?: number;
  now?: () => number;
}

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
  private readonly started: number;
  private lastDraw = 0;
  private lastLog: number;
  private done = 0;
  private total: number | null = null;
  private drawn = false;
  private readonly now: () => number;
  private readonly tty: boolean;

  constructor(private readonly o: ProgressOptions) {
    this.now = o.now ?? Date.now;
    this.started = this.now();
    this.lastLog = this.started;
    this.tty = (o.out ?? process.stderr).isTTY === true;
  }

  /** The server's estimate of the total, when it has one. */
  setTotal(total: number | null): void {
    this.total = total;
  }

  update(done: number): void {
    this.done = done;
    const t = this.now();
    if (this.tty && t - this.lastDraw >= 250) {
      this.lastDraw = t;
      this.draw();
    }
    if (!this.tty && t - this.lastLog >= (this.o.logIntervalMs ?? 10000)) {
      this.lastLog = t;
      this.o.log.info(this.snapshot(), `${this.o.what}: progress`);
    }
  }

  snapshot(): { bytesDone: number; bytesTotal: number | null; bytesPerSecond: number; secondsLeft: number | null } {
    const elapsed = Math.max(0.001, (this.now() - this.started) / 1000);
    const rate = this.done / elapsed;
    // The server's size estimate can fall short of what it sends: never show a negative time.
    const left = this.total !== null && rate > 0 ? Math.max(0, this.total - this.done) / rate : null;
    return { bytesDone: this.done, bytesTotal: this.total, bytesPerSecond: Math.round(rate), secondsLeft: left === null ? null : Math.round(left) };
  }

  private draw(): void {
    const s = this.snapshot();
    const of = s.bytesTotal !== null ? ` of ~${formatBytes(s.bytesTotal)}` : '';
    const left = s.secondsLeft !== null ? `, ${formatDuration(s.secondsLeft)} left` : '';
    (this.o.out ?? process.stderr).write(`\r${this.o.what}: ${formatBytes(s.bytesDone)}${of} at ${formatBytes(s.bytesPerSecond)}/s${left}\x1b[K`);
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
