/**
 * Moves finished WAL from the spool into the archive and keeps the archived position.
 *
 * For each complete segment: store the sealed spool file (linked into a local archive on the
 * same filesystem, else written from it; either way read back and checked against the
 * checksum it was completed with; different bytes under the same name are refused), record
 * it in the ledger, then delete the spool file. Failures retry with
 * backoff until they succeed or the site stops; the spool keeps the bytes meanwhile and the
 * slot keeps them on the server, because the archived position does not move.
 *
 * A store can also fail without an error: a hung one takes requests and answers nothing, and
 * each request only ends at its deadlines (minutes, with the SDK's retries). So storage also
 * counts as failing while uploads are outstanding and none has finished for `stallMs`
 * (a stall), reported in the same places as failures and cleared by the next finished upload.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { Archive } from '../archive/archive';
import type { BodySource } from '../archive/body-source';
import { PLAIN_HEADER_LENGTH } from '../archive/envelope';
import { errorMessage, isWalvaultError, WalvaultError } from '../errors';
import type { Ledger } from '../ledger/ledger';
import { formatLsn, type Lsn } from '../wal/lsn';
import { ArchivedPosition } from './archived-position';
import type { StateWrites } from './state-writes';
import { retrying } from '../util/retry';

export interface SegmentRef {
  tli: number;
  segNo: bigint;
  name: string;
  startLsn: Lsn;
}

/**
 * What an archive's uploads mean for the site (./site-uploads.ts): with several archives a
 * segment's spool file stays, and the ledger calls it archived, until every archive holds it.
 * Called with the uploader's lane (its archive's place in the site's list).
 */
export interface UploadRecords {
  /** The lane's archive holds `seg` under `key`, verified. True when no archive still needs its spool file. */
  segmentStored(lane: number, seg: SegmentRef, key: string, sha256: string): boolean;
  /** The lane's archive no longer has the superseded partial of `seg`. */
  partialDeleted(lane: number, seg: SegmentRef): void;
  /** The lane's archive holds an ended timeline's last segment, as a permanent partial. */
  finalPartialStored(lane: number, seg: SegmentRef, key: string, sha256: string): void;
  /** The lane's archived position moved to `lsn`. */
  advanced(lane: number, lsn: Lsn): void;
}

export interface UploaderOptions {
  site: string;
  archive: Archive;
  /** This archive's place in the site's list, and what its uploads mean for the site. */
  lane: number;
  records: UploadRecords;
  /** Name the archive in log lines and errors (a site with several). */
  nameArchive: boolean;
  ledger: Ledger;
  /** Ledger records here may lag on a full state disk (see StateWrites): an upload never waits on them. */
  writes: StateWrites;
  spoolDir: string;
  segSize: number;
  concurrency: number;
  log: Logger;
  /** Outstanding uploads with none finishing for this long: storage is failing (a stall). */
  stallMs: number;
  initialArchived: Lsn;
}

export interface UploaderStats {
  queued: number;
  inFlight: number;
  failures: number;
  /** Refusals to replace an archived object with different bytes. */
  conflicts: number;
  archivedSegments: number;
  lastError: string | null;
  lastArchivedSegment: string | null;
  lastArchivedAt: Date | null;
}

interface Job {
  seg: SegmentRef;
  sha256: string;
  /** CRC32C of the segment's bytes as they arrived, when known (not for a segment found at start-up). */
  crc32c?: number;
}

const FAILURE_LOG_INTERVAL_MS = 30000;
/** Retries back off to at most this, so archiving resumes soon after storage comes back. */
/**
 * Server errors for the same object this many times in a row (the store answering, but not
 * with it: s3rver killed mid-write leaves such objects) and the segment is written over it.
 * The segment's bytes are what belongs under its name, so nothing archived is lost by it.
 */
const UNREADABLE_BEFORE_REPLACE = 3;
const RETRY_CAP_MS = 15000;

export class Uploader {
  private readonly position: ArchivedPosition;
  private readonly queue: Job[] = [];
  /** Segments queued or uploading, with their checksum. */
  private readonly pending = new Map<string, string>();
  private inFlight = 0;
  private readonly idleWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();
  private partialChain: Promise<void> = Promise.resolve();
  private partialsPending = 0;
  private lastFailureLog = 0;
  private failingSince: number | null = null;
  /** When an upload last finished, or work began after none was outstanding. */
  private lastProgressAt = Date.now();
  private stallReported = false;
  private readonly stallTimer: NodeJS.Timeout;
  readonly stats: UploaderStats = {
    queued: 0,
    inFlight: 0,
    failures: 0,
    conflicts: 0,
    archivedSegments: 0,
    lastError: null,
    lastArchivedSegment: null,
    lastArchivedAt: null,
  };

