/**
 * Counts pieces of work in flight that end through callbacks, keeps the first failure, and
 * lets one caller wait until none is left. Callbacks rather than a promise per piece: the
 * chain patcher starts thousands of writes a second, and a promise chain for each kept the
 * main thread's heap twice as large as a full restore's.
 */
export class InFlight {
  private count = 0;
  private failure: Error | null = null;
  private drained: (() => void) | null = null;

  /** Starts one piece of work; `start` gets the callback that ends it (with its error, if any). */
  track(start: (done: (err: Error | null, ...rest: unknown[]) => void) => void): void {
    this.count++;
    start((err) => {
      if (err && !this.failure) this.failure = err;
      if (--this.count === 0 && this.drained) this.drained();
    });
  }

  /** Resolves once every piece has ended; throws the first failure. */
  async drain(): Promise<void> {
    if (this.count > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    if (this.failure) throw this.failure;
  }
}
