/**
 * Deleting backups, and the WAL no retained backup needs.
 *
 * Rules (nothing a retained backup needs is ever deleted):
 * - Backups are ordered by their stored stop LSN, never by name.
 * - WAL is kept from the start segment of the oldest retained complete backup onwards, on
 *   every timeline (recovery from it may follow any later timeline); timeline history files
 *   are always kept. With no complete backup left, WAL is kept (only `--everything` removes it).
 * - Leftovers (backup directories without a completion marker) are removed by the retention
 *   policy, except the one a live backup lease names (still being taken) and a stored one
 *   newer than every complete backup (still waiting for its WAL, which the daemon completes).
 * - A backup is deleted marker first, so a half-deleted backup is never listed.
 * - An incremental backup lives with its chain: nothing an incremental that stays needs (its
 *   full backup and the incrementals between) is deleted, `backup delete NAME` of a parent
 *   refuses unless told to take its dependents too, and backups are deleted newest first, so
 *   an interrupted deletion never leaves a listed incremental without its parent. The policy
 *   counts full backups: each keeps the incrementals taken on it.
 */
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { runningBackup } from './running-backup';
import { WalvaultError } from '../errors';
import { isSegmentFileName, parseLsn, parseSegmentFileName, segmentNumber } from '../wal/lsn';
import {
  backupPrefix,
  chainOf,
  checkBackupName,
  COMPLETE_FILE,
  isIncremental,
  METADATA_FILE,
  readPendingMetadata,
  scanBackups,
  type BackupEntry,
  type BackupMetadata,
} from './catalog';

export type DeleteRequest =
  | { kind: 'name'; name: string; withDependents?: boolean }
  | { kind: 'before'; name: string }
  | { kind: 'policy'; retain: number; recoveryWindowDays: number }
  | { kind: 'everything' };

export interface DeletionPlan {
  backups: BackupMetadata[];
  leftovers: BackupEntry[];
  /** wal/ keys to delete, oldest first. */
  wal: string[];
  /** The oldest backup that stays, whose start bounds the WAL kept. */
  oldestRetained: BackupMetadata | null;
  /** A backup being taken right now (named by a live backup lease); never deleted. */
  running: string | null;
}

const WAL_PREFIX = 'wal/';
const DAY_MS = 86_400_000;

function byStop(a: BackupMetadata, b: BackupMetadata): number {
  const x = parseLsn(a.stopLsn);
  const y = parseLsn(b.stopLsn);
  return x < y ? -1 : x > y ? 1 : a.stoppedAt.localeCompare(b.stoppedAt);
}

/** The 24-hex segment name of a wal/ object (segment or partial), or null for history files and others. */
function segmentOf(name: string): string | null {
  const base = name.endsWith('.partial') ? name.slice(0, -'.partial'.length) : name;
  return isSegmentFileName(base) ? base : null;
}

/** Segment number, whatever the timeline. */
function segNoOf(segment: string, segSize: number): bigint {
  return parseSegmentFileName(segment, segSize).segNo;
}

/** Complete backups whose chain runs through `name` (taken against it, directly or not). */
function dependentsOf(complete: BackupMetadata[], name: string): BackupMetadata[] {
  return complete.filter((b) => b.name !== name && chainOf(b).includes(name));
}

/** `keep` plus every backup a kept incremental needs. */
function withChains(complete: BackupMetadata[], keep: Set<string>): Set<string> {
  for (const b of complete) if (keep.has(b.name)) for (const member of chainOf(b)) keep.add(member);
  return keep;
}

/**
 * Which backups the policy keeps: the newest `retain` full backups with the incrementals taken
 * on them, and every one needed for the recovery window, each with its chain.
 */
