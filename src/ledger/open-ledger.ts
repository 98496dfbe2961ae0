/**
 * Opening the ledger file: the checks SQLite would make only after creating files, the
 * owner-only mode, the connection's pragmas and the schema migration. A failure leaves no
 * half-made ledger behind.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import Database from 'better-sqlite3';
import { WalvaultError } from '../errors';
import { APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION } from './migrations';
import { notALedger, openError, tooNew } from './sqlite-errors';

const BUSY_TIMEOUT_MS = 5000;

/** The database at `path`, opened (created if needed), configured and migrated, handed to `use`. */
export function openLedgerFile<T>(path: string, use: (db: Database.Database) => T): T {
  const existed = fs.existsSync(path);
  let db: Database.Database | undefined;
  try {
    checkWritable(path, existed);
    ownerOnly(path, existed);
    db = new Database(path);
    configure(db, path);
    migrate(db, path);
    return use(db);
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
      `cannot write the ledger at ${path}: SQLite refused WAL journal mode (got "${mode}")`, { fix: 'make the state directory writable by this user or choose another --state' });
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

function removeQuietly(path: string): void {
  for (const p of [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    try {
      fs.rmSync(p, { force: true });
    } catch {
      // Best effort: the directory may be the very thing that is not writable.
    }
  }
}
