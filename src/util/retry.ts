/**
 * One way to try something again: attempts with exponential backoff and equal jitter (see
 * backoffDelayMs in ./timers.ts) between them, until one succeeds, the caller's `failed` says
 * to stop (or throws, which ends the retrying with that error), or `signal` aborts (checked
 * before each attempt after the first; a sleep ends at once on abort). Backoff is the same
 * schedule for a loop that never ends by itself (the receiver's reconnects), where a spell of
 * good work starts the schedule over. And one way to say so without flooding the log:
 * LogThrottle.
 */
import { backoffDelayMs, sleep } from './timers';

export type RetryOutcome<T> = { ok: true; value: T } | { ok: false; lastError: unknown };

export interface RetryOptions {
  signal: AbortSignal;
  /** Backoff ceiling of the first retry, doubling each time up to capMs. */
  baseMs?: number;
  capMs?: number;
  /** After a failed attempt (0-based): 'retry' after the backoff, or 'stop'; throwing ends it too. */
  failed: (err: unknown, attempt: number) => 'retry' | 'stop' | Promise<'retry' | 'stop'>;
}

export async function retrying<T>(op: (attempt: number) => Promise<T>, o: RetryOptions): Promise<RetryOutcome<T>> {
  let lastError: unknown = null;
  const backoff = new Backoff(o.baseMs, o.capMs);
  for (let attempt = 0; attempt === 0 || !o.signal.aborted; attempt++) {
    try {
      return { ok: true, value: await op(attempt) };
    } catch (err) {
      lastError = err;
      if ((await o.failed(err, attempt)) === 'stop') break;
      await backoff.wait(o.signal);
    }
  }
  return { ok: false, lastError };
}

/** The pauses between attempts: each wait() one step longer (equal jitter), reset() back to the first. */
export class Backoff {
  private step = 0;

  constructor(
    private readonly baseMs?: number,
    private readonly capMs?: number,
  ) {}

  /** Sleeps the next pause; ends at once when `signal` aborts. */
  wait(signal: AbortSignal): Promise<void> {
    return sleep(backoffDelayMs(this.step++, this.baseMs, this.capMs), signal);
  }

  reset(): void {
    this.step = 0;
  }
}

/** True the first time, then at most once per interval: one log line per spell of failures, not per retry. */
export class LogThrottle {
  private last = -Infinity;

  constructor(readonly intervalMs: number) {}

  due(now = Date.now()): boolean {
    if (now - this.last < this.intervalMs) return false;
    this.last = now;
    return true;
  }

  /** A new spell: the next failure is logged at once. */
  reset(): void {
    this.last = -Infinity;
  }
}
