/**
 * The recovery settings a restore writes into postgresql.auto.conf: restore_command calling
 * this walvault by absolute path (PostgreSQL may run as another OS user, with another PATH),
 * and the recovery target. One target at most, as PostgreSQL itself insists.
 */
import { WalvaultError } from '../errors';
import { parseLsn } from '../wal/lsn';

export interface RecoveryTarget {
  time?: string;
  lsn?: string;
  xid?: string;
  name?: string;
  immediate?: boolean;
  action?: 'promote' | 'pause' | 'shutdown';
  timeline?: string;
}

function bad(what: string, fix: string): WalvaultError {
  return new WalvaultError('CONFIG_INVALID', `${what}`, { fix: `${fix}` });
}

/** Checks a target as given on the command line; returns it normalised. */
export function checkTarget(t: RecoveryTarget): RecoveryTarget {
  const given = (['time', 'lsn', 'xid', 'name'] as const).filter((k) => t[k] !== undefined).length + (t.immediate ? 1 : 0);
  if (given > 1) throw bad('more than one recovery target given', 'choose one of --target-time, --target-lsn, --target-xid, --target-name, --target-immediate');
  if (t.lsn !== undefined) {
    try {
      parseLsn(t.lsn);
    } catch {
      throw bad(`--target-lsn ${JSON.stringify(t.lsn)} is not an LSN`, 'write it as PostgreSQL prints it, e.g. 0/3000060');
    }
  }
  if (t.xid !== undefined && !/^[0-9]+$/.test(t.xid)) throw bad(`--target-xid ${JSON.stringify(t.xid)} is not a transaction id`, 'give the number from txid_current() or pg_current_xact_id()');
  if (t.time !== undefined && Number.isNaN(Date.parse(t.time))) {
    throw bad(`--target-time ${JSON.stringify(t.time)} is not a time`, "give a timestamp with its time zone, e.g. '2026-12-01 15:04:05+00'");
  }
  if (t.timeline !== undefined && !/^(latest|current|[0-9]+)$/.test(t.timeline)) throw bad(`--target-timeline ${JSON.stringify(t.timeline)}`, 'use latest, current or a timeline number');
  if (t.action !== undefined && !hasTarget(t)) throw bad('--target-action without a target', 'give a recovery target too, or leave --target-action out');
  return t;
}

export function hasTarget(t: RecoveryTarget): boolean {
  return t.time !== undefined || t.lsn !== undefined || t.xid !== undefined || t.name !== undefined || t.immediate === true;
}

/** What recovery does at the target: as asked, else pause (PostgreSQL's default: look before promoting). */
export function targetAction(t: RecoveryTarget): 'promote' | 'pause' | 'shutdown' {
  return t.action ?? 'pause';
}

/** A value as a PostgreSQL configuration string literal. */
export function confLiteral(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/**
 * A word for /bin/sh, which runs restore_command: double quotes keep spaces, and the few
 * characters that stay special inside them are refused rather than escaped.
 */
export function shellWord(v: string, what: string): string {
  if (/["$`\\\n%]/.test(v)) throw bad(`${what} ${JSON.stringify(v)} contains a character restore_command cannot carry ("$\`\\% or a newline)`, 'use a path without them');
  return /^[A-Za-z0-9_./:=@,+-]+$/.test(v) ? v : `"${v}"`;
}

/**
 * The settings block appended to postgresql.auto.conf. It sets every recovery setting a
 * backup can bring with it (a standby's primary_conninfo and slot, an old target, a delay, an
 * archive_cleanup_command that deletes files somewhere), empty where walvault has nothing to
 * set: appended last, it wins over postgresql.conf and the file's earlier lines, so a cluster
 * restored from a standby's backup neither streams from that standby's primary nor runs its
 * commands. Only settings every supported major (12-18) knows: an unknown one would stop the
 * server from starting.
 */
export function recoverySettings(o: { restoreCommand: string; target: RecoveryTarget; primaryConninfo?: string; archiveOff?: boolean }): string {
  const t = o.target;
  const set = (name: string, value: string | undefined) => `${name} = ${confLiteral(value ?? '')}`;
  const targets: Array<[string, string | undefined]> = [
    ['recovery_target_time', t.time],
    ['recovery_target_lsn', t.lsn],
    ['recovery_target_xid', t.xid],
    ['recovery_target_name', t.name],
    ['recovery_target', t.immediate ? 'immediate' : undefined],
  ];
  const lines = [
    '',
    '# written by walvault restore; the settings after this line replace any the backup brought',
    set('restore_command', o.restoreCommand),
    // The chosen target goes last: PostgreSQL refuses any other target setting, even an
    // empty one, once a target is set ("multiple recovery targets specified").
    ...targets.filter(([, v]) => v === undefined).map(([name]) => set(name, undefined)),
    ...targets.filter(([, v]) => v !== undefined).map(([name, v]) => set(name, v)),
    set('recovery_target_timeline', t.timeline ?? 'latest'),
    set('primary_conninfo', o.primaryConninfo),
    set('primary_slot_name', undefined),
    set('recovery_end_command', undefined),
    set('archive_cleanup_command', undefined),
    set('recovery_min_apply_delay', '0'),
  ];
  if (o.archiveOff) lines.push(set('archive_mode', 'off'));
  // With a target, always written (default pause, PostgreSQL's own): a value the backup
  // brought must not decide. Without one it has no effect.
  if (hasTarget(t)) lines.push(set('recovery_target_action', targetAction(t)));
  return lines.join('\n') + '\n';
}
