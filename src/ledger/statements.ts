/** The ledger's SQL, apart from the schema (./migrations.ts) and the read-only view's few reads. */
import type Database from 'better-sqlite3';

export const SITE_COLUMNS = 'site, system_id, timeline, wal_segment_size, server_version_num, received_lsn, fsynced_lsn, archived_lsn';
const SEGMENT_COLUMNS =
  'site, timeline, seg_no, name, start_lsn, size, state, received_bytes, sha256, object_key, attempts, last_error';
const SEGMENT_KEY = 'site = ? AND timeline = ? AND seg_no = ?';

/** Prepared once per connection; every call below is then a bind and a step. */
export function openStatements(db: Database.Database) {
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
    upsertPartial: db.prepare(
      `INSERT INTO partials (site, timeline, seg_no, name, bytes, sha256, uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (site, timeline, seg_no) DO UPDATE SET name = excluded.name, bytes = excluded.bytes, sha256 = excluded.sha256, uploaded_at = excluded.uploaded_at`,
    ),
    deletePartial: db.prepare(`DELETE FROM partials WHERE site = ? AND timeline = ? AND seg_no = ?`),
    partials: read(`SELECT timeline, seg_no, name, bytes, sha256 FROM partials WHERE site = ? ORDER BY seg_no, timeline`),
    getHistory: db.prepare(`SELECT sha256 FROM history_files WHERE site = ? AND timeline = ?`),
    insertHistory: db.prepare(`INSERT INTO history_files (site, timeline, name, sha256, archived_at) VALUES (?, ?, ?, ?, ?)`),
    insertEvent: db.prepare(`INSERT INTO events (site, at, level, code, message) VALUES (?, ?, ?, ?, ?)`),
    pruneEvents: db.prepare(
      `DELETE FROM events WHERE site = ? AND id <= (SELECT id FROM events WHERE site = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    ),
    recentEvents: db.prepare(`SELECT site, at, level, code, message FROM events WHERE site = ? ORDER BY id DESC LIMIT ?`),
  };
}

export type Statements = ReturnType<typeof openStatements>;
