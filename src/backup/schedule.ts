/**
 * When the daemon takes a base backup, and which kind (pure: the complete backups and the
 * clock in, a decision out).
 *
 * A backup is due when the newest complete one (of either kind) stopped `backupIntervalHours`
 * ago, or there is none. It is a full one when there is no full backup, the newest full one
 * is `fullBackupIntervalDays` old, the chain it would extend already holds
 * `maxIncrementalChain` incrementals, or incrementals are off (`maxIncrementalChain` 0);
 * otherwise incremental (the server may still refuse: the caller then takes a full one).
 */
import { chainOf, isIncremental, type BackupMetadata } from './catalog';

export interface ScheduleSettings {
  backupIntervalHours: number;
  fullBackupIntervalDays: number;
  maxIncrementalChain: number;
}

export type ScheduleDecision = { due: false } | { due: true; kind: 'full' | 'incremental'; why: string };

const HOUR_MS = 3_600_000;

export function nextScheduledBackup(complete: readonly BackupMetadata[], now: number, s: ScheduleSettings): ScheduleDecision {
  if (s.backupIntervalHours <= 0) return { due: false };
  const newestOf = (list: readonly BackupMetadata[]): BackupMetadata | null =>
    list.reduce<BackupMetadata | null>((n, m) => (!n || Date.parse(m.stoppedAt) > Date.parse(n.stoppedAt) ? m : n), null);
  const newest = newestOf(complete);
  if (newest && now - Date.parse(newest.stoppedAt) < s.backupIntervalHours * HOUR_MS) return { due: false };
  const newestFull = newestOf(complete.filter((m) => !isIncremental(m)));
  if (!newestFull) return { due: true, kind: 'full', why: 'no full backup yet' };
  if (s.maxIncrementalChain <= 0) return { due: true, kind: 'full', why: 'incremental backups are off (max_incremental_chain = 0)' };
  if (s.fullBackupIntervalDays > 0 && now - Date.parse(newestFull.stoppedAt) >= s.fullBackupIntervalDays * 24 * HOUR_MS) {
    return { due: true, kind: 'full', why: `the newest full backup (${newestFull.name}) is ${s.fullBackupIntervalDays} days old or older` };
  }
  // The newest backup is the parent an incremental is taken against; its chain holds the full
  // backup and the incrementals so far.
  const incrementalsSoFar = chainOf(newest!).length - 1;
  if (incrementalsSoFar >= s.maxIncrementalChain) {
    return { due: true, kind: 'full', why: `backup ${newest!.name} ends a chain of ${incrementalsSoFar} incremental backups (max_incremental_chain = ${s.maxIncrementalChain})` };
  }
  return { due: true, kind: 'incremental', why: `an incremental on ${newest!.name}` };
}
