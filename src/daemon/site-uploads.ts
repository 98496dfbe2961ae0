/**
 * A site's uploads to each of its archives: one Uploader per archive (a lane, with its own
 * queue, retries, failures and archived position), and what they mean together.
 *
 *   - A segment's spool file is removed, and the ledger records it archived, once every
 *     archive holds it: a lagging archive is caught up from the spool, whatever was reported.
 *   - The archived position reported to the server is the lowest of the archives' positions,
 *     or, with `archived_quorum = N`, the Nth highest: every byte below it is held by at least
 *     N archives (each lane's position only moves over WAL it holds, and a restart starts every
 *     lane at the position that N archives held).
 *   - A superseded partial is forgotten once every archive has deleted it; an ended timeline's
 *     last partial is recorded archived once every archive holds it.
 *
 * With one archive this is the Uploader alone: the spool file goes as soon as it is archived.
 */
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import type { BodySource } from '../archive/body-source';
import type { Lsn } from '../wal/lsn';
import { Uploader, type SegmentRef, type UploaderOptions, type UploaderStats, type UploadRecords } from './uploader';

/** What each archive's uploader is given, but the archive and its place, and the site's own. */
export type SiteUploadsOptions = Omit<UploaderOptions, 'archive' | 'lane' | 'records' | 'nameArchive'> & {
  /** The site's archives, in its order. */
  archives: readonly Archive[];
  /** How many archives must hold WAL before it counts as archived (1..archives.length). */
  quorum: number;
  /** Called whenever the site's archived position moves forward. */
  onAdvance(lsn: Lsn): void;
};

/** One archive's uploads, as status, metrics and health show them. */
export interface ArchiveLane {
  description: string;
  uploader: Uploader;
}

export class SiteUploads implements UploadRecords {
  readonly lanes: readonly ArchiveLane[];
  private position: Lsn;
  /** Per segment name, the lanes holding it, until all do. */
  private readonly stored = new Map<string, Set<number>>();
  private readonly partialsDeleted = new Map<string, Set<number>>();
  private readonly finalsStored = new Map<string, Set<number>>();
  private archivedSegments = 0;
  private lastArchived: { segment: string; at: Date } | null = null;

  constructor(private readonly opts: SiteUploadsOptions) {
    this.position = opts.initialArchived;
    const several = opts.archives.length > 1;
    const { archives, quorum, onAdvance, ...shared } = opts;
    this.lanes = archives.map((archive, lane) => ({
      description: archive.storage.description,
      uploader: new Uploader({
        ...shared,
        archive,
        lane,
        records: this,
        nameArchive: several,
        log: several ? opts.log.child({ archive: archive.storage.description }) : opts.log,
      }),
    }));
  }

  private get uploaders(): Uploader[] {
    return this.lanes.map((l) => l.uploader);
  }

  /** What the server may recycle: WAL held by `quorum` archives. */
  get archivedLsn(): Lsn {
    return this.position;
  }

  /** The lowest archive's position: the spool holds the WAL from here on. */
  get lowestLsn(): Lsn {
    return this.uploaders.reduce((min, u) => (u.archivedLsn < min ? u.archivedLsn : min), this.position);
  }

  /** The archives still missing WAL the site holds past `lsn`, lowest position first. */
  lagging(lsn: Lsn): ArchiveLane[] {
    return this.lanes.filter((l) => l.uploader.archivedLsn < lsn).sort((a, b) => (a.uploader.archivedLsn < b.uploader.archivedLsn ? -1 : 1));
  }

  clampTo(lsn: Lsn): void {
    for (const u of this.uploaders) u.clampTo(lsn);
    if (this.position > lsn) this.position = lsn;
  }

  enqueue(seg: SegmentRef, sha256: string, crc32c?: number): void {
    for (const u of this.uploaders) u.enqueue(seg, sha256, crc32c);
  }

