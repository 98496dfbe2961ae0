/**
 * The receiver's writer: XLogData payloads from the socket go into a queue, and one loop writes
 * them to the spool in batches, records segments in the ledger as they open and complete,
 * hands complete segments to the uploader, fsyncs (and reports) when asked, and snapshots the
 * open segment as NAME.partial.
 *
 * The queue decouples the socket from disk: past QUEUE_HIGH_WATER bytes the stream is paused,
 * and resumed below QUEUE_LOW_WATER, while the receiver's status timer keeps answering the
 * server, so wal_sender_timeout never fires during a pause. Everything runs in the one loop,
 * in queue order: a sync or partial request sees every byte queued before it written.
 *
 * It owns two positions: received (written to the spool) and fsynced (durable in the spool).
 */
import { fileSource } from '../archive/body-source';
import type { SiteConfig } from '../config/config-types';
import type { Ledger } from '../ledger/ledger';
import { isDiskFull, stateDiskFullError } from '../util/disk-full';
import { SlabCopier } from '../util/slab-copier';
import { withTimeout } from '../util/timers';
import { maxLsn, type Lsn } from '../wal/lsn';
import type { CompletedSegment, OpenSegment, SegmentSpool } from '../wal/segment-spool';
import type { StateWrites } from './state-writes';
import type { SiteUploads } from './site-uploads';

const QUEUE_HIGH_WATER = 8 * 1024 * 1024;
const QUEUE_LOW_WATER = 2 * 1024 * 1024;
const WRITE_BATCH_BYTES = 4 * 1024 * 1024;

type QueueItem = { kind: 'data'; tli: number; start: Lsn; data: Buffer } | { kind: 'partial' } | { kind: 'sync' };

/** The stream the writer holds back when its queue is full. */
export interface PausableStream {
  pause(): void;
  resume(): void;
  readonly isPaused: boolean;
}

/** What the writer needs of the receiver; the getters are read when used (set up late, replaced on reconnect). */
export interface WalWriterParts {
  site: SiteConfig;
  writes: StateWrites;
  segSize: () => number;
  spool: () => SegmentSpool;
  ledger: () => Ledger;
  uploader: () => SiteUploads;
  stream: () => PausableStream | null;
  /** Settles once the receiver's state (ledger, spool) is open: nothing is written before. */
  ready: () => Promise<void>;
  /** Reports positions to the server now. */
  sendStatus: () => void;
  /** The writer failed: the stream must end with this error. */
  fail: (err: unknown) => void;
  /** A segment is complete and durable: streaming may resume after it. */
  completed: (resume: { lsn: Lsn; tli: number }) => void;
  log: { debug(fields: Record<string, unknown>, msg: string): void };
}

export class WalWriter {
  private readonly queue: QueueItem[] = [];
  /** Received payloads live in recycled slabs from arrival until they are written. */
  private readonly copier = new SlabCopier();
  private bytes = 0;
  private running = false;
  private error: unknown = null;
  private idleWaiters: Array<() => void> = [];
  private syncPending = false;
  private lastPartialName = '';
  private lastPartialBytes = -1;
  private lastTailRequest = 0;
  private receivedLsn: Lsn = 0n;
  private fsyncedLsn: Lsn = 0n;

  constructor(private readonly parts: WalWriterParts) {}

  get received(): Lsn {
    return this.receivedLsn;
  }

  get fsynced(): Lsn {
    return this.fsyncedLsn;
  }

  get queuedBytes(): number {
    return this.bytes;
  }

  /** The loop ended on an error not yet taken by idle(). */
  get failed(): boolean {
    return this.error !== null;
  }

  /** Streaming starts (again) at `lsn`: nothing after it is held. */
  startAt(lsn: Lsn): void {
    this.receivedLsn = this.fsyncedLsn = lsn;
  }

