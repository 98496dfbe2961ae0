/**
 * The ledger: the receiver's durable memory of where each site stands (timeline, positions)
 * and of every segment's way from the spool to the archive.
 *
 * Every method commits before it returns, in WAL mode with `synchronous=NORMAL`: a commit
 * survives a kill -9 of this process at once, and a power cut once the next WAL checkpoint
 * has synced it. That is enough because the ledger is never the only witness of a byte: the
 * WAL itself is fsynced in the spool or verified in the archive before anything is reported,
 * and start-up reconciles the ledger with both (see daemon/resume.ts), so a commit lost with
 * the power is re-derived, not lost. An fsync per commit on the event loop would cost the
 * receiver more than a tenth of its throughput. Group several calls with `transaction()` when
 * they must land together.
 *
 * One file may hold several sites. Several processes may open it (the daemon writes, `status`
 * reads); writes take the lock up front (`BEGIN IMMEDIATE`) and wait up to `busy_timeout`.
 */
import * as nodePath from 'node:path';
import type Database from 'better-sqlite3';
import { WalvaultError } from '../errors';
import { formatLsn } from '../wal/lsn';
import { openLedgerFile } from './open-ledger';
import { toPartialRow, toSegmentRow, toSiteRow, type EventRow, type PartialRow, type RawPartial, type RawSegment, type RawSite, type SegmentRow, type SegmentState, type SiteRow } from './rows';
import { writeError } from './sqlite-errors';
import { openStatements, type Statements } from './statements';

export interface LedgerOptions {
  /** Clock for the stored times; tests pin it. */
  now?: () => Date;
}

/** Events kept per site; older ones are pruned so the table stays small on a long-lived daemon. */
const EVENTS_KEPT_PER_SITE = 1000;

export class Ledger {
  readonly path: string;
  private readonly db: Database.Database;
  private readonly st: Statements;
  private readonly now: () => Date;
  private closed = false;

  private constructor(path: string, db: Database.Database, now: () => Date) {
    this.path = path;
    this.db = db;
    this.now = now;
    this.st = openStatements(db);
  }

  /**
   * Opens (creating if needed) and migrates the ledger at `path`. The caller creates the state
   * directory: creating it here would hide a mistyped `--state` behind a fresh, empty ledger.
   */
  static open(path: string, options: LedgerOptions = {}): Ledger {
    return openLedgerFile(path, (db) => new Ledger(path, db, options.now ?? (() => new Date())));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  /** Connection settings and schema version, for `status` and for tests of the durability setup. */
  settings(): { journalMode: string; synchronous: number; foreignKeys: boolean; busyTimeoutMs: number; schemaVersion: number } {
    return {
      journalMode: String(this.db.pragma('journal_mode', { simple: true })),
      synchronous: Number(this.db.pragma('synchronous', { simple: true })),
      foreignKeys: Number(this.db.pragma('foreign_keys', { simple: true })) === 1,
      busyTimeoutMs: Number(this.db.pragma('busy_timeout', { simple: true })),
      schemaVersion: Number(this.db.pragma('user_version', { simple: true })),
    };
  }

  /**
   * Runs `fn` in one transaction: all of its ledger writes commit together or not at all.
   * Nested calls become savepoints. The write lock is taken at the start so a concurrent
   * writer makes this wait (busy_timeout) instead of failing halfway.
   */
  transaction<T>(fn: () => T): T {
    // better-sqlite3 turns this into a savepoint when a transaction is already open.
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      throw writeError(this.path, err);
    }
  }

  getSite(site: string): SiteRow | null {
    const row = this.st.getSite.get(site) as RawSite | undefined;
    return row ? toSiteRow(row) : null;
  }

  /**
   * Inserts the site on first start. Later starts must present the same system identifier.
   * Server version and segment size are refreshed (pg_upgrade and `pg_resetwal --wal-segsize`
   * keep the identifier). The stored timeline is NOT replaced by the server's: it is the
   * timeline the stored positions belong to, which the receiver needs to resume on the old
   * timeline and follow the switch; move it with `advancePositions` or `switchTimeline`.
   */
  registerSite(row: { site: string; systemId: string; timeline: number; walSegmentSize: number; serverVersionNum: number }): SiteRow {
    return this.transaction(() => {
      const at = this.stamp();
      const existing = this.getSite(row.site);
      if (!existing) {
        this.st.insertSite.run(row.site, row.systemId, row.timeline, row.walSegmentSize, row.serverVersionNum, at);
      } else {
        if (existing.systemId !== row.systemId) {
          throw new WalvaultError(
            'STATE_OTHER_CLUSTER',
            `state directory ${nodePath.dirname(this.path)} holds site ${row.site} of database system ${existing.systemId}, ` +
              `but the server is ${row.systemId}: use a new state directory or the right server`,
          );
        }
        this.st.refreshSite.run(row.walSegmentSize, row.serverVersionNum, at, row.site);
        if (row.timeline < existing.timeline) {
          // Same cluster, older timeline: someone restored it without our archive. Its WAL
          // may diverge from what we hold under the same names; the archive refuses such
          // overwrites, this leaves the trail that explains why.
          this.insertEvent(row.site, 'warn', 'TIMELINE_BEHIND',
            `server is on timeline ${row.timeline} but the ledger has reached timeline ${existing.timeline}`, at);
        }
      }
      return this.requireSite(row.site);
    });
  }