  constructor(private readonly opts: UploaderOptions) {
    this.position = new ArchivedPosition(opts.initialArchived);
    // Often enough to report a stall soon after it passes the threshold.
    this.stallTimer = setInterval(() => this.checkStall(), Math.min(5000, Math.max(200, opts.stallMs / 5)));
    this.stallTimer.unref();
  }

  get archivedLsn(): Lsn {
    return this.position.lsn;
  }

  /** After a timeline switch: WAL past the fork is not the new timeline's. */
  clampTo(lsn: Lsn): void {
    this.position.clampTo(lsn);
  }

  enqueue(seg: SegmentRef, sha256: string, crc32c?: number): void {
    // The same segment again (received a second time after a reconnect behind the archived
    // position) while its upload is queued or running: one job is enough. Two would race,
    // and the loser would look for a spool file the winner has removed.
    if (this.pending.get(seg.name) === sha256) return;
    this.pending.set(seg.name, sha256);
    this.queue.push({ seg, sha256, ...(crc32c !== undefined ? { crc32c } : {}) });
    this.queue.sort((a, b) => (a.seg.startLsn < b.seg.startLsn ? -1 : a.seg.startLsn > b.seg.startLsn ? 1 : 0));
    this.pump();
  }

  private pump(): void {
    this.stats.queued = this.queue.length;
    while (this.inFlight < this.opts.concurrency && this.queue.length > 0 && !this.abort.signal.aborted) {
      const job = this.queue.shift()!;
      this.beginWork();
      this.inFlight++;
      this.stats.inFlight = this.inFlight;
      void this.runJob(job).catch((err) => this.unexpected(job, err)).finally(() => {
        if (this.pending.get(job.seg.name) === job.sha256) this.pending.delete(job.seg.name);
        this.inFlight--;
        this.stats.inFlight = this.inFlight;
        this.pump();
      });
    }
    this.stats.queued = this.queue.length;
    if (this.inFlight === 0 && (this.queue.length === 0 || this.abort.signal.aborted)) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async runJob(job: Job): Promise<void> {
    const { seg } = job;
    const key = Archive.walKey(seg.name);
    let unreadableInARow = 0;
    if (this.abort.signal.aborted) return;
    await retrying(
      async () => {
        const file = path.join(this.opts.spoolDir, seg.name);
        const size = (await fsp.stat(file)).size;
        if (size !== PLAIN_HEADER_LENGTH + this.opts.segSize) {
          throw new WalvaultError(
            'ARCHIVE_CORRUPT',
            `spool file ${file} is ${size} bytes, not a sealed segment of ${PLAIN_HEADER_LENGTH + this.opts.segSize}`, { fix: `check the spool disk` },
          );
        }
        // The stored object is read back and must hash to the checksum taken as the bytes
        // arrived, which also proves the spool disk kept them.
        const replaceUnreadable = unreadableInARow >= UNREADABLE_BEFORE_REPLACE;
        if (replaceUnreadable) this.opts.log.warn({ segment: seg.name, key, attempts: unreadableInARow }, 'the store keeps failing to produce this object; writing the segment over it');
        const result = await this.opts.archive.putSealedFile(key, file, this.opts.segSize, Buffer.from(job.sha256, 'hex'), { replaceUnreadable, bodyCrc32c: job.crc32c });
        // Verified in the archive. On a full state disk the ledger may not hear of it now: the
        // segment's complete row is durable (no segment is queued before it is), so start-up
        // finds the object again; the spool file goes regardless, which is what makes room.
        const spoolFileDone = this.opts.records.segmentStored(this.opts.lane, seg, key, job.sha256);
        this.advance(seg.startLsn, seg.startLsn + BigInt(this.opts.segSize));
        if (spoolFileDone) await fsp.rm(file, { force: true });
        this.recovered();
        this.stats.archivedSegments++;
        this.stats.lastArchivedSegment = seg.name;
        this.stats.lastArchivedAt = new Date();
        if (result === 'repaired') this.opts.log.warn({ segment: seg.name, key, ...this.archiveField }, 'segment archived over a damaged object (a write the store tore, e.g. when it died mid-upload)');
        else this.opts.log.debug({ segment: seg.name, result }, 'segment archived');
        // The job is done: the partial of this segment is superseded, and removed once an
        // upload of it still in flight has ended. If the store fails now, the stale partial
        // stays (the whole segment wins over it everywhere); the job must not start over,
        // its spool file is gone.
        await this.partialChain;
        const deleted = await this.opts.archive.delete(key + '.partial').then(
          () => true,
          (err) => {
            this.opts.log.warn({ segment: seg.name, ...this.archiveField, err: errorMessage(err) }, 'could not delete the superseded partial of an archived segment; it stays, harmless, and the next start removes it');
            return false;
          },
        );
        if (deleted) this.opts.records.partialDeleted(this.opts.lane, seg);
      },
      {
        signal: this.abort.signal,
        capMs: RETRY_CAP_MS,
        failed: (err, attempt) => {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            this.spoolFileGone(job);
            return 'stop';
          }
          unreadableInARow = isWalvaultError(err, 'STORAGE_OBJECT_UNREADABLE') ? unreadableInARow + 1 : 0;
          this.failed(seg, err, attempt);
          return 'retry';
        },
      },
    );
  }

