/**
 * Typed errors with stable codes. The CLI prints `message` on one line and exits with
 * `exitCode`; tests and callers match on `code`, never on message text.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'PG_UNREACHABLE'
  | 'PG_NOT_POSTGRES'
  | 'PG_AUTH_FAILED'
  | 'PG_NO_REPLICATION_ROLE'
  | 'PG_HBA_REJECTED'
  | 'PG_WALSENDERS_BUSY'
  | 'PG_SLOT_ACTIVE'
  | 'PG_PROTOCOL'
  | 'PG_WAL_REMOVED'
  | 'PG_SERVER_ERROR'
  | 'PG_UNSUPPORTED_VERSION'
  | 'WAL_DISCONTINUITY'
  | 'WAL_BAD_PAGE'
  | 'WAL_BAD_NAME'
  | 'WAL_GAP'
  | 'ARCHIVE_OTHER_CLUSTER'
  | 'ARCHIVE_CONFLICT'
  | 'ARCHIVE_CORRUPT'
  | 'ARCHIVE_NOT_FOUND'
  | 'ARCHIVE_KEY_REQUIRED'
  | 'ARCHIVE_KEY_MISMATCH'
  /** The key this site pinned for an archive and the key its cluster.json records disagree. */
  | 'ARCHIVE_KEY_CHANGED'
  | 'ARCHIVE_AUTH_FAILED'
  | 'ARCHIVE_MISPLACED'
  | 'ARCHIVE_LOCKED'
  | 'STORAGE_IO'
  | 'STORAGE_OBJECT_UNREADABLE'
  /** The store did not answer (connect, first byte or progress) within its deadlines. */
  | 'STORAGE_TIMEOUT'
  | 'STATE_DIR_UNWRITABLE'
  | 'STATE_DISK_FULL'
  | 'STATE_OTHER_CLUSTER'
  /** A file of the state directory walvault cannot read as it wrote it. */
  | 'STATE_CORRUPT'
  | 'LEDGER'
  | 'BACKUP_BAD_LABEL'
  | 'BACKUP_NOT_FOUND'
  | 'BACKUP_CONFLICT'
  | 'BACKUP_WAL_MISSING'
  | 'BACKUP_ABORTED'
  /** An incremental backup cannot be taken now (server version, settings, parent); a full one can. */
  | 'BACKUP_INCREMENTAL_IMPOSSIBLE'
  /** A listed backup that cannot be restored (an incremental's chain this version cannot rebuild). */
  | 'BACKUP_UNRESTORABLE'
  | 'INTERNAL';

export class WalvaultError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; exitCode?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WalvaultError';
    this.code = code;
    this.exitCode = options.exitCode ?? 2;
  }
}

export function isWalvaultError(err: unknown, code?: ErrorCode): err is WalvaultError {
  return err instanceof WalvaultError && (code === undefined || err.code === code);
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