  /** Positions never move backwards: each given value becomes max(stored, given). */
  advancePositions(site: string, p: { received?: bigint; fsynced?: bigint; archived?: bigint; timeline?: number }): SiteRow {
    return this.transaction(() => {
      const cur = this.requireSite(site);
      const next: SiteRow = {
        ...cur,
        receivedLsn: maxOf(cur.receivedLsn, p.received),
        fsyncedLsn: maxOf(cur.fsyncedLsn, p.fsynced),
        archivedLsn: maxOf(cur.archivedLsn, p.archived),
        timeline: p.timeline === undefined ? cur.timeline : Math.max(cur.timeline, p.timeline),
      };
      if (!samePositions(cur, next)) this.writePositions(next);
      return next;
    });
  }

  /**
   * Moves to a newer timeline whose history forks at `switchLsn`. Positions past the fork were
   * on the old timeline only; they are clamped to the fork so nothing reports the new
   * timeline's bytes as held before they arrive. The one sanctioned way positions go down.
   */
  switchTimeline(site: string, timeline: number, switchLsn: bigint): SiteRow {
    return this.transaction(() => {
      const cur = this.requireSite(site);
      if (timeline <= cur.timeline) {
        throw new WalvaultError('LEDGER', `cannot switch site ${site} from timeline ${cur.timeline} to ${timeline}: timelines only move forward`);
      }
      const clamp = (v: bigint): bigint => (v > switchLsn ? switchLsn : v);
      const next: SiteRow = {
        ...cur,
        timeline,
        receivedLsn: clamp(cur.receivedLsn),
        fsyncedLsn: clamp(cur.fsyncedLsn),
        archivedLsn: clamp(cur.archivedLsn),
      };
      this.writePositions(next);
      if (next.receivedLsn !== cur.receivedLsn) {
        this.insertEvent(site, 'warn', 'TIMELINE_FORK_BEHIND',
          `timeline ${timeline} forks at ${formatLsn(switchLsn)}, before the received position ${formatLsn(cur.receivedLsn)} on timeline ${cur.timeline}`,
          this.stamp());
      }
      return next;
    });
  }

  /**
   * Starts (or restarts) receiving a segment. A row that is not yet archived is reset, since
   * the spool file is being rewritten from its start. An archived row is left untouched: the
   * archive already holds those bytes and must not be "forgotten" by a re-receive.
   * @returns true when the row is now 'receiving'; false when it was archived and left alone.
   */
  upsertReceiving(site: string, seg: { timeline: number; segNo: bigint; name: string; startLsn: bigint; size: number }): boolean {
    return this.transaction(() => {
      this.requireSite(site);
      const info = this.st.upsertReceiving.run(site, seg.timeline, seg.segNo, seg.name, formatLsn(seg.startLsn), seg.size, this.stamp());
      return info.changes > 0;
    });
  }

  /**
   * receiving → complete. Repeating it with the same checksum is a no-op (replay after a crash);
   * a different checksum on a complete or archived row is refused, because the bytes changed
   * without the segment being restarted.
   */
  markComplete(site: string, timeline: number, segNo: bigint, sha256: string): void {
    this.transaction(() => {
      const seg = this.requireSegment(site, timeline, segNo);
      if (seg.state === 'receiving') {
        this.st.markComplete.run(sha256, this.stamp(), site, timeline, segNo);
        return;
      }
      if (seg.sha256 === sha256) return;
      if (seg.state === 'archived') {
        throw new WalvaultError('ARCHIVE_CONFLICT',
          `segment ${seg.name} of site ${site} is archived with sha256 ${seg.sha256}, but was received again as ${sha256}: ` +
            'the server sent different bytes for the same WAL', { fix: 'keep both copies and investigate before continuing' });
      }
      throw new WalvaultError('LEDGER',
        `segment ${seg.name} of site ${site} is already complete with sha256 ${seg.sha256}, not ${sha256}: ` +
          'restart it with upsertReceiving before rewriting it');
    });
  }

  /**
   * → archived, from 'complete' or from 'receiving' (an upload of the earlier copy may finish
   * after the segment was restarted; the ledger must still say what storage holds).
   * Idempotent for the same checksum; a different checksum than the completed or archived one
   * is refused.
   */
  markArchived(site: string, timeline: number, segNo: bigint, objectKey: string, sha256: string): void {
    this.transaction(() => {
      const seg = this.requireSegment(site, timeline, segNo);
      if (seg.state === 'archived') {
        if (seg.sha256 === sha256) {
          if (seg.objectKey !== objectKey) this.st.setObjectKey.run(objectKey, site, timeline, segNo);
          return;
        }
        throw new WalvaultError('ARCHIVE_CONFLICT',
          `segment ${seg.name} of site ${site} is already archived with sha256 ${seg.sha256}, not ${sha256}`);
      }
      if (seg.state === 'complete' && seg.sha256 !== sha256) {
        throw new WalvaultError('ARCHIVE_CORRUPT',
          `segment ${seg.name} of site ${site} was completed with sha256 ${seg.sha256} but uploaded as ${sha256}: ` +
            'the spool file changed after it was written', { fix: 'check the spool disk' });
      }
      this.st.markArchived.run({ objectKey, sha256, at: this.stamp(), site, timeline, segNo });
    });
  }

