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
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import Database from 'better-sqlite3';
import { WalvaultError, errorMessage } from '../errors';
import { isDiskFull, stateDiskFullError } from '../util/disk-full';
import { formatLsn, parseLsn } from '../wal/lsn';
import { APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION } from './migrations';

export type SegmentState = 'receiving' | 'complete' | 'archived';

export interface SiteRow {
  site: string;
  systemId: string;
  timeline: number;
  walSegmentSize: number;
  serverVersionNum: number;
  receivedLsn: bigint;
  fsyncedLsn: bigint;
  archivedLsn: bigint;
}

export interface SegmentRow {
  site: string;
  timeline: number;
  segNo: bigint;
  name: string;
  startLsn: bigint;
  size: number;
  state: SegmentState;
  receivedBytes: number;
  sha256: string | null;
  objectKey: string | null;
  attempts: number;
  lastError: string | null;
}

export interface PartialRow {
  timeline: number;
  segNo: bigint;
  name: string;
  bytes: number;
  sha256: string;
}

export interface EventRow {
  site: string;
  at: string;
  level: 'info' | 'warn' | 'error';
  code: string;
  message: string;
}

export interface LedgerOptions {
  /** Clock for the stored times; tests pin it. */
  now?: () => Date;
}

/** Events kept per site; older ones are pruned so the table stays small on a long-lived daemon. */
const EVENTS_KEPT_PER_SITE = 1000;
const BUSY_TIMEOUT_MS = 5000;

// SQLite result codes that mean "this place cannot be written", as opposed to "this file is
// not a usable ledger".
// (A full disk is told apart first: see util/disk-full.ts.)
const UNWRITABLE_SQLITE = /^SQLITE_(CANTOPEN|READONLY|PERM|IOERR)/;
const UNWRITABLE_ERRNO = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOENT', 'ENOTDIR', 'EISDIR']);

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
    const existed = fs.existsSync(path);
    let db: Database.Database | undefined;
    try {
      checkWritable(path, existed);
      ownerOnly(path, existed);
      db = new Database(path);
      configure(db, path);
      migrate(db, path);
      return new Ledger(path, db, options.now ?? (() => new Date()));
    } catch (err) {
      try {
        db?.close();
      } catch {
        // Already failing; the first error is the one worth reporting.
      }
      // A file this call created holds nothing yet; leaving it would make the next start see
      // a "ledger" that was never initialised.
      if (!existed) removeQuietly(path);
      throw openError(path, err);
    }
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
      // A full disk is the operator's to fix, and the caller's to wait out (SQLite rolled the
      // transaction back; a later one succeeds once there is room): a typed error, never a
      // SqliteError thrown through upload and stream callbacks.
      if (isDiskFull(err)) throw stateDiskFullError(nodePath.dirname(this.path), `writing the ledger ${this.path}`, err);
      // Anything else SQLite reports (an I/O error, a file made read-only) is the operator's
      // too: typed, naming the file, never a bare SqliteError.
      if (err instanceof Error && /^SQLITE_/.test(String((err as { code?: unknown }).code))) {
        const code = String((err as { code?: unknown }).code);
        // Busy: another process (a second walvault on this state directory, an sqlite3 shell
        // left in a transaction) held the ledger past busy_timeout; the disk is not the cause.
        const fix = /^SQLITE_BUSY/.test(code)
          ? `another process holds the ledger locked (a second walvault, or an sqlite3 shell left in a transaction); close it`
          : `check the disk and the permissions of the state directory ${nodePath.dirname(this.path)}`;
        throw new WalvaultError('LEDGER', `cannot write the ledger ${this.path}: ${err.message} (${code}); ${fix}`, { cause: err });
      }
      throw err;
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
            'the server sent different bytes for the same WAL; keep both copies and investigate before continuing');
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
            'the spool file changed after it was written; check the spool disk');
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

  /** Replaces the site's partial record: only the newest `.partial` upload matters for the archived position. */
  recordPartial(site: string, p: PartialRow): void {
    this.transaction(() => {
      this.requireSite(site);
      this.st.deletePartials.run(site);
      this.st.insertPartial.run(site, p.timeline, p.segNo, p.name, p.bytes, p.sha256, this.stamp());
    });
  }

  latestPartial(site: string): PartialRow | null {
    const row = this.st.latestPartial.get(site) as RawPartial | undefined;
    if (!row) return null;
    return { timeline: Number(row.timeline), segNo: BigInt(row.seg_no), name: row.name, bytes: Number(row.bytes), sha256: row.sha256 };
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
            'two clusters with the same system identifier chose the same timeline; investigate before continuing');
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

