/**
 * What SQLite and the file system report about the ledger, as one-line walvault errors that
 * name the file and what to do.
 */
import * as nodePath from 'node:path';
import { WalvaultError, errorMessage } from '../errors';
import { isDiskFull, stateDiskFullError } from '../util/disk-full';
import { SCHEMA_VERSION } from './migrations';

// SQLite result codes that mean "this place cannot be written", as opposed to "this file is
// not a usable ledger".
// (A full disk is told apart first: see util/disk-full.ts.)
const UNWRITABLE_SQLITE = /^SQLITE_(CANTOPEN|READONLY|PERM|IOERR)/;
const UNWRITABLE_ERRNO = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOENT', 'ENOTDIR', 'EISDIR']);

/** A failed write transaction; anything that is not SQLite's (a refusal thrown inside it) is returned as it is. */
export function writeError(path: string, err: unknown): unknown {
  // A full disk is the operator's to fix, and the caller's to wait out (SQLite rolled the
  // transaction back; a later one succeeds once there is room): a typed error, never a
  // SqliteError thrown through upload and stream callbacks.
  if (isDiskFull(err)) throw stateDiskFullError(nodePath.dirname(path), `writing the ledger ${path}`, err);
  // Anything else SQLite reports (an I/O error, a file made read-only) is the operator's
  // too: typed, naming the file, never a bare SqliteError.
  if (err instanceof Error && /^SQLITE_/.test(String((err as { code?: unknown }).code))) {
    const code = String((err as { code?: unknown }).code);
    // Busy: another process (a second walvault on this state directory, an sqlite3 shell
    // left in a transaction) held the ledger past busy_timeout; the disk is not the cause.
    const fix = /^SQLITE_BUSY/.test(code)
      ? `another process holds the ledger locked (a second walvault, or an sqlite3 shell left in a transaction); close it`
      : `check the disk and the permissions of the state directory ${nodePath.dirname(path)}`;
    throw new WalvaultError('LEDGER', `cannot write the ledger ${path}: ${err.message} (${code})`, { fix: `${fix}`, cause: err });
  }
  return err;
}

export function readError(path: string, err: unknown): WalvaultError {
  return new WalvaultError('LEDGER', `${path}: ${errorMessage(err)}`, { cause: err });
}

export function tooNew(path: string, found: number): WalvaultError {
  return new WalvaultError('LEDGER',
    `ledger ${path} was written by a newer walvault (schema ${found}, this build knows ${SCHEMA_VERSION}): upgrade walvault`);
}

export function notALedger(path: string, why: string): WalvaultError {
  return new WalvaultError('LEDGER',
    `${path} is not a walvault ledger (${why}): point --state at a walvault state directory or move the file aside`);
}

export function openError(path: string, err: unknown): WalvaultError {
  if (err instanceof WalvaultError) return err;
  if (isDiskFull(err)) return stateDiskFullError(nodePath.dirname(nodePath.resolve(path)), `opening the ledger ${path}`, err);
  const code = (err as { code?: unknown }).code;
  const reason = errorMessage(err);
  if (typeof code === 'string' && (UNWRITABLE_ERRNO.has(code) || UNWRITABLE_SQLITE.test(code))) {
    return new WalvaultError('STATE_DIR_UNWRITABLE',
      `cannot write the ledger at ${path}: ${reason}`,
      { fix: `make the state directory writable by this user or choose another --state`, cause: err });
  }
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') return notALedger(path, reason);
  return new WalvaultError('LEDGER', `cannot open the ledger at ${path}: ${reason}`, { cause: err });
}
