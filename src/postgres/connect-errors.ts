/**
 * Turns what `pg` throws into one-line WalvaultErrors that name the cause and the fix.
 *
 * The server's SQLSTATE decides, and the command it answered where one SQLSTATE means
 * different things: 55000 answering START_REPLICATION is an invalidated slot (walvault runs
 * IDENTIFY_SYSTEM first and streams from its own physical slot, the other two causes of
 * 55000 there), elsewhere (BASE_BACKUP, say) a state the server cannot serve now. The
 * server's own words are always shown, never read: a server whose lc_messages translates them
 * gets the same decisions. Where one SQLSTATE covers causes with different fixes (28000: no
 * pg_hba.conf line, or a role that does not exist or may not log in), the fix names each.
 * pg's own errors carry no SQLSTATE; the texts walvault reads there are pinned in
 * pg-internals.ts (I10) with a test.
 */
import { WalvaultError } from '../errors';
import { PG_ERROR_TEXTS } from './pg-internals';

export interface ConnectTarget {
  /** host:port user=... ; never a password. */
  description: string;
  user: string;
  slot?: string;
}

interface PgLikeError {
  code?: string;
  message?: string;
  errno?: number;
  syscall?: string;
  address?: string;
  port?: number;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EPIPE', 'EAI_AGAIN', 'ENOENT']);

/** The SQLSTATE the server sent, on pg's error or on the WalvaultError that wraps it. */
export function sqlStateOf(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    // Five digits or capitals with a digit among them: Node's EPIPE or EROFS are not SQLSTATEs.
    if (typeof e.code === 'string' && /^(?=.*[0-9])[0-9A-Z]{5}$/.test(e.code)) return e.code;
  }
  return undefined;
}

/** SQLSTATE 55000: what PostgreSQL says when a request is sound but the server's state forbids it now. */
export const OBJECT_NOT_IN_PREREQUISITE_STATE = '55000';
/** SQLSTATE 0A000. */
export const FEATURE_NOT_SUPPORTED = '0A000';

/** The command an error answered, where that changes what its SQLSTATE means. */
export type PgCommand = 'START_REPLICATION';

