/**
 * Typed errors with stable codes. Every code is declared once, in ERROR_TABLE, with what a
 * command ending on it exits with, whether trying again can help (the daemon's reconnect loop
 * decides by it) and the fix to print when the place that throws names none of its own. The
 * CLI (cli/fail.ts) prints the cause and the fix on one line; tests and callers match on
 * `code`, never on message text.
 */

/**
 * retry: 'yes': the condition can pass by itself (a server restarting, a store briefly down);
 * 'no': the operator must act; 'briefly': a resource another process holds, which a process
 * that just died may still hold for a few seconds (the daemon retries those only at its start,
 * within a grace period).
 */
export interface ErrorKind {
  exit: number;
  retry: 'yes' | 'no' | 'briefly';
  fix: string;
}

/** sysexits' EX_SOFTWARE: a bug, not the operator's input. */
const BUG_EXIT = 70;
const ERROR_EXIT = 2;

const kind = (retry: ErrorKind['retry'], fix: string, exit = ERROR_EXIT): ErrorKind => ({ exit, retry, fix });

export const ERROR_TABLE = {
  CONFIG_INVALID: kind('no', 'correct the setting named, in the config file or on the command line'),
  PG_UNREACHABLE: kind('yes', 'check that the server runs and that host and port in the connection settings are right'),
  PG_NOT_POSTGRES: kind('yes', "point the connection settings at PostgreSQL's host and port"),
  PG_AUTH_FAILED: kind('no', 'check the user and password (password_file, PGPASSWORD or ~/.pgpass) and pg_hba.conf'),
  PG_NO_REPLICATION_ROLE: kind('no', 'ALTER ROLE the user WITH REPLICATION, or connect as a role that has it'),
  PG_HBA_REJECTED: kind('no', 'add a "replication" line for this user and host to pg_hba.conf, then SELECT pg_reload_conf()'),
  PG_WALSENDERS_BUSY: kind('briefly', 'end a leftover walsender (pg_stat_replication, pg_terminate_backend(pid)) or raise max_wal_senders'),
  PG_SLOT_ACTIVE: kind('briefly', 'stop the other process streaming from the slot, or give this site its own slot'),
  PG_PROTOCOL: kind('yes', 'the server sent what walvault does not expect: report it with the server version'),
  PG_WAL_REMOVED: kind('no', 'start a new archive with a new base backup; raise max_slot_wal_keep_size so this does not happen again'),
  PG_SERVER_ERROR: kind('yes', "see the server's message and its log"),
  /** BASE_BACKUP refused before it began (no start position sent): nothing was taken, the caller may ask otherwise. */
  PG_BACKUP_REFUSED: kind('yes', "see the server's message and its log"),
  PG_UNSUPPORTED_VERSION: kind('no', 'use PostgreSQL 13 to 18'),
  WAL_DISCONTINUITY: kind('yes', 'walvault receives the segment again from its start; report it if it repeats'),
  WAL_BAD_PAGE: kind('no', "the WAL is not this cluster's or is damaged: check the connection settings and the file"),
  WAL_BAD_NAME: kind('no', 'pass a WAL file name such as 000000010000000000000003 (%f or %p in PostgreSQL)'),
  WAL_GAP: kind('no', 'run walvault check --repair, or take a new base backup'),
  ARCHIVE_OTHER_CLUSTER: kind('no', 'use a separate archive for each cluster'),
  ARCHIVE_CONFLICT: kind('no', 'walvault never replaces an archived object: find who wrote the other one (walvault verify)'),
  ARCHIVE_CORRUPT: kind('yes', 'run walvault verify to list damaged objects; restore from another backup if one is'),
  ARCHIVE_NOT_FOUND: kind('no', 'check the archive location, or archive into it first'),
  ARCHIVE_KEY_REQUIRED: kind('no', "give the archive's public key with --encryption-public-key FILE (or encryption_public_key_file in the site)"),
  ARCHIVE_KEY_MISMATCH: kind('no', "give the archive's public key, or use a new archive for the new key"),
  ARCHIVE_KEY_CHANGED: kind('no', 'give the key to encrypt for with --encryption-public-key FILE (or encryption_public_key_file in the site)'),
  ARCHIVE_AUTH_FAILED: kind('no', "give the archive's private key (--private-key, or encryption_private_key_file in the site)"),
  ARCHIVE_MISPLACED: kind('no', 'put the object back under its own name; walvault verify lists misplaced objects'),
  ARCHIVE_LOCKED: kind('no', 'stop the other walvault writing this archive, or wait until its lease expires'),
  /** A command that writes one archive was given a site with several (run and backup push write them all). */
  ARCHIVES_WRITE_UNSUPPORTED: kind('no', 'give the site one archive (archive = URL, or one [[sites.NAME.archives]] entry) for this command'),
  /** A site's backup is complete in one of its archives and missing from another. */
  ARCHIVE_INCOMPLETE: kind('yes', 'fill the archive that lacks it with walvault copy from the one that has it'),
  STORAGE_IO: kind('yes', 'check the store, its permissions and its credentials'),
  STORAGE_OBJECT_UNREADABLE: kind('yes', 'check the store; walvault verify names damaged objects'),
  /** The store did not answer (connect, first byte or progress) within its deadlines. */
  STORAGE_TIMEOUT: kind('yes', 'check the store and the network to it'),
  STATE_DIR_UNWRITABLE: kind('no', 'fix its permissions or choose another --state'),
  STATE_DISK_FULL: kind('yes', "free space on the state directory's filesystem"),
  STATE_OTHER_CLUSTER: kind('no', 'give each cluster its own state directory'),
  /** A file of the state directory walvault cannot read as it wrote it. */
  STATE_CORRUPT: kind('yes', 'remove the file named; walvault writes it again'),
  LEDGER: kind('no', "check the state directory's filesystem; the ledger is rebuilt from the spool and the archive at start"),
  BACKUP_BAD_LABEL: kind('no', "the server's backup_label is not what walvault expects: report it with the server version"),
  BACKUP_NOT_FOUND: kind('no', 'see walvault backup list for the backups there are'),
  BACKUP_CONFLICT: kind('no', 'wait for the other backup to finish, or name another backup'),
  BACKUP_WAL_MISSING: kind('no', 'keep the receiver running until the backup\'s WAL is archived, then take the backup again'),
  BACKUP_ABORTED: kind('yes', 'take the backup again'),
  /** An incremental backup cannot be taken now (server version, settings, parent); a full one can. */
  BACKUP_INCREMENTAL_IMPOSSIBLE: kind('no', 'take a full backup (walvault backup push without --incremental)'),
  /** A listed backup that cannot be restored (an incremental's chain this version cannot rebuild). */
  BACKUP_UNRESTORABLE: kind('no', 'restore another backup; walvault check says which are restorable'),
  /** A delta restore's target directory has a live server on it (its postmaster.pid). */
  RESTORE_TARGET_RUNNING: kind('no', 'stop the server on the directory first (pg_ctl stop)'),
  /** A delta restore's target directory is another cluster's (or nothing walvault can tell as a cluster's). */
  RESTORE_OTHER_CLUSTER: kind('no', 'restore into a data directory of the backup\'s cluster, or add --force to replace it'),
  INTERNAL: kind('yes', 'this is a bug in walvault: report it with the log lines around it', BUG_EXIT),
} satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof ERROR_TABLE;

export class WalvaultError extends Error {
  readonly code: ErrorCode;
  /**
   * What the operator should do: the thrower's own, else the code's from ERROR_TABLE. The
   * message holds the thrower's fix too (after "; "), so logs and wrapped errors keep it.
   */
  readonly fix: string;
  /** The message without the fix. */
  readonly what: string;

  /**
   * True for a failure of this host's own files (a destination being written), which reading
   * the object again, or from another archive, cannot help with.
   */
  readonly local: boolean;

  constructor(code: ErrorCode, what: string, options: { cause?: unknown; fix?: string; local?: boolean } = {}) {
    super(options.fix ? `${what}; ${options.fix}` : what, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WalvaultError';
    this.code = code;
    this.what = what;
    this.fix = options.fix ?? ERROR_TABLE[code].fix;
    this.local = options.local === true;
  }

  get exitCode(): number {
    return ERROR_TABLE[this.code].exit;
  }

  /** Whether its own message names a fix (the thrower gave one). */
  get namesFix(): boolean {
    return this.message !== this.what;
  }
}

export function isWalvaultError(err: unknown, code?: ErrorCode): err is WalvaultError {
  return err instanceof WalvaultError && (code === undefined || err.code === code);
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