/**
 * Another process's view of the ledger (`walvault status`, beside a running daemon): opened
 * read-only, never created, migrated or written. What it answers is what the receiver last
 * committed, so the newest positions may be a few status intervals behind the receiver.
 */
export class LedgerReader {
  private constructor(
    readonly path: string,
    private readonly db: Database.Database,
  ) {}

  /** The ledger at `path`, or null when there is none yet (a site that never streamed). */
  static open(path: string): LedgerReader | null {
    if (!fs.existsSync(path)) return null;
    try {
      return new LedgerReader(path, new Database(path, { readonly: true, fileMustExist: true }));
    } catch (err) {
      throw readError(path, err);
    }
  }

  /** The site's timeline and positions; null when the site is not in this ledger. */
  site(site: string): SiteRow | null {
    const row = this.read<RawSite>(`SELECT ${SITE_COLUMNS} FROM sites WHERE site = ?`, site);
    return row ? toSiteRow(row) : null;
  }

  /** The segment archived last, and when. */
  lastArchivedSegment(site: string): { name: string; at: string } | null {
    const row = this.read<{ name: string; archived_at: string }>(
      "SELECT name, archived_at FROM segments WHERE site = ? AND state = 'archived' ORDER BY archived_at DESC, seg_no DESC LIMIT 1",
      site,
    );
    return row ? { name: row.name, at: row.archived_at } : null;
  }

  close(): void {
    this.db.close();
  }

  private read<T>(sql: string, ...params: unknown[]): T | undefined {
    try {
      return this.db.prepare(sql).safeIntegers(true).get(...params) as T | undefined;
    } catch (err) {
      throw readError(this.path, err);
    }
  }
}

function readError(path: string, err: unknown): WalvaultError {
  return new WalvaultError('LEDGER', `${path}: ${errorMessage(err)}`, { cause: err });
}

// ---- opening -------------------------------------------------------------------------------

/**
 * Checks what SQLite would otherwise discover only after creating files: a missing or
 * read-only directory. Root passes access(2) on a 0555 directory, so this is a first line only;
 * SQLite's own errors are mapped the same way.
 */
function checkWritable(path: string, existed: boolean): void {
  const dir = nodePath.dirname(nodePath.resolve(path));
  const fail = (code: string, reason: string): never => {
    throw Object.assign(new Error(reason), { code });
  };
  let isDir = false;
  try {
    isDir = fs.statSync(dir).isDirectory();
  } catch (err) {
    const code = String((err as NodeJS.ErrnoException).code);
    if (code === 'ENOENT') fail(code, `directory ${dir} does not exist`);
    if (code === 'ENOTDIR') fail(code, `${dir} is not a directory (a parent of it is a file)`);
    throw err;
  }
  if (!isDir) fail('ENOTDIR', `${dir} is not a directory`);
  // WAL mode creates -wal and -shm next to the file, so the directory must be writable even
  // when the ledger already exists.
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    if (existed) fs.accessSync(path, fs.constants.R_OK | fs.constants.W_OK);
  } catch (err) {
    const code = String((err as NodeJS.ErrnoException).code);
    fail(code, `${existed ? path : dir} is not writable (${code})`);
  }
}

/**
 * The ledger names every segment and position: 0600. SQLite gives its -wal and -shm files the
 * mode of the database file, so the file is created (empty: SQLite takes that as a new
 * database) or tightened before SQLite opens it; -wal and -shm left by a crash are tightened too.
 */
function ownerOnly(path: string, existed: boolean): void {
  if (!existed) {
    fs.closeSync(fs.openSync(path, 'wx', 0o600));
    return;
  }
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      if (fs.statSync(file).mode & 0o077) fs.chmodSync(file, 0o600);
    } catch {
      /* absent; or not ours to change, and SQLite will say so */
    }
  }
}

function configure(db: Database.Database, path: string): void {
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  // Before anything else touches the file: a foreign SQLite database must not be migrated.
  const appId = Number(db.pragma('application_id', { simple: true }));
  if (appId !== 0 && appId !== APPLICATION_ID) throw notALedger(path, `its application_id is ${appId}`);
  const mode = String(db.pragma('journal_mode = WAL', { simple: true }));
  if (mode !== 'wal') {
    throw new WalvaultError('STATE_DIR_UNWRITABLE',
      `cannot write the ledger at ${path}: SQLite refused WAL journal mode (got "${mode}"); ` +
        'make the state directory writable by this user or choose another --state');
  }
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
}