export function keptByPolicy(complete: BackupMetadata[], retain: number, recoveryWindowDays: number, now: Date): Set<string> {
  const keep = new Set<string>();
  const sorted = [...complete].sort(byStop);
  const fulls = sorted.filter((m) => !isIncremental(m));
  for (const m of fulls.slice(Math.max(0, fulls.length - retain))) keep.add(m.name);
  for (const m of sorted) if (isIncremental(m) && keep.has(chainOf(m)[0])) keep.add(m.name);
  if (recoveryWindowDays > 0) {
    const windowStart = now.getTime() - recoveryWindowDays * DAY_MS;
    // Every backup finished inside the window, plus the newest one before it: recovery to
    // the window's first instant starts from that one.
    let before: BackupMetadata | null = null;
    for (const m of sorted) {
      if (Date.parse(m.stoppedAt) >= windowStart) keep.add(m.name);
      else before = m;
    }
    if (before) keep.add(before.name);
  }
  return withChains(sorted, keep);
}

export async function planDeletion(archive: Archive, request: DeleteRequest, now = new Date()): Promise<DeletionPlan> {
  if (request.kind === 'name' || request.kind === 'before') checkBackupName(request.name);
  const entries = await scanBackups(archive);
  const complete = entries.filter((e) => e.complete).map((e) => e.metadata!).sort(byStop);
  const lease = await runningBackup(archive);
  const running = lease?.backup ?? null;
  const incomplete = entries.filter((e) => !e.complete);

  let doomed: BackupMetadata[] = [];
  let leftovers: BackupEntry[] = [];
  switch (request.kind) {
    case 'name': {
      if (request.name === running) {
        throw new WalvaultError('BACKUP_CONFLICT', `backup ${request.name} is being taken right now (pid ${lease!.pid} on ${lease!.host})`, { fix: `wait for it to finish` });
      }
      const m = complete.find((b) => b.name === request.name);
      const left = incomplete.find((e) => e.name === request.name);
      if (!m && !left) {
        throw new WalvaultError('BACKUP_NOT_FOUND', `no backup named ${request.name} in ${archive.storage.description}`, { fix: `run "walvault backup list" to see them` });
      }
      const dependents = m ? dependentsOf(complete, m.name) : [];
      if (dependents.length > 0 && !request.withDependents) {
        throw new WalvaultError(
          'BACKUP_CONFLICT',
          `backup ${request.name} is needed by the incremental backups ${dependents.map((b) => b.name).join(', ')}: deleting it would leave them unrestorable`, { fix: `add --with-dependents to delete them too, or delete them first` },
        );
      }
      doomed = m ? [m, ...dependents] : [];
      leftovers = left ? [left] : [];
      break;
    }
    case 'before': {
      const at = complete.findIndex((b) => b.name === request.name);
      if (at < 0) {
        throw new WalvaultError('BACKUP_NOT_FOUND', `no complete backup named ${request.name} in ${archive.storage.description}`, { fix: `run "walvault backup list" to see them` });
      }
      // What stays keeps its chain, even where it reaches before the named backup.
      const keep = withChains(complete, new Set(complete.slice(at).map((b) => b.name)));
      doomed = complete.slice(0, at).filter((b) => !keep.has(b.name));
      break;
    }
    case 'policy': {
      if (!Number.isInteger(request.retain) || request.retain < 1) {
        throw new WalvaultError('CONFIG_INVALID', `retain ${request.retain}: keep at least 1 backup (to delete them all, use --everything)`);
      }
      const keep = keptByPolicy(complete, request.retain, request.recoveryWindowDays, now);
      doomed = complete.filter((b) => !keep.has(b.name));
      // A backup whose stream was stored (metadata.json) and only waits for its WAL is
      // completed by the daemon once the WAL arrives: it is kept while no complete backup
      // stops after it. Everything else without a marker is a leftover.
      const newestStop = complete.length > 0 ? parseLsn(complete[complete.length - 1].stopLsn) : -1n;
      leftovers = [];
      for (const e of incomplete) {
        if (e.name === running) continue;
        const pending = e.keys.includes(backupPrefix(e.name) + METADATA_FILE) ? await readPendingMetadata(archive, e.name) : null;
        if (pending && parseLsn(pending.meta.stopLsn) > newestStop) continue;
        leftovers.push(e);
      }
      break;
    }
    case 'everything': {
      if (running) {
        throw new WalvaultError('BACKUP_CONFLICT', `backup ${running} is being taken right now (pid ${lease!.pid} on ${lease!.host})`, { fix: `wait for it to finish before deleting everything` });
      }
      doomed = complete;
      leftovers = incomplete;
      break;
    }
  }

  const doomedNames = new Set(doomed.map((b) => b.name));
  const retained = complete.filter((b) => !doomedNames.has(b.name));
  const oldestRetained = retained.length > 0 ? retained.reduce((a, b) => (parseLsn(a.startLsn) <= parseLsn(b.startLsn) ? a : b)) : null;

  let wal: string[] = [];
  if (request.kind === 'everything') {
    wal = (await archive.listWal()).map((n) => WAL_PREFIX + n);
  } else if (oldestRetained) {
    const segSize = oldestRetained.walSegmentSize;
    const keepFrom = segmentNumber(parseLsn(oldestRetained.startLsn), segSize);
    wal = (await archive.listWal())
      .filter((n) => {
        const seg = segmentOf(n);
        return seg !== null && segNoOf(seg, segSize) < keepFrom;
      })
      .sort((a, b) => {
        const x = segNoOf(segmentOf(a)!, segSize);
        const y = segNoOf(segmentOf(b)!, segSize);
        return x < y ? -1 : x > y ? 1 : a.localeCompare(b);
      })
      .map((n) => WAL_PREFIX + n);
  }
  return { backups: doomed, leftovers, wal, oldestRetained, running };
}