export function mapPgError(err: unknown, target: ConnectTarget, answering?: PgCommand): WalvaultError {
  if (err instanceof WalvaultError) return err;
  const e = (err ?? {}) as PgLikeError;
  const code = e.code ?? '';
  const msg = (e.message ?? String(err)).split('\n')[0];
  const at = target.description;

  if (NETWORK_CODES.has(code) || PG_ERROR_TEXTS.connectTimeout.test(msg)) {
    return new WalvaultError(
      'PG_UNREACHABLE',
      `cannot reach PostgreSQL at ${at}: ${msg}`,
      { fix: `check that the server is running, and the host, port and listen_addresses`, cause: err },
    );
  }
  if (code === '28P01') {
    return new WalvaultError(
      'PG_AUTH_FAILED',
      `password authentication failed for user "${target.user}" at ${at}`,
      { fix: `set the right password in PGPASSWORD, a password file (PGPASSFILE, ~/.pgpass) or the site's password_file`, cause: err },
    );
  }
  if (PG_ERROR_TEXTS.noPassword.test(msg)) {
    return new WalvaultError(
      'PG_AUTH_FAILED',
      `the server at ${at} asks a password for user "${target.user}" and none is set`,
      { fix: `provide it through PGPASSWORD, a password file (PGPASSFILE, ~/.pgpass) or the site's password_file`, cause: err },
    );
  }
  if (code === '28000') {
    return new WalvaultError(
      'PG_HBA_REJECTED',
      `the server at ${at} refuses replication connections for user "${target.user}" (${msg})`,
      {
        fix:
          `add a line such as "host replication ${target.user} <backup host address>/32 scram-sha-256" to pg_hba.conf and reload; ` +
          `if the role does not exist or may not log in, CREATE ROLE ${target.user} LOGIN REPLICATION (or ALTER ROLE ${target.user} LOGIN)`,
        cause: err,
      },
    );
  }
  // On a replication connection 42501 has one cause: a role without REPLICATION starting a walsender.
  if (code === '42501') {
    return new WalvaultError(
      'PG_NO_REPLICATION_ROLE',
      `role "${target.user}" at ${at} may not start replication (${msg})`,
      { fix: `run ALTER ROLE ${target.user} REPLICATION as a superuser`, cause: err },
    );
  }
  // A base backup whose client died while the server was in BASE_BACKUP's checkpoint keeps
  // its walsender until the checkpoint ends, however long a spread checkpoint takes. The wait
  // (a condition-variable sleep) wakes for interrupts only and reads no socket; the
  // client_connection_check_interval timer is armed only when an SQL statement starts, which
  // a physical walsender never runs; TCP keepalive and user-timeout settings act in the
  // kernel, not in the waiting process. Measured on 14, 15 and 18 with each of them set in the
  // startup packet: the walsender stays. (A database walsender that has just run an SQL
  // statement does notice, but it needs pg_hba lines for a database instead of "replication".)
  // Ending that backend, or an immediate CHECKPOINT (the waiting one then finishes at once and
  // the walsender finds its client gone), frees the slot.
  if (code === '53300') {
    return new WalvaultError(
      'PG_WALSENDERS_BUSY',
      `the server at ${at} has no free walsender (${msg}); a base backup killed while the server was in its checkpoint keeps its walsender until that checkpoint ends: ` +
        `find it with "SELECT pid, application_name, state FROM pg_stat_replication" (state backup; walvault's end in _backup) and end it with "SELECT pg_terminate_backend(pid)", ` +
        `run CHECKPOINT, or wait for the checkpoint`,
      { fix: `otherwise stop an idle replication client or raise max_wal_senders (and restart)`, cause: err },
    );
  }
  if (code === '55006') {
    return new WalvaultError(
      'PG_SLOT_ACTIVE',
      `${msg} at ${at}: another receiver is using slot "${target.slot ?? '?'}"`,
      { fix: `stop it, or give this site its own slot`, cause: err },
    );
  }
  // An invalidated slot (max_slot_wal_keep_size exceeded) says so with 55000 on
  // START_REPLICATION in newer servers ("can no longer access replication slot" from 18,
  // "can no longer get changes from" for logical ones); older ones stream until the WAL is
  // missing (58P01, "requested WAL segment ... has already been removed").
  if (code === '58P01' || (code === OBJECT_NOT_IN_PREREQUISITE_STATE && answering === 'START_REPLICATION')) {
    return new WalvaultError(
      'PG_WAL_REMOVED',
      // What to do depends on who asked (the receiver, a repair): they add it.
      `the server at ${at} no longer has the WAL needed to continue (${msg})`,
      { cause: err },
    );
  }
  if (code === '3D000') {
    return new WalvaultError('PG_SERVER_ERROR', `${msg} at ${at}`, { fix: `fix dbname in the connection settings`, cause: err });
  }
  return new WalvaultError('PG_SERVER_ERROR', `PostgreSQL at ${at} failed: ${msg}${sqlStateOf(err) ? ` (SQLSTATE ${code})` : code ? ` (${code})` : ''}`, {
    cause: err,
  });
}

/** The endpoint answered, but not as PostgreSQL does (`how`: see first-answer.ts): a wrong host or port. */
export function notPostgresError(target: ConnectTarget, how: string, cause: unknown): WalvaultError {
  return new WalvaultError(
    'PG_NOT_POSTGRES',
    `the server at ${target.description} is not a PostgreSQL server (${how})`,
    { fix: `point the connection settings (--pg, or the site's pg) at PostgreSQL's host and port (5432 unless the server's port setting says otherwise)`, cause },
  );
}