function migrate(db: Database.Database, path: string): void {
  const version = (): number => Number(db.pragma('user_version', { simple: true }));
  if (version() > SCHEMA_VERSION) throw tooNew(path, version());
  if (version() === SCHEMA_VERSION) return;
  db.transaction(() => {
    // Another process may have migrated between the check and the lock.
    const from = version();
    if (from > SCHEMA_VERSION) throw tooNew(path, from);
    if (from === 0) {
      const tables = db.prepare(`SELECT count(*) AS n FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'`).get() as { n: number };
      if (tables.n > 0) throw notALedger(path, 'it holds tables but no walvault schema version');
      db.pragma(`application_id = ${APPLICATION_ID}`);
    }
    for (let v = from; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

function tooNew(path: string, found: number): WalvaultError {
  return new WalvaultError('LEDGER',
    `ledger ${path} was written by a newer walvault (schema ${found}, this build knows ${SCHEMA_VERSION}): upgrade walvault`);
}

function notALedger(path: string, why: string): WalvaultError {
  return new WalvaultError('LEDGER',
    `${path} is not a walvault ledger (${why}): point --state at a walvault state directory or move the file aside`);
}

function openError(path: string, err: unknown): WalvaultError {
  if (err instanceof WalvaultError) return err;
  if (isDiskFull(err)) return stateDiskFullError(nodePath.dirname(nodePath.resolve(path)), `opening the ledger ${path}`, err);
  const code = (err as { code?: unknown }).code;
  const reason = errorMessage(err);
  if (typeof code === 'string' && (UNWRITABLE_ERRNO.has(code) || UNWRITABLE_SQLITE.test(code))) {
    return new WalvaultError('STATE_DIR_UNWRITABLE',
      `cannot write the ledger at ${path}: ${reason}; make the state directory writable by this user or choose another --state`,
      { cause: err });
  }
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') return notALedger(path, reason);
  return new WalvaultError('LEDGER', `cannot open the ledger at ${path}: ${reason}`, { cause: err });
}

function removeQuietly(path: string): void {
  for (const p of [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    try {
      fs.rmSync(p, { force: true });
    } catch {
      // Best effort: the directory may be the very thing that is not writable.
    }
  }
}

// ---- statements ------------------------------------------------------------------------------

const SITE_COLUMNS = 'site, system_id, timeline, wal_segment_size, server_version_num, received_lsn, fsynced_lsn, archived_lsn';
const SEGMENT_COLUMNS =
  'site, timeline, seg_no, name, start_lsn, size, state, received_bytes, sha256, object_key, attempts, last_error';
const SEGMENT_KEY = 'site = ? AND timeline = ? AND seg_no = ?';

/** Prepared once per connection; every call below is then a bind and a step. */
function openStatements(db: Database.Database) {
  // Reads return INTEGER columns as bigint so seg_no is exact whatever its size.
  const read = (sql: string) => db.prepare(sql).safeIntegers(true);
  return {
    getSite: read(`SELECT ${SITE_COLUMNS} FROM sites WHERE site = ?`),
    insertSite: db.prepare(
      `INSERT INTO sites (site, system_id, timeline, wal_segment_size, server_version_num, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    refreshSite: db.prepare(`UPDATE sites SET wal_segment_size = ?, server_version_num = ?, updated_at = ? WHERE site = ?`),
    writePositions: db.prepare(
      `UPDATE sites SET timeline = ?, received_lsn = ?, fsynced_lsn = ?, archived_lsn = ?, updated_at = ? WHERE site = ?`,
    ),
    // The WHERE on the conflict branch is what keeps archived rows untouched; `changes` then
    // tells the caller which happened.
    upsertReceiving: db.prepare(
      `INSERT INTO segments (site, timeline, seg_no, name, start_lsn, size, state, received_bytes, created_at)
       VALUES (?, ?, ?, ?, ?, ?, 'receiving', 0, ?)
       ON CONFLICT (site, timeline, seg_no) DO UPDATE SET
         name = excluded.name, start_lsn = excluded.start_lsn, size = excluded.size, state = 'receiving',
         received_bytes = 0, sha256 = NULL, object_key = NULL, attempts = 0, last_error = NULL,
         completed_at = NULL, archived_at = NULL
       WHERE segments.state <> 'archived'`,
    ),
    markComplete: db.prepare(
      `UPDATE segments SET state = 'complete', sha256 = ?, received_bytes = size, completed_at = ? WHERE ${SEGMENT_KEY}`,
    ),
    markArchived: db.prepare(
      `UPDATE segments SET state = 'archived', object_key = @objectKey, sha256 = @sha256, archived_at = @at,
         completed_at = COALESCE(completed_at, @at), received_bytes = size, last_error = NULL
       WHERE site = @site AND timeline = @timeline AND seg_no = @segNo`,
    ),
    setObjectKey: db.prepare(`UPDATE segments SET object_key = ? WHERE ${SEGMENT_KEY}`),
    recordFailure: db.prepare(`UPDATE segments SET attempts = attempts + 1, last_error = ? WHERE ${SEGMENT_KEY}`),
    getSegment: read(`SELECT ${SEGMENT_COLUMNS} FROM segments WHERE ${SEGMENT_KEY}`),
    segmentsInState: read(`SELECT ${SEGMENT_COLUMNS} FROM segments WHERE site = ? AND state = ? ORDER BY seg_no, timeline`),
    allSegments: read(`SELECT ${SEGMENT_COLUMNS} FROM segments WHERE site = ? ORDER BY seg_no, timeline`),
    deletePartials: db.prepare(`DELETE FROM partials WHERE site = ?`),
    insertPartial: db.prepare(
      `INSERT INTO partials (site, timeline, seg_no, name, bytes, sha256, uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    latestPartial: read(
      `SELECT timeline, seg_no, name, bytes, sha256 FROM partials WHERE site = ? ORDER BY uploaded_at DESC, seg_no DESC LIMIT 1`,
    ),
    getHistory: db.prepare(`SELECT sha256 FROM history_files WHERE site = ? AND timeline = ?`),
    insertHistory: db.prepare(`INSERT INTO history_files (site, timeline, name, sha256, archived_at) VALUES (?, ?, ?, ?, ?)`),
    insertEvent: db.prepare(`INSERT INTO events (site, at, level, code, message) VALUES (?, ?, ?, ?, ?)`),
    pruneEvents: db.prepare(
      `DELETE FROM events WHERE site = ? AND id <= (SELECT id FROM events WHERE site = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    ),
    recentEvents: db.prepare(`SELECT site, at, level, code, message FROM events WHERE site = ? ORDER BY id DESC LIMIT ?`),
  };
}

type Statements = ReturnType<typeof openStatements>;

// ---- rows ----------------------------------------------------------------------------------

// Raw rows come from statements with safeIntegers on, so INTEGER columns arrive as bigint.
interface RawSite {
  site: string;
  system_id: string;
  timeline: bigint;
  wal_segment_size: bigint;
  server_version_num: bigint;
  received_lsn: string;
  fsynced_lsn: string;
  archived_lsn: string;
}

interface RawSegment {
  site: string;
  timeline: bigint;
  seg_no: bigint;
  name: string;
  start_lsn: string;
  size: bigint;
  state: SegmentState;
  received_bytes: bigint;
  sha256: string | null;
  object_key: string | null;
  attempts: bigint;
  last_error: string | null;
}

interface RawPartial {
  timeline: bigint;
  seg_no: bigint;
  name: string;
  bytes: bigint;
  sha256: string;
}

function toSiteRow(r: RawSite): SiteRow {
  return {
    site: r.site,
    systemId: r.system_id,
    timeline: Number(r.timeline),
    walSegmentSize: Number(r.wal_segment_size),
    serverVersionNum: Number(r.server_version_num),
    receivedLsn: parseLsn(r.received_lsn),
    fsyncedLsn: parseLsn(r.fsynced_lsn),
    archivedLsn: parseLsn(r.archived_lsn),
  };
}

function toSegmentRow(r: RawSegment): SegmentRow {
  return {
    site: r.site,
    timeline: Number(r.timeline),
    segNo: BigInt(r.seg_no),
    name: r.name,
    startLsn: parseLsn(r.start_lsn),
    size: Number(r.size),
    state: r.state,
    receivedBytes: Number(r.received_bytes),
    sha256: r.sha256,
    objectKey: r.object_key,
    attempts: Number(r.attempts),
    lastError: r.last_error,
  };
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