  /** Never a rejection nobody handles (that would end the process): said once, and left for the next start. */
  private unexpected(job: Job, err: unknown): void {
    this.opts.log.error({ segment: job.seg.name, err: errorMessage(err) }, 'archiving a segment failed unexpectedly; the next start archives it');
  }

  /**
   * The spool file of a job is gone. Archived (by an earlier job for the same bytes): the job
   * is done. Not archived: it cannot be uploaded from here, and retrying would hold an upload
   * slot forever; the job ends without moving the archived position, so the slot keeps that
   * WAL on the server and the next start receives it again.
   */
  private spoolFileGone(job: Job): void {
    const row = this.opts.ledger.getSegment(this.opts.site, job.seg.tli, job.seg.segNo);
    if (row?.state === 'archived' && row.sha256 === job.sha256) return;
    this.opts.log.error(
      { segment: job.seg.name, state: row?.state ?? null },
      'the spool file of a segment not yet archived is gone; the archived position stays before it, and the server keeps that WAL for the slot: restart walvault to receive it again',
    );
  }

  /**
   * Stores the first bytes of the segment being received as `NAME.partial`, replacing the
   * previous partial of that segment. Partials are uploaded one at a time, in order.
   */
  /** `opts.sha256`: what `data` hashed to as it arrived (see Archive.putPartial). */
  uploadPartial(seg: SegmentRef, data: BodySource, opts: { final?: boolean; sha256?: Buffer } = {}): Promise<void> {
    this.beginWork();
    this.partialsPending++;
    const run = async () => {
      const key = Archive.walKey(seg.name) + '.partial';
      if (this.abort.signal.aborted) return;
      const note = (sha256: string) => this.opts.ledger.notePartial(this.opts.site, { timeline: seg.tli, segNo: seg.segNo, name: seg.name, bytes: data.length, sha256 });
      // Noted before the upload: a crash after the object lands and before anything else is
      // recorded must leave start-up knowing this partial may be there, to remove it once its
      // segment is archived whole. Unnoted (a full state disk), a periodic partial is skipped:
      // it only freshens the archive, and the server keeps that WAL for the slot meanwhile.
      if (!opts.final && !this.opts.writes.may(`noting ${seg.name}.partial`, () => note(opts.sha256?.toString('hex') ?? ''))) return;
      await retrying(
        async () => {
          const sha = (await this.opts.archive.putPartial(key, data, opts.sha256)).toString('hex');
          if (opts.final) this.opts.records.finalPartialStored(this.opts.lane, seg, key, sha);
          else this.opts.writes.may(`recording ${seg.name}.partial`, () => note(sha));
          this.recovered();
          this.advance(seg.startLsn, seg.startLsn + BigInt(data.length));
        },
        {
          signal: this.abort.signal,
          capMs: RETRY_CAP_MS,
          failed: async (err, attempt) => {
            // The segment completed (its spool file renamed) while this partial waited or ran:
            // the whole segment's upload supersedes it, so this is not a storage failure.
            if (!opts.final && !(await data.exists())) {
              this.opts.log.debug({ segment: seg.name }, 'partial superseded by the completed segment');
              return 'stop';
            }
            this.failed(seg, err, attempt);
            // A periodic partial is superseded by the next one; only a final partial must land.
            return opts.final ? 'retry' : 'stop';
          },
        },
      );
    };
    const next = this.partialChain.then(run).finally(() => {
      this.partialsPending--;
    });
    this.partialChain = next.catch(() => undefined);
    return next;
  }

  /** True while a partial upload waits or runs: a slow store must not pile snapshots up. */
  get partialBusy(): boolean {
    return this.partialsPending > 0;
  }

  private advance(start: Lsn, end: Lsn): void {
    if (this.position.add(start, end)) this.opts.records.advanced(this.opts.lane, this.position.lsn);
  }