  recordAttemptFailure(site: string, timeline: number, segNo: bigint, error: string): void {
    this.transaction(() => {
      const info = this.st.recordFailure.run(error, site, timeline, segNo);
      if (info.changes === 0) throw noSegment(site, timeline, segNo);
    });
  }

  getSegment(site: string, timeline: number, segNo: bigint): SegmentRow | null {
    const row = this.st.getSegment.get(site, timeline, segNo) as RawSegment | undefined;
    return row ? toSegmentRow(row) : null;
  }

  /** Ordered by seg_no, then timeline: the order segments must reach the archive. */
  segmentsInState(site: string, state: SegmentState): SegmentRow[] {
    return (this.st.segmentsInState.all(site, state) as RawSegment[]).map(toSegmentRow);
  }

  allSegments(site: string): SegmentRow[] {
    return (this.st.allSegments.all(site) as RawSegment[]).map(toSegmentRow);
  }

  /**
   * Notes that `NAME.partial` may be in the archive: before its upload starts (a crash after
   * the object lands must still leave a record of it) and again once it landed. The rows are
   * the partials start-up must remove when their segment is archived whole.
   */
  notePartial(site: string, p: PartialRow): void {
    this.transaction(() => {
      this.requireSite(site);
      this.st.upsertPartial.run(site, p.timeline, p.segNo, p.name, p.bytes, p.sha256, this.stamp());
    });
  }

  /** The partial of this segment is gone from the archive, or is the segment's archived object. */
  forgetPartial(site: string, timeline: number, segNo: bigint): void {
    this.transaction(() => this.st.deletePartial.run(site, timeline, segNo));
  }

  /** Partials that may be in the archive, oldest segment first. */
  partials(site: string): PartialRow[] {
    return (this.st.partials.all(site) as RawPartial[]).map(toPartialRow);
  }

  /** Idempotent for the same content; a different history file for a known timeline is refused. */
  recordHistory(site: string, timeline: number, name: string, sha256: string): void {
    this.transaction(() => {
      this.requireSite(site);
      const existing = this.st.getHistory.get(site, timeline) as { sha256: string } | undefined;
      if (existing) {
        if (existing.sha256 === sha256) return;
        throw new WalvaultError('ARCHIVE_CONFLICT',
          `history file ${name} of site ${site} is recorded with sha256 ${existing.sha256}, not ${sha256}: ` +
            'two clusters with the same system identifier chose the same timeline', { fix: 'investigate before continuing' });
      }
      this.st.insertHistory.run(site, timeline, name, sha256, this.stamp());
    });
  }

  hasHistory(site: string, timeline: number): boolean {
    return this.st.getHistory.get(site, timeline) !== undefined;
  }

  recordEvent(site: string, level: 'info' | 'warn' | 'error', code: string, message: string): void {
    this.transaction(() => this.insertEvent(site, level, code, message, this.stamp()));
  }

  /** Newest first. */
  recentEvents(site: string, limit = 50): EventRow[] {
    return this.st.recentEvents.all(site, limit) as EventRow[];
  }

  private insertEvent(site: string, level: 'info' | 'warn' | 'error', code: string, message: string, at: string): void {
    this.st.insertEvent.run(site, at, level, code, message);
    this.st.pruneEvents.run(site, site, EVENTS_KEPT_PER_SITE);
  }

  private writePositions(r: SiteRow): void {
    this.st.writePositions.run(r.timeline, formatLsn(r.receivedLsn), formatLsn(r.fsyncedLsn), formatLsn(r.archivedLsn), this.stamp(), r.site);
  }

  private requireSite(site: string): SiteRow {
    const row = this.getSite(site);
    if (!row) throw new WalvaultError('LEDGER', `site ${site} is not registered in the ledger ${this.path}: registerSite must run first`);
    return row;
  }

  private requireSegment(site: string, timeline: number, segNo: bigint): SegmentRow {
    const seg = this.getSegment(site, timeline, segNo);
    if (!seg) throw noSegment(site, timeline, segNo);
    return seg;
  }

  private stamp(): string {
    return this.now().toISOString();
  }
}

function maxOf(stored: bigint, given: bigint | undefined): bigint {
  return given !== undefined && given > stored ? given : stored;
}

function samePositions(a: SiteRow, b: SiteRow): boolean {
  return a.timeline === b.timeline && a.receivedLsn === b.receivedLsn && a.fsyncedLsn === b.fsyncedLsn && a.archivedLsn === b.archivedLsn;
}

function noSegment(site: string, timeline: number, segNo: bigint): WalvaultError {
  return new WalvaultError('LEDGER', `site ${site} has no ledger row for segment ${segNo} on timeline ${timeline}: upsertReceiving must run first`);
}
