/**
 * The steps of following timelines that need no receiver state of their own: which timeline
 * holds a position, archiving a timeline's history file, closing an ended timeline's last
 * segment as a permanent .partial, and naming the gap when the server removed WAL.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { Archive } from '../archive/archive';
import { fileSource } from '../archive/body-source';
import type { SiteConfig } from '../config/config-types';
import { errorMessage, isWalvaultError, WalvaultError } from '../errors';
import type { Ledger } from '../ledger/ledger';
import type { ReplicationConnection } from '../postgres/replication-connection';
import { retrying } from '../util/retry';
import { formatLsn, historyFileName, segmentFileName, segmentNumber, type Lsn } from '../wal/lsn';
import type { SegmentSpool } from '../wal/segment-spool';
import { parseTimelineHistory, timelineOfLsn } from '../wal/timeline-history';
import type { StateWrites } from './state-writes';
import type { SiteUploads } from './site-uploads';

/** Which timeline holds `lsn` on a server now on `serverTli` (its history decides for older timelines). */
export async function timelineFor(conn: ReplicationConnection, serverTli: number, lsn: Lsn, hint: number): Promise<number> {
  if (hint === serverTli) return hint;
  if (serverTli === 1) return 1;
  const { content } = await conn.timelineHistory(serverTli);
  return timelineOfLsn(parseTimelineHistory(content.toString('utf8')), serverTli, lsn);
}

/**
 * Fetches timeline `tli`'s history file from the server and archives it in every archive;
 * storage failures are retried until `signal` aborts (a restore needs the file to follow the
 * switch), a conflict (other bytes under its name) is not.
 */
export async function archiveHistory(
  tli: number,
  o: { conn: ReplicationConnection; archives: readonly Archive[]; ledger: Ledger | null; writes: StateWrites; site: SiteConfig; log: Logger; signal: AbortSignal },
): Promise<void> {
  const { fileName, content } = await o.conn.timelineHistory(tli);
  if (fileName !== historyFileName(tli)) {
    throw new WalvaultError('PG_PROTOCOL', `TIMELINE_HISTORY ${tli} returned file ${fileName}`);
  }
  for (const archive of o.archives) {
    const stored = await retrying(() => archive.putImmutable(Archive.walKey(fileName), content), {
      signal: o.signal,
      failed: (err) => {
        if (isWalvaultError(err, 'ARCHIVE_CONFLICT') || o.signal.aborted) throw err;
        const where = o.archives.length > 1 ? ` to ${archive.storage.description}` : '';
        o.log.error({ file: fileName, err: errorMessage(err) }, `archiving a timeline history file${where} failed; retrying`);
        return 'retry';
      },
    });
    if (!stored.ok) throw stored.lastError;
  }
  const ledger = o.ledger;
  // Not recorded (a full disk): archived again next time, the same bytes, a no-op.
  if (ledger) o.writes.may(`recording ${fileName}`, () => ledger.recordHistory(o.site.name, tli, fileName, createHash('sha256').update(content).digest('hex')));
  o.log.info({ file: fileName }, 'archived timeline history file');
}

/** Closes the ended timeline's last segment as a permanent .partial in the archive. */
export async function finishTimeline(spool: SegmentSpool, uploader: SiteUploads): Promise<void> {
  const sha256 = spool.openDigest() ?? undefined;
  const open = await spool.closeOpen();
  if (!open || open.received === 0) return;
  await uploader.uploadPartial(open, fileSource(spool.partialPath(open.name), open.received, spool.headerRoom), { final: true, sha256 });
  await fs.promises.rm(spool.partialPath(open.name), { force: true });
}

/** The ledger follows the next timeline from its start (once: a switch seen again is recorded already). */
export async function recordTimeline(ledger: Ledger, writes: StateWrites, site: string, next: { nextTli: number; nextTliStart: Lsn }): Promise<void> {
  if (next.nextTli <= ledger.getSite(site)!.timeline) return;
  await writes.must(`recording timeline ${next.nextTli} in the ledger`, () => ledger.switchTimeline(site, next.nextTli, next.nextTliStart));
}

/**
 * The server's words for missing WAL do not always say where (PostgreSQL 16+ names only the
 * invalidated slot): the operator needs the position the archive stops at.
 */
export function namingTheGap(err: unknown, site: SiteConfig, tli: number, start: Lsn, segSize: number): unknown {
  if (!isWalvaultError(err) || err.code !== 'PG_WAL_REMOVED') return err;
  const segment = segmentFileName(tli, segmentNumber(start, segSize), segSize);
  // Nothing can fill this gap, and this archive cannot go on past it (its end is where
  // streaming resumes): the way on is a new archive with a new backup, the old one kept.
  const slot = site.slot;
  return new WalvaultError(
    'PG_WAL_REMOVED',
    `cannot continue at ${formatLsn(start)} on timeline ${tli} (segment ${segment}): ${err.message}`,
    {
      fix:
        `the archive has a gap from there and its backups restore only up to it. To archive again: drop the slot if the server invalidated it ` +
        `(SELECT pg_drop_replication_slot('${slot}')), give site "${site.name}" a new archive location and a new state directory, ` +
        `restart walvault and take a new base backup (walvault backup push); keep the old archive for restores up to the gap ` +
        `(docs/postgresql-setup.md, "When the server removed WAL the archive needs"). ` +
        `To avoid this, raise max_slot_wal_keep_size or keep the receiver running so the slot holds WAL`,
      cause: err,
    },
  );
}

/**
 * The server ended timeline `tli` and names the next one and where it starts: it must be a
 * later timeline, branching at or before what this receiver has (a switch point past it would
 * leave a hole). Logs the switch.
 */
export function checkTimelineSwitch(tli: number, next: { nextTli: number; nextTliStart: Lsn }, have: Lsn, log: Logger): void {
  if (next.nextTli <= tli || next.nextTliStart > have) {
    throw new WalvaultError(
      'PG_PROTOCOL',
      `server ended timeline ${tli} with next timeline ${next.nextTli} at ${formatLsn(next.nextTliStart)}, which does not follow what was received (${formatLsn(have)})`,
    );
  }
  log.info({ from: tli, to: next.nextTli, switchpoint: formatLsn(next.nextTliStart) }, `timeline ${tli} ended; following timeline ${next.nextTli}`);
}
