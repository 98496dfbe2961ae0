/**
 * "No room on the filesystem", however it surfaces: ENOSPC and EDQUOT from writes, fsyncs and
 * file creation; SQLITE_FULL from the ledger, and SQLITE_IOERR_SHMSIZE when SQLite cannot
 * size the ledger's shared-memory file (a full filesystem is what makes that write fail).
 */
import { errorMessage, WalvaultError } from '../errors';

const FULL_ERRNO = new Set(['ENOSPC', 'EDQUOT']);
const FULL_SQLITE = new Set(['SQLITE_FULL', 'SQLITE_IOERR_SHMSIZE']);

export function isDiskFull(err: unknown): boolean {
  if (err instanceof WalvaultError) return err.code === 'STATE_DISK_FULL' || (err.cause !== undefined && isDiskFull(err.cause));
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (FULL_ERRNO.has(code) || FULL_SQLITE.has(code));
}

/** The operator's line: which directory, what failed, and the fix. */
export function stateDiskFullError(stateDir: string, what: string, err: unknown): WalvaultError {
  if (err instanceof WalvaultError && err.code === 'STATE_DISK_FULL') return err;
  return new WalvaultError(
    'STATE_DISK_FULL',
    `state directory ${stateDir} is full: ${what} failed (${errorMessage(err)})`,
    {
      fix: 'free space on its filesystem or give it more room (archiving removes spool files, so check the archive works too); the WAL stays on the server in the slot meanwhile',
      cause: err,
    },
  );
}
