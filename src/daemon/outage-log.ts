/**
 * When to log a failure that repeats while something stays down (the server, for the
 * receiver's reconnects): the first failure at once, then at most one per interval however
 * often it is retried, and one line when it works again. An outage must not flood the log,
 * and its end must be visible to whoever saw it start.
 */
export interface OutageEnd {
  /** From the first failure to now. */
  failingForMs: number;
  /** Failures during the outage, logged or not. */
  failures: number;
}

export class OutageLog {
  private since: number | null = null;
  private lastLogged = 0;
  private count = 0;

  constructor(readonly intervalMs = 30000) {}

  /** Records a failure; true when this one is to be logged. */
  failed(now = Date.now()): boolean {
    this.count++;
    if (this.since === null) {
      this.since = now;
      this.lastLogged = now;
      return true;
    }
    if (now - this.lastLogged < this.intervalMs) return false;
    this.lastLogged = now;
    return true;
  }

  /** Ends an outage: how long it lasted and how often it failed, or null when none was going on. */
  recovered(now = Date.now()): OutageEnd | null {
    if (this.since === null) return null;
    const end = { failingForMs: now - this.since, failures: this.count };
    this.since = null;
    this.count = 0;
    return end;
  }

  /** Failures since the outage began (0 when none is going on). */
  get failures(): number {
    return this.count;
  }

  /** How long the outage has lasted, or null when none is going on. */
  failingForMs(now = Date.now()): number | null {
    return this.since === null ? null : now - this.since;
  }
}
