/**
 * The positions walvault reports to the server in Standby Status Updates, and the rules that
 * make them safe to report. The server trusts the flush position: a physical slot's
 * restart_lsn follows it (WAL before it may be recycled), and synchronous commits wait on it.
 *
 *  - write: what was received; flush: what is safe, meaning archived in archive mode and
 *    fsynced in the spool in sync mode; apply = flush (walvault replays nothing; a server
 *    with synchronous_commit = remote_apply then waits on what is safe).
 *  - flush is never above write, and none of them goes backwards: a reconnect that receives
 *    a segment again from its start must not take back what was reported.
 *  - The one exception is a timeline switch (clampTo): bytes past the switch point were the
 *    old timeline's alone, so nothing past it may stay reported on the new one.
 *  - In sync mode a keepalive that asks for a reply is answered only once everything received
 *    is fsynced (keepaliveAnswer): the reply is what releases the server's waiting commits.
 */
import type { StatusPositions } from '../postgres/copy-both-messages';
import { maxLsn, type Lsn } from '../wal/lsn';

export interface ReportedSources {
  received(): Lsn;
  fsynced(): Lsn;
  archived(): Lsn;
}

const NOTHING: StatusPositions = { write: 0n, flush: 0n, apply: 0n };

export class StatusReporter {
  private last: StatusPositions = NOTHING;

  constructor(
    private readonly mode: 'archive' | 'sync',
    private readonly sources: ReportedSources,
  ) {}

  /** What the server was last told (zero before the first report). */
  get sent(): StatusPositions {
    return this.last;
  }

  /** What may be reported now. */
  positions(): StatusPositions {
    const safe = this.mode === 'sync' ? this.sources.fsynced() : this.sources.archived();
    const write = maxLsn(this.last.write, this.sources.received());
    const flush = maxLsn(this.last.flush, safe < write ? safe : write);
    return { write, flush, apply: flush };
  }

  /**
   * Reports through `send` (which writes the message) and remembers what was sent; a `send`
   * that throws leaves the last report as it was and throws on.
   */
  report(send: (p: StatusPositions) => void): StatusPositions {
    const p = this.positions();
    send(p);
    this.last = p;
    return p;
  }

  /** A keepalive asks for a reply: answer at once, or first make what was received durable. */
  keepaliveAnswer(): 'now' | 'after-fsync' {
    return this.mode === 'sync' && this.sources.fsynced() < this.sources.received() ? 'after-fsync' : 'now';
  }

  /** The timeline ended at `switchpoint`: nothing past it stays reported. */
  clampTo(switchpoint: Lsn): void {
    const clamp = (v: Lsn) => (v > switchpoint ? switchpoint : v);
    this.last = { write: clamp(this.last.write), flush: clamp(this.last.flush), apply: clamp(this.last.apply) };
  }
}