  private failed(seg: SegmentRef, err: unknown, attempt: number): void {
    const message = errorMessage(err);
    this.stats.failures++;
    if (err instanceof WalvaultError && err.code === 'ARCHIVE_CONFLICT') this.stats.conflicts++;
    this.stats.lastError = message;
    if (this.failingSince === null) this.failingSince = Date.now();
    try {
      this.opts.ledger.recordAttemptFailure(this.opts.site, seg.tli, seg.segNo, message);
    } catch {
      /* a partial of a segment the ledger has no row for */
    }
    const now = Date.now();
    // Once per interval, not per retry: an outage must not flood the log.
    if (now - this.lastFailureLog >= FAILURE_LOG_INTERVAL_MS || attempt === 0 && this.lastFailureLog === 0) {
      this.lastFailureLog = now;
      const code = err instanceof WalvaultError ? err.code : 'STORAGE_IO';
      this.opts.log.error(
        { segment: seg.name, ...this.archiveField, code, attempt, archived: formatLsn(this.position.lsn), queued: this.queue.length },
        `archiving ${seg.name}${this.opts.nameArchive ? ` to ${this.description}` : ''} failed: ${message}; retrying, WAL stays in the spool${this.opts.nameArchive ? ' (until every archive holds it)' : ' and on the server'}`,
      );
      try {
        this.opts.writes.may('recording an archiving failure', () => this.opts.ledger.recordEvent(this.opts.site, 'error', code, message));
      } catch {
        /* the event is for diagnosis only; the line above is logged */
      }
    }
  }

  private recovered(): void {
    const failingMs = this.failingForMs;
    this.lastProgressAt = Date.now();
    if (this.failingSince !== null || this.stallReported) {
      this.opts.log.warn({ failingForMs: failingMs ?? 0, ...this.archiveField }, this.opts.nameArchive ? `archiving to ${this.description} works again` : 'archiving works again');
      this.failingSince = null;
      this.stallReported = false;
      this.lastFailureLog = 0;
    }
  }

  /** Work starts: with nothing outstanding before, the time to a stall counts from now. */
  private beginWork(): void {
    if (this.inFlight + this.partialsPending === 0) this.lastProgressAt = Date.now();
  }

  /**
   * How long uploads have been outstanding with none finishing, once that passes the stall
   * threshold; null otherwise. Counts while a request is still waiting for its answer.
   */
  get stalledForMs(): number | null {
    if (this.inFlight + this.partialsPending === 0) return null;
    const ms = Date.now() - this.lastProgressAt;
    return ms > this.opts.stallMs ? ms : null;
  }

  /** Storage is failing only by a stall: requests wait for answers, none has failed yet. */
  get onlyStalled(): boolean {
    return this.failingSince === null && this.stalledForMs !== null;
  }

  /** How long storage has been failing (uploads failing, or stalled), or null while it works. */
  get failingForMs(): number | null {
    const failing = this.failingSince === null ? null : Date.now() - this.failingSince;
    const stalled = this.stalledForMs;
    if (failing === null) return stalled;
    return stalled === null ? failing : Math.max(failing, stalled);
  }

  /**
   * Logs a stall once it passes the threshold, then at most once per interval like failures;
   * when uploads are failing outright, their own lines say so and this stays quiet.
   */
  private checkStall(): void {
    const stalled = this.stalledForMs;
    if (stalled === null || this.failingSince !== null) return;
    const now = Date.now();
    if (this.stallReported && now - this.lastFailureLog < FAILURE_LOG_INTERVAL_MS) return;
    this.stallReported = true;
    this.lastFailureLog = now;
    const seconds = Math.round(stalled / 1000);
    const message = `archiving to ${this.description} has made no progress for ${seconds} s: the store does not answer`;
    this.stats.lastError = message;
    this.opts.log.error(
      { code: 'STORAGE_TIMEOUT', stalledSeconds: seconds, inFlight: this.inFlight + this.partialsPending, archived: formatLsn(this.position.lsn), queued: this.queue.length },
      `${message}; waiting for it (each request ends at its deadlines and is retried), WAL stays in the spool and on the server`,
    );
    try {
      this.opts.ledger.recordEvent(this.opts.site, 'error', 'STORAGE_TIMEOUT', message);
    } catch {
      /* the ledger's own trouble is reported where it is written */
    }
  }

  /** The archive, as logs and errors name it. */
  get description(): string {
    return this.opts.archive.storage.description;
  }

  private get archiveField(): { archive?: string } {
    return this.opts.nameArchive ? { archive: this.description } : {};
  }

  /** Resolves when nothing is queued or in flight (or the uploader was stopped). */
  async idle(): Promise<void> {
    await this.partialChain;
    if (this.inFlight === 0 && this.queue.length === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    clearInterval(this.stallTimer);
    this.abort.abort();
    this.pump();
  }
}