  /** A timeline switch: bytes past `switchpoint` were the old timeline's alone. */
  clampTo(switchpoint: Lsn): void {
    if (this.receivedLsn > switchpoint) this.receivedLsn = switchpoint;
    if (this.fsyncedLsn > switchpoint) this.fsyncedLsn = switchpoint;
  }

  /** Queues a payload (copied: the socket's buffer is reused). */
  push(tli: number, start: Lsn, payload: Buffer): void {
    this.queue.push({ kind: 'data', tli, start, data: this.copier.copy(payload) });
    this.bytes += payload.length;
    if (this.bytes > QUEUE_HIGH_WATER) this.parts.stream()?.pause();
    this.kick();
  }

  /** Asks for an fsync and a report once everything queued so far is written. */
  requestSync(): void {
    if (this.syncPending) return;
    this.syncPending = true;
    this.queue.push({ kind: 'sync' });
    this.kick();
  }

  /** Asks for the open segment to be archived as NAME.partial once everything queued is written. */
  requestPartial(): void {
    this.queue.push({ kind: 'partial' });
    this.kick();
  }

  /**
   * A server shutting down waits until everything it sent is confirmed; in archive mode that
   * means archiving the tail now, not at the next partial interval. At most once a second.
   */
  requestTail(): void {
    const uploader = this.parts.uploader();
    if (uploader.archivedLsn >= this.receivedLsn) return;
    const now = Date.now();
    if (now - this.lastTailRequest < 1000) return;
    this.lastTailRequest = now;
    this.requestPartial();
  }

  /** Drops what is queued: after a dead connection the open segment is received again from its start. */
  drop(): void {
    for (const item of this.queue) if (item.kind === 'data') this.copier.release(item.data);
    this.queue.length = 0;
    this.bytes = 0;
  }

