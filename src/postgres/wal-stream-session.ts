/**
 * One START_REPLICATION ... PHYSICAL exchange, from CopyBothResponse to its end.
 *
 * Ends:
 *  - `end-of-timeline`: the server sent CopyDone ('c') because the timeline we asked for
 *    ended (a promotion upstream). We answer with a last status update and our own CopyDone;
 *    the server then sends a row (next_tli, next_tli_startpos) and ReadyForQuery.
 *    A start exactly at the end of an old timeline skips copy mode and gets the row directly.
 *  - `stopped`: we sent CopyDone; the server answers CopyDone, CommandComplete, ReadyForQuery.
 *  - `server-shutdown`: the server sent CommandComplete inside copy mode and closed the socket.
 */
import { WalvaultError } from '../errors';
import { formatLsn, parseLsn, type Lsn } from '../wal/lsn';
import {
  encodeStatusUpdate,
  KEEPALIVE,
  readKeepalive,
  readXLogDataHeader,
  XLOG_DATA,
  XLOG_DATA_HEADER,
  type Keepalive,
  type StatusPositions,
  type XLogDataHeader,
} from './copy-both-messages';
import { socketOf, type PgConnection, type PgMessageName } from './pg-internals';

export interface StreamHandlers {
  /** Called once the server has entered copy-both mode (the slot is ours from here on). */
  onStart?(): void;
  /**
   * `payload` is a view into the protocol parser's buffer, which the next socket read may
   * overwrite: copy what must outlive the call.
   */
  onXLogData(header: XLogDataHeader, payload: Buffer): void;
  onKeepalive(k: Keepalive): void;
  /** Positions for the last status update sent before our CopyDone. */
  finalPositions(): StatusPositions;
}

export type StreamEnd =
  | { kind: 'end-of-timeline'; nextTli: number; nextTliStart: Lsn }
  | { kind: 'stopped' }
  | { kind: 'server-shutdown' };

export class WalStreamSession {
  readonly done: Promise<StreamEnd>;
  private resolveDone!: (e: StreamEnd) => void;
  private rejectDone!: (e: unknown) => void;
  private inCopy = false;
  private clientCopyDone = false;
  private serverCopyDone = false;
  private serverCompletedInCopy = false;
  private socketClosed = false;
  private expectedStart: Lsn;
  private paused = false;
  private readonly listeners: Array<[PgMessageName, (msg: any) => void]> = [];

  private unsubscribeCopyData: (() => void) | null;

  /** `subscribeCopyData` delivers the bodies of CopyData messages until its return is called. */
  constructor(
    private readonly conn: PgConnection,
    private readonly handlers: StreamHandlers,
    start: Lsn,
    subscribeCopyData: (consumer: (body: Buffer) => void) => () => void,
  ) {
    this.expectedStart = start;
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.listen('replicationStart', () => {
      this.inCopy = true;
      this.handlers.onStart?.();
    });
    this.unsubscribeCopyData = subscribeCopyData((body) => this.onCopyData(body));
    this.listen('copyDone', () => this.onServerCopyDone());
    // Emitted by pg's connection when its socket closes, before pg fails the pending query.
    this.listen('end', () => (this.socketClosed = true));
    this.listen('commandComplete', () => {
      if (this.inCopy && !this.serverCopyDone) this.serverCompletedInCopy = true;
    });
  }

  private listen(event: PgMessageName, fn: (msg: any) => void): void {
    this.conn.on(event, fn);
    this.listeners.push([event, fn]);
  }

  private detach(): void {
    for (const [event, fn] of this.listeners) this.conn.removeListener(event, fn);
    this.listeners.length = 0;
    this.unsubscribeCopyData?.();
    this.unsubscribeCopyData = null;
    if (this.paused) this.resume();
  }

  /** Wires the pending START_REPLICATION query to this session's outcome. */
  attach(query: Promise<Array<{ rows: Array<Record<string, unknown>> }>>, mapError: (err: unknown) => Error): void {
    query.then(
      (results) => {
        this.detach();
        const row = results.flatMap((r) => r.rows ?? []).find((r) => r.next_tli !== undefined);
        if (row) {
          this.resolveDone({
            kind: 'end-of-timeline',
            nextTli: Number(row.next_tli),
            nextTliStart: parseLsn(String(row.next_tli_startpos)),
          });
        } else {
          this.resolveDone({ kind: 'stopped' });
        }
      },
      (err) => {
        this.detach();
        // The server ended the copy and then closed the socket, with no ErrorResponse: it is
        // shutting down (a query it rejected would carry a SQLSTATE, and the socket stays open).
        if (this.serverCompletedInCopy && this.socketClosed && (err as { code?: unknown })?.code === undefined) {
          this.resolveDone({ kind: 'server-shutdown' });
        } else {
          this.rejectDone(mapError(err));
        }
      },
    );
  }

  private onCopyData(chunk: Buffer): void {
    try {
      const kind = chunk[0];
      if (kind === XLOG_DATA) {
        const header = readXLogDataHeader(chunk);
        if (header.dataStart !== this.expectedStart) {
          throw new WalvaultError(
            'WAL_DISCONTINUITY',
            `server sent WAL from ${formatLsn(header.dataStart)} where ${formatLsn(this.expectedStart)} was expected`,
          );
        }
        const payload = chunk.subarray(XLOG_DATA_HEADER);
        this.expectedStart = header.dataStart + BigInt(payload.length);
        this.handlers.onXLogData(header, payload);
      } else if (kind === KEEPALIVE) {
        this.handlers.onKeepalive(readKeepalive(chunk));
      }
      // Other message kinds are not sent on physical streams; ignoring them is safe.
    } catch (err) {
      this.fail(err);
    }
  }

  private onServerCopyDone(): void {
    this.serverCopyDone = true;
    if (!this.clientCopyDone) {
      try {
        this.sendStatus(this.handlers.finalPositions(), false);
      } catch {
        /* the final update is a courtesy; the server has what it needs */
      }
      this.clientCopyDone = true;
      this.conn.endCopyFrom();
    }
  }

  private fail(err: unknown): void {
    this.detach();
    this.rejectDone(err);
    // Leaving copy mode from our side cannot undo a broken stream; the owner closes the socket.
  }

  sendStatus(p: StatusPositions, replyRequested: boolean): void {
    if (this.clientCopyDone || !this.inCopy) return;
    this.conn.sendCopyFromChunk(encodeStatusUpdate(p, replyRequested));
  }

  /** Ends streaming from our side (after a last status update). */
  stop(final?: StatusPositions): void {
    if (this.clientCopyDone) return;
    if (final && this.inCopy) this.sendStatus(final, false);
    if (!this.inCopy) return;
    this.clientCopyDone = true;
    this.conn.endCopyFrom();
  }

  get streaming(): boolean {
    return this.inCopy && !this.clientCopyDone && !this.serverCopyDone;
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    socketOf(this.conn).pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    socketOf(this.conn).resume();
  }

  get isPaused(): boolean {
    return this.paused;
  }
}
