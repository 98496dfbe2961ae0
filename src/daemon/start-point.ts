/**
 * Where a receiver with no state of its own starts streaming, and the slot that keeps the
 * server's WAL from there. In order of preference: after the newest segment the archive holds
 * (a new state directory for an existing archive continues it without a gap or a duplicate),
 * else the slot's restart point (the server kept WAL from there for us), else the server's
 * current position. Always from a segment's start: the spool holds whole segments.
 */
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { ArchiveLease } from '../archive/archive-lease';
import type { ClusterInfo } from '../archive/cluster-marker';
import type { SiteConfig } from '../config/config-types';
import { WalvaultError } from '../errors';
import type { ReplicationConnection, SystemIdentity } from '../postgres/replication-connection';
import { isSegmentFileName, parseSegmentFileName, segmentStart, segmentStartOfNumber, type Lsn } from '../wal/lsn';
import type { ResumePoint } from './resume';

export interface SlotRestart {
  lsn: Lsn;
  tli: number | null;
}

/** Creates the slot when the site asks for it, checks that it exists, and reads its restart point. */
export async function prepareSlot(conn: ReplicationConnection, site: SiteConfig, major: number, log: Logger): Promise<{ created: boolean; restart: SlotRestart | null }> {
  let created = false;
  if (site.createSlot) {
    created = await conn.createPhysicalSlot(site.slot, major);
    if (created) log.info({ slot: site.slot }, 'created physical replication slot');
  }
  const slot = await conn.readSlot(site.slot, major);
  if (slot && !slot.exists) {
    throw new WalvaultError('CONFIG_INVALID', `replication slot "${site.slot}" does not exist on ${site.pgDescription}`, { fix: `create it, or set create_slot = true` });
  }
  // Said here, by the slot's type: START_REPLICATION would refuse it with the SQLSTATE an
  // invalidated slot has (55000), which the receiver reads as WAL the server no longer has.
  if (slot?.type === 'logical') {
    throw new WalvaultError('CONFIG_INVALID', `replication slot "${site.slot}" on ${site.pgDescription} is a logical slot; walvault streams WAL through a physical one`, {
      fix: `give this site a slot name of its own (slot = "walvault_${site.name}")`,
    });
  }
  return { created, restart: slot?.restartLsn ? { lsn: slot.restartLsn, tli: slot.restartTli } : null };
}

/** `archives`: those of the site that have a cluster marker (hold this cluster's history). */
export async function chooseStart(o: { archives: readonly Archive[]; slot: SlotRestart | null; identity: SystemIdentity; segSize: number }): Promise<ResumePoint> {
  let fromArchive: ResumePoint | null = null;
  // After the newest WAL any archive holds: an archive behind the others is filled with
  // walvault copy, not by streaming again what another holds.
  for (const archive of o.archives) fromArchive = later(fromArchive, await resumeFromArchive(archive, o.segSize));
  if (fromArchive) return fromArchive;
  if (o.slot) return { lsn: segmentStart(o.slot.lsn, o.segSize), tli: o.slot.tli ?? 0 };
  return { lsn: segmentStart(o.identity.xlogPos, o.segSize), tli: o.identity.timeline };
}

/** After the archive's newest segment (the higher timeline on a tie). */
async function resumeFromArchive(archive: Archive, segSize: number): Promise<ResumePoint | null> {
  let best: ResumePoint | null = null;
  for (const name of await archive.listWal()) {
    if (!isSegmentFileName(name)) continue;
    const { tli, segNo } = parseSegmentFileName(name, segSize);
    best = later(best, { lsn: segmentStartOfNumber(segNo + 1n, segSize), tli });
  }
  return best;
}

function later(a: ResumePoint | null, b: ResumePoint | null): ResumePoint | null {
  if (!a || !b) return a ?? b;
  return b.lsn > a.lsn || (b.lsn === a.lsn && b.tli > a.tli) ? b : a;
}

/**
 * Every archive of the site, before anything is created on the server: one of another
 * database system is refused, and so is one another receiver holds. Returns those that hold
 * a cluster marker (this cluster's history), for chooseStart.
 */
export async function checkSiteArchives(archives: readonly Archive[], identity: SystemIdentity, site: SiteConfig): Promise<Archive[]> {
  const withCluster: Archive[] = [];
  for (const archive of archives) {
    const cluster = await archive.readCluster();
    refuseOtherCluster(cluster, identity, archive, site);
    if (cluster) withCluster.push(archive);
  }
  for (const archive of archives) await new ArchiveLease(archive.storage, site.name, site.state).check();
  return withCluster;
}

/** An archive of another database system is refused before anything is created on the server. */
export function refuseOtherCluster(cluster: ClusterInfo | null, identity: SystemIdentity, archive: Archive, site: SiteConfig): void {
  if (cluster && cluster.systemId !== identity.systemId) {
    throw new WalvaultError(
      'ARCHIVE_OTHER_CLUSTER',
      `archive ${archive.storage.description} belongs to database system ${cluster.systemId}, but the server at ${site.pgDescription} is ${identity.systemId}`, { fix: `use a separate archive for each cluster` },
    );
  }
}
