/**
 * What an incremental backup needs before the server is asked for one, checked in order, each
 * refusal one BACKUP_INCREMENTAL_IMPOSSIBLE error naming the fix (the daemon takes a full
 * backup instead): a server of PostgreSQL 17 or later, `summarize_wal` on, and a parent: a
 * complete backup of this cluster, taken from 17+, on the server's current timeline history,
 * whose upload manifest the archive holds. Nothing is written here.
 */
import type { Archive } from '../archive/archive';
import { isWalvaultError, WalvaultError } from '../errors';
import { OBJECT_NOT_IN_PREREQUISITE_STATE, sqlStateOf } from '../postgres/connect-errors';
import type { ReplicationConnection, ServerFacts, SystemIdentity } from '../postgres/replication-connection';
import { serverVersionText } from '../postgres/server-version';
import { parseLsn } from '../wal/lsn';
import { parseTimelineHistory, type TimelineHistoryEntry } from '../wal/timeline-history';
import { backupPrefix, chainOf, listBackups, readCompleted, UPLOAD_MANIFEST_FILE, type BackupMetadata } from './catalog';

export interface IncrementalBase {
  parent: BackupMetadata;
  /** The parent's manifest as the server is to receive it. */
  uploadManifest: Buffer;
  /** The new backup's chain: its full backup first, its parent last. */
  chain: string[];
}

const TAKE_FULL = 'take a full backup (walvault backup push without --incremental)';

function impossible(what: string, fix?: string): WalvaultError {
  return new WalvaultError('BACKUP_INCREMENTAL_IMPOSSIBLE', what, fix === undefined ? {} : { fix });
}

/**
 * Whether a backup that stopped at `stopLsn` on `stopTli` lies on the history of the server's
 * timeline `currentTli` (given that timeline's history entries): its timeline is the current
 * one, or an ancestor the server left only after that position.
 */
function onTimelineHistory(stopTli: number, stopLsn: bigint, currentTli: number, history: TimelineHistoryEntry[]): boolean {
  if (stopTli === currentTli) return true;
  const entry = history.find((e) => e.tli === stopTli);
  return entry !== undefined && stopLsn <= entry.switchpoint;
}

export async function prepareIncremental(
  archive: Archive,
  conn: ReplicationConnection,
  identity: SystemIdentity,
  facts: ServerFacts,
  parentName: string | undefined,
): Promise<IncrementalBase> {
  if (facts.major < 17) {
    throw impossible(`incremental backups need PostgreSQL 17 or later; the server is PostgreSQL ${serverVersionText(facts.versionNum)}`, TAKE_FULL);
  }
  const summarize = await conn.show('summarize_wal');
  if (summarize !== 'on') {
    throw impossible(
      'incremental backups need the server to summarize WAL, and summarize_wal is off',
      'run "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();" on the server, then take a full backup ' +
        "(summaries begin when it is turned on, and an incremental needs them from its parent's start)",
    );
  }
  const history = identity.timeline > 1 ? parseTimelineHistory((await conn.timelineHistory(identity.timeline)).content.toString('utf8')) : [];
  const onHistory = (b: BackupMetadata): boolean => onTimelineHistory(b.stopTimeline, parseLsn(b.stopLsn), identity.timeline, history);

  let parent: BackupMetadata;
  if (parentName !== undefined) {
    try {
      parent = await readCompleted(archive, parentName);
    } catch (err) {
      if (isWalvaultError(err, 'BACKUP_NOT_FOUND')) throw impossible(`parent backup: ${err.message}`);
      throw err;
    }
    if (!onHistory(parent)) {
      throw impossible(
        `parent backup ${parent.name} (timeline ${parent.stopTimeline}, stopped at ${parent.stopLsn}) is not on the history of the server's timeline ${identity.timeline}`, `choose a backup taken on it (walvault backup list) or ${TAKE_FULL}`,
      );
    }
  } else {
    const all = await listBackups(archive);
    const candidates = all.filter(onHistory);
    if (candidates.length === 0) {
      throw impossible(
        all.length === 0
          ? `no complete backup in ${archive.storage.description} to take an incremental against; ${TAKE_FULL} first`
          : `no complete backup is on the history of the server's timeline ${identity.timeline}; ${TAKE_FULL}`,
      );
    }
    parent = candidates[candidates.length - 1];
  }
  if (parent.systemId !== identity.systemId) {
    throw impossible(`parent backup ${parent.name} is of database system ${parent.systemId}, but the server is ${identity.systemId}`, TAKE_FULL);
  }
  if (Math.floor(parent.pgVersionNum / 10000) !== facts.major) {
    throw impossible(
      `parent backup ${parent.name} was taken from PostgreSQL ${serverVersionText(parent.pgVersionNum)} and the server is ${serverVersionText(facts.versionNum)}; an incremental needs a parent of the same major version`, TAKE_FULL,
    );
  }
  const uploadManifest = await archive.asPlain().get(backupPrefix(parent.name) + UPLOAD_MANIFEST_FILE);
  if (!uploadManifest) {
    throw impossible(`parent backup ${parent.name} has no ${UPLOAD_MANIFEST_FILE} (it was taken by an older walvault)`, TAKE_FULL);
  }
  return { parent, uploadManifest, chain: chainOf(parent) };
}

/**
 * The server's refusal of an incremental backup as the one-line error that names the way on;
 * other errors pass unchanged. Decided by where and how the server refused, not by its words:
 * any server error answering UPLOAD_MANIFEST (a manifest it cannot use), and a BASE_BACKUP
 * refused before it began with SQLSTATE 55000, which every check of PostgreSQL's
 * PrepareForIncrementalBackup raises (WAL summaries missing, incomplete or not progressing; the
 * manifest's WAL not on this server's timelines). A refusal with another SQLSTATE (a
 * compression the server cannot do) is left to the caller, which asks again another way.
 */
export function incrementalRefusal(err: unknown, parent: string, stage: 'manifest' | 'backup'): unknown {
  if (!isWalvaultError(err)) return err;
  const refused = stage === 'manifest' ? err.code === 'PG_SERVER_ERROR' : err.code === 'PG_BACKUP_REFUSED' && sqlStateOf(err) === OBJECT_NOT_IN_PREREQUISITE_STATE;
  if (!refused) return err;
  return new WalvaultError('BACKUP_INCREMENTAL_IMPOSSIBLE', `the server cannot take an incremental backup against ${parent}: ${err.message}`, { fix: TAKE_FULL, cause: err });
}
