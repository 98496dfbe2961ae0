/**
 * What the receiver does when its state directory's filesystem is full: the one place that
 * decides, for every spool and ledger write, whether to wait for room or to let the record lag.
 *
 *   must: the writer cannot go on without it (spool bytes, a segment's ledger row, a timeline
 *         switch). It waits, logging one line, and tries again until it lands or the site stops.
 *         The socket pauses behind the writer while status updates keep the connection up, and
 *         nothing new is reported: the WAL stays on the server in the slot.
 *   may:  a record that may lag (positions, events, a partial's or an archived segment's row).
 *         Skipped on a full disk; start-up reconciliation derives it again from the spool and
 *         the archive (a segment is handed to the uploader only once its complete row is
 *         durable, so the ledger always knows every segment the server was told about).
 *
 * Room comes back when uploads delete spool files, or when the operator frees space.
 */
import type { Logger } from 'pino';
import { errorMessage } from '../errors';
import { isDiskFull, stateDiskFullError } from '../util/disk-full';
import { LogThrottle, retrying } from '../util/retry';
import { backoffDelayMs, sleep } from '../util/timers';

/** The operator's line again while the disk stays full. */
const LOG_INTERVAL_MS = 60000;
/** Retries back off to at most this: writing resumes within seconds of room coming back. */
const RETRY_CAP_MS = 5000;

export class StateWrites {
  private fullSince: number | null = null;
  private readonly logThrottle = new LogThrottle(LOG_INTERVAL_MS);
  private loggedThisTime = false;

  constructor(
    private readonly stateDir: string,
    private readonly log: Logger,
    private readonly signal: AbortSignal,
  ) {}

  /** How long writes have been failing for room, or null while they work. */
  get fullForMs(): number | null {
    return this.fullSince === null ? null : Date.now() - this.fullSince;
  }

  async must<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
    const landed = await retrying(
      async () => {
        const result = await fn();
        this.worked();
        return result;
      },
      {
        signal: this.signal,
        baseMs: 500,
        capMs: RETRY_CAP_MS,
        failed: (err) => {
          if (!isDiskFull(err)) throw err;
          this.failed(err, what);
          return 'retry';
        },
      },
    );
    if (!landed.ok) throw stateDiskFullError(this.stateDir, what, landed.lastError);
    return landed.value;
  }

  /**
   * Runs `fn`; on a full disk returns false instead of throwing. Other errors are thrown. A
   * small record that lands says little about room (SQLite reuses its journal's space), so
   * only the writes that waited (`must`, the spool's) end a full spell.
   */
  may(what: string, fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (err) {
      if (!isDiskFull(err)) throw err;
      this.failed(err, what);
      return false;
    }
  }

  /** After a write failed for room: logs, waits a little; throws once the site is stopping. */
  async waitForRoom(err: unknown, what: string, attempt = 0): Promise<void> {
    this.failed(err, what);
    if (!this.signal.aborted) await sleep(backoffDelayMs(attempt, 500, RETRY_CAP_MS), this.signal);
    if (this.signal.aborted) throw stateDiskFullError(this.stateDir, what, err);
  }

  /** A write that had to wait for room landed (the receiver calls this after every spool write). */
  worked(): void {
    if (this.fullSince === null) return;
    if (this.loggedThisTime) this.log.warn({ stateDir: this.stateDir, fullForMs: Date.now() - this.fullSince }, `state directory ${this.stateDir} has room again`);
    this.fullSince = null;
    this.loggedThisTime = false;
  }

  private failed(err: unknown, what: string): void {
    const now = Date.now();
    if (this.fullSince === null) this.fullSince = now;
    // At most one line a minute, however often the disk fills and empties.
    if (!this.logThrottle.due(now)) return;
    this.loggedThisTime = true;
    const line = stateDiskFullError(this.stateDir, what, err);
    this.log.error({ code: line.code, stateDir: this.stateDir, err: errorMessage(err) }, line.message);
  }
}