  /** Waits for the loop to finish what it has; throws (once) the error it ended on. */
  async idle(): Promise<void> {
    if (this.running) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.error) {
      const err = this.error;
      this.error = null;
      throw err;
    }
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    const { site } = this.parts;
    try {
      await this.parts.ready();
      while (this.queue.length > 0) {
        const item = this.queue.shift()!;
        if (item.kind === 'data') {
          // Everything queued behind it on the same timeline goes down in one vectored write.
          const batch = [item.data];
          let bytes = item.data.length;
          while (bytes < WRITE_BATCH_BYTES && this.queue[0]?.kind === 'data' && this.queue[0].tli === item.tli) {
            const next = this.queue.shift() as { data: Buffer };
            batch.push(next.data);
            bytes += next.data.length;
          }
          this.bytes -= bytes;
          await this.write(item.tli, item.start, batch, bytes);
          for (const b of batch) this.copier.release(b);
          const stream = this.parts.stream();
          if (stream?.isPaused && this.bytes < QUEUE_LOW_WATER) stream.resume();
          // In sync mode every batch is made durable and reported at once: commits wait on it.
          if (site.mode === 'sync' && this.queue.length === 0) await this.syncAndReport();
        } else if (item.kind === 'sync') {
          this.syncPending = false;
          await this.syncAndReport();
        } else {
          await this.snapshotPartial();
        }
      }
    } catch (err) {
      // What waiting cannot fix on a full disk (a failed fsync: the bytes are received again
      // after the reconnect) still gets the operator's line.
      this.error = isDiskFull(err) ? stateDiskFullError(site.state, 'writing the spool', err) : err;
      this.drop();
      this.parts.fail(this.error);
    } finally {
      this.running = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async write(tli: number, start: Lsn, batch: Buffer[], bytes: number): Promise<void> {
    await this.parts.spool().write(
      tli,
      start,
      batch,
      (seg) => this.segmentOpened(seg),
      (seg) => this.segmentCompleted(seg),
    );
    this.parts.writes.worked();
    this.receivedLsn = start + BigInt(bytes);
  }

  private async segmentOpened(seg: OpenSegment): Promise<void> {
    const { site, writes } = this.parts;
    await writes.must(`recording segment ${seg.name} in the ledger`, () =>
      this.parts.ledger().upsertReceiving(site.name, { timeline: seg.tli, segNo: seg.segNo, name: seg.name, startLsn: seg.startLsn, size: this.parts.segSize() }),
    );
  }

  /**
   * The complete row is durable before anything about the segment is reported or queued for
   * upload: the ledger then knows every segment the server was told about, which lets later
   * records (archived, positions) lag on a full disk without a restart losing track.
   */
  private async segmentCompleted(seg: CompletedSegment): Promise<void> {
    const { site, writes } = this.parts;
    const ledger = this.parts.ledger();
    const end = seg.startLsn + BigInt(this.parts.segSize());
    await writes.must(`recording segment ${seg.name} as complete in the ledger`, () =>
      ledger.transaction(() => {
        ledger.markComplete(site.name, seg.tli, seg.segNo, seg.sha256);
        ledger.advancePositions(site.name, { received: end, fsynced: end });
      }),
    );
    this.fsyncedLsn = maxLsn(this.fsyncedLsn, end);
    this.parts.completed({ lsn: end, tli: seg.tli });
    this.parts.uploader().enqueue({ tli: seg.tli, segNo: seg.segNo, name: seg.name, startLsn: seg.startLsn }, seg.sha256, seg.crc32c);
    this.parts.log.debug({ segment: seg.name }, 'segment complete');
  }

  private async syncAndReport(): Promise<void> {
    const synced = await this.parts.spool().fsync();
    if (synced !== null) this.fsyncedLsn = maxLsn(this.fsyncedLsn, synced);
    this.parts.sendStatus();
  }

  /** Uploads what the open segment holds so far as NAME.partial. */
  private async snapshotPartial(): Promise<void> {
    const spool = this.parts.spool();
    const uploader = this.parts.uploader();
    const open = spool.open;
    if (!open || open.received === 0) return;
    if (open.name === this.lastPartialName && open.received === this.lastPartialBytes) return;
    if (uploader.partialBusy) return;
    // Taken with `open`: the spool's hash of exactly those bytes.
    const sha256 = spool.openDigest() ?? undefined;
    const synced = await spool.fsync();
    if (synced !== null) this.fsyncedLsn = maxLsn(this.fsyncedLsn, synced);
    this.lastPartialName = open.name;
    this.lastPartialBytes = open.received;
    // Not awaited: the writer goes on while the upload reads the fsynced prefix of the file
    // (bytes that do not change); partials upload one at a time.
    void uploader.uploadPartial(open, fileSource(spool.partialPath(open.name), open.received, spool.headerRoom), { sha256 }).catch(() => undefined);
  }

  /**
   * At a stop, after idle(): leaves the freshest possible partial in the archive (the loss
   * window is what is not there) and waits for the uploads, each within `timeoutMs`.
   */
  async archiveTailForStop(timeoutMs: number): Promise<void> {
    const spool = this.parts.spool();
    const uploader = this.parts.uploader();
    const open = spool.open;
    const sha256 = spool.openDigest() ?? undefined;
    if (open && open.received > 0) {
      const synced = await spool.fsync();
      if (synced !== null) this.fsyncedLsn = maxLsn(this.fsyncedLsn, synced);
      await withTimeout(uploader.uploadPartial(open, fileSource(spool.partialPath(open.name), open.received, spool.headerRoom), { sha256 }), timeoutMs);
    }
    await withTimeout(uploader.idle(), timeoutMs);
  }

  /** Records the positions in the ledger, unless the state disk is full (they are recorded again later). */
  recordPositions(): void {
    if (this.receivedLsn === 0n) return;
    const ledger = this.parts.ledger();
    const positions = { received: this.receivedLsn, fsynced: this.fsyncedLsn };
    this.parts.writes.may('recording positions', () => ledger.advancePositions(this.parts.site.name, positions));
  }
}