export function planIsEmpty(plan: DeletionPlan): boolean {
  return plan.backups.length === 0 && plan.leftovers.length === 0 && plan.wal.length === 0;
}

/** Human lines, the same for the dry run and the real one. */
export function describePlan(plan: DeletionPlan): string[] {
  const lines: string[] = [];
  for (const b of plan.backups) lines.push(`backup ${b.name} (${isIncremental(b) ? `incremental on ${b.parent}, ` : ''}finished ${b.stoppedAt}, WAL ${b.startLsn}..${b.stopLsn}, timeline ${b.stopTimeline})`);
  for (const e of plan.leftovers) lines.push(`incomplete backup ${e.name} (${e.keys.length} objects, no completion marker)`);
  if (plan.wal.length > 0) {
    lines.push(`WAL: ${plan.wal.length} objects, ${plan.wal[0].slice(WAL_PREFIX.length)} .. ${plan.wal[plan.wal.length - 1].slice(WAL_PREFIX.length)}`);
  }
  return lines;
}

/** Carries out a plan: each backup marker first, then the WAL oldest first. */
export async function executeDeletion(archive: Archive, plan: DeletionPlan, log: Logger): Promise<void> {
  // Newest first: an incremental goes before the backups it was taken against.
  for (const b of [...plan.backups].sort(byStop).reverse()) await deleteBackupObjects(archive, b.name, log);
  for (const e of plan.leftovers) await deleteBackupObjects(archive, e.name, log);
  for (const key of plan.wal) await archive.delete(key);
  if (plan.wal.length > 0) log.info({ objects: plan.wal.length, first: plan.wal[0], last: plan.wal[plan.wal.length - 1] }, 'deleted WAL no retained backup needs');
}

async function deleteBackupObjects(archive: Archive, name: string, log: Logger): Promise<void> {
  const prefix = backupPrefix(name);
  // Marker first: from that moment the backup is not listed, whatever happens next.
  await archive.delete(prefix + COMPLETE_FILE);
  await archive.delete(prefix + METADATA_FILE);
  const rest = await archive.storage.list(prefix);
  for (const o of rest) await archive.delete(o.key);
  log.info({ backup: name, objects: rest.length + 2 }, 'deleted backup');
}