  /**
   * A partial to every archive. A periodic one skips an archive still busy with the previous
   * (a slow store must not pile snapshots up, nor hold back the others' freshness); a final
   * one goes to every archive, and its spool file stays until all hold it.
   */
  uploadPartial(seg: SegmentRef, data: BodySource, opts: { final?: boolean; sha256?: Buffer } = {}): Promise<void> {
    const lanes = opts.final ? this.uploaders : this.uploaders.filter((u) => !u.partialBusy);
    return Promise.all(lanes.map((u) => u.uploadPartial(seg, data, opts))).then(() => undefined);
  }

  /** Every archive is busy with a partial. */
  get partialBusy(): boolean {
    return this.uploaders.every((u) => u.partialBusy);
  }

  /** The site's counters: failures over every archive; a segment counts as archived once all hold it. */
  get stats(): UploaderStats {
    const all = this.uploaders.map((u) => u.stats);
    const failing = this.uploaders.find((u) => u.failingForMs !== null);
    return {
      queued: Math.max(...all.map((s) => s.queued)),
      inFlight: all.reduce((n, s) => n + s.inFlight, 0),
      failures: all.reduce((n, s) => n + s.failures, 0),
      conflicts: all.reduce((n, s) => n + s.conflicts, 0),
      archivedSegments: this.archivedSegments,
      lastError: (failing ?? this.uploaders.find((u) => u.stats.lastError !== null))?.stats.lastError ?? null,
      lastArchivedSegment: this.lastArchived?.segment ?? null,
      lastArchivedAt: this.lastArchived?.at ?? null,
    };
  }

  /** How long the longest-failing archive has been failing (or stalled); null while all work. */
  get failingForMs(): number | null {
    return this.uploaders.reduce<number | null>((max, u) => {
      const ms = u.failingForMs;
      return ms !== null && (max === null || ms > max) ? ms : max;
    }, null);
  }

  async idle(): Promise<void> {
    await Promise.all(this.uploaders.map((u) => u.idle()));
  }

  stop(): void {
    for (const u of this.uploaders) u.stop();
  }

  // ---- UploadRecords: called by the lanes --------------------------------------------------

  segmentStored(lane: number, seg: SegmentRef, key: string, sha256: string): boolean {
    if (!this.allHold(this.stored, seg.name, lane)) return false;
    this.opts.writes.may(`recording ${seg.name} as archived`, () => this.opts.ledger.markArchived(this.opts.site, seg.tli, seg.segNo, key, sha256));
    this.archivedSegments++;
    this.lastArchived = { segment: seg.name, at: new Date() };
    return true;
  }

  partialDeleted(lane: number, seg: SegmentRef): void {
    if (!this.allHold(this.partialsDeleted, seg.name, lane)) return;
    this.opts.writes.may(`forgetting ${seg.name}.partial`, () => this.opts.ledger.forgetPartial(this.opts.site, seg.tli, seg.segNo));
  }

  finalPartialStored(lane: number, seg: SegmentRef, key: string, sha256: string): void {
    if (!this.allHold(this.finalsStored, seg.name, lane)) return;
    // A timeline's final partial is the segment's archived object, not something to remove
    // once the segment is whole: it never will be.
    this.opts.writes.may(`recording ${seg.name}.partial`, () =>
      this.opts.ledger.transaction(() => {
        this.opts.ledger.markArchived(this.opts.site, seg.tli, seg.segNo, key, sha256);
        this.opts.ledger.forgetPartial(this.opts.site, seg.tli, seg.segNo);
      }),
    );
  }

  advanced(_lane: number, _lsn: Lsn): void {
    const positions = this.uploaders.map((u) => u.archivedLsn).sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
    const held = positions[this.opts.quorum - 1];
    if (held <= this.position) return;
    this.position = held;
    this.opts.writes.may('recording the archived position', () => this.opts.ledger.advancePositions(this.opts.site, { archived: held }));
    this.opts.onAdvance(held);
  }

  /** Notes that `lane` did it for `name`; true (and forgotten) once every lane has. */
  private allHold(map: Map<string, Set<number>>, name: string, lane: number): boolean {
    if (this.lanes.length === 1) return true;
    const lanes = map.get(name) ?? new Set<number>();
    lanes.add(lane);
    if (lanes.size < this.lanes.length) {
      map.set(name, lanes);
      return false;
    }
    map.delete(name);
    return true;
  }
}
