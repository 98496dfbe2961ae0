/**
 * Ledger schema steps. Step i (0-based) takes the schema from version i to i + 1; the version
 * lives in `PRAGMA user_version`, which SQLite writes inside the same transaction as the step,
 * so a crash mid-migration leaves the old schema and the old version together.
 *
 * Append only: a released step is never edited, because ledgers already past it would not
 * run the change.
 *
 * LSNs are TEXT in the server's X/Y form so a person can read them with the sqlite3 shell and
 * compare them with pg_stat_replication; the code compares them as BigInts, never in SQL.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: the initial schema.
  `
  CREATE TABLE sites (
    site               TEXT PRIMARY KEY NOT NULL,
    system_id          TEXT NOT NULL,
    timeline           INTEGER NOT NULL,
    wal_segment_size   INTEGER NOT NULL,
    server_version_num INTEGER NOT NULL,
    received_lsn       TEXT NOT NULL DEFAULT '0/0',
    fsynced_lsn        TEXT NOT NULL DEFAULT '0/0',
    archived_lsn       TEXT NOT NULL DEFAULT '0/0',
    updated_at         TEXT NOT NULL
  ) STRICT;

  CREATE TABLE segments (
    site           TEXT NOT NULL REFERENCES sites(site),
    timeline       INTEGER NOT NULL,
    seg_no         INTEGER NOT NULL,
    name           TEXT NOT NULL,
    start_lsn      TEXT NOT NULL,
    size           INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('receiving', 'complete', 'archived')),
    received_bytes INTEGER NOT NULL DEFAULT 0,
    sha256         TEXT,
    object_key     TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    created_at     TEXT NOT NULL,
    completed_at   TEXT,
    archived_at    TEXT,
    PRIMARY KEY (site, timeline, seg_no)
  ) STRICT;
  -- The uploader asks "what is complete, oldest first" after every segment.
  CREATE INDEX segments_by_state ON segments (site, state, seg_no, timeline);

  CREATE TABLE partials (
    site        TEXT NOT NULL REFERENCES sites(site),
    timeline    INTEGER NOT NULL,
    seg_no      INTEGER NOT NULL,
    name        TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    PRIMARY KEY (site, timeline, seg_no)
  ) STRICT;

  CREATE TABLE history_files (
    site        TEXT NOT NULL REFERENCES sites(site),
    timeline    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    archived_at TEXT NOT NULL,
    PRIMARY KEY (site, timeline)
  ) STRICT;

  -- No foreign key: an alert about a site must be recordable even when the site row is the
  -- thing in doubt.
  CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    site    TEXT NOT NULL,
    at      TEXT NOT NULL,
    level   TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    code    TEXT NOT NULL,
    message TEXT NOT NULL
  ) STRICT;
  CREATE INDEX events_by_site ON events (site, id);
  `,
];

/** The schema version this build writes and understands. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Marks the file as ours in the SQLite header (`PRAGMA application_id`, ASCII "WALV"), so a
 * state directory pointed at some other program's database is refused instead of migrated.
 */
export const APPLICATION_ID = 0x57414c56;
