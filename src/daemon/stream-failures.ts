/**
 * What the receiver does when its stream fails: stop for the operator, or reconnect, and how
 * loudly to say so. Errors no retry can fix (ERROR_TABLE's retry 'no') stop the site at once; a busy slot or walsender
 * stops it only when it lasts past a grace period before the first stream (two receivers on
 * one slot, not a predecessor the server has not yet seen die); everything else reconnects,
 * logged at debug before the first stream (the start's own error line says it all), and once
 * per interval after it (a server that stays down is not logged on every attempt).
 */
import type { Logger } from 'pino';
import { ERROR_TABLE, errorMessage, isWalvaultError } from '../errors';
import { OutageLog } from './outage-log';

const STARTUP_GRACE_MS = 5000;
/** A server that stays down: its reconnect failures are logged this often (as storage failures are). */
const RECONNECT_FAILURE_LOG_INTERVAL_MS = 30000;

export class StreamFailures {
  private readonly startedAt = Date.now();
  private readonly outage = new OutageLog(RECONNECT_FAILURE_LOG_INTERVAL_MS);

  constructor(private readonly log: Logger) {}

  /** No retry can fix `err`: the operator must act. */
  isFatal(err: unknown): boolean {
    return isWalvaultError(err) && ERROR_TABLE[err.code].retry === 'no';
  }

  /** After isFatal: whether the site must stop with `err` (true), or reconnect; logs the reconnect as due. */
  mustStop(err: unknown, o: { everStreamed: boolean; stopping: boolean }): boolean {
    if (!o.everStreamed && isWalvaultError(err) && ERROR_TABLE[err.code].retry === 'briefly' && Date.now() - this.startedAt > STARTUP_GRACE_MS) return true;
    if (o.stopping) return false;
    if (!o.everStreamed) {
      this.log.debug({ err: errorMessage(err) }, 'replication failed; reconnecting');
    } else if (this.outage.failed()) {
      this.log.error(
        { err: errorMessage(err), failures: this.outage.failures, failingForMs: this.outage.failingForMs(), loggedEveryMs: this.outage.intervalMs },
        'replication failed; reconnecting',
      );
    } else {
      this.log.debug({ err: errorMessage(err), failures: this.outage.failures }, 'replication failed; reconnecting');
    }
    return false;
  }

  /** Streaming runs again: says so when failures were logged. */
  streaming(): void {
    const back = this.outage.recovered();
    if (back) this.log.warn(back, `the replication connection is back after ${Math.round(back.failingForMs / 1000)} s`);
  }
}
