/**
 * `walvault check --repair`: streams missing WAL ranges again from the site's server, which
 * may still hold them in pg_wal, and archives them. Each range is asked for with
 * START_REPLICATION PHYSICAL at its first segment on its own timeline (no slot: nothing is
 * held on the server by a repair); each segment is assembled whole, its page headers checked
 * against the server (system identifier, sizes, timeline), and stored as an immutable object
 * with the same envelope and rules as the receiver's (an object already there with other
 * bytes is refused, never replaced). A range the server no longer has is reported; with
 * `backupIfNeeded` a new base backup is taken so that a restorable chain exists again.
 */
import type { Logger } from 'pino';
import { Archive } from '../archive/archive';
import { openSiteArchive } from '../archive/site-archive';
import { adoptSettings } from '../archive/archive-settings';
import type { SiteConfig } from '../config/config-types';
import { isWalvaultError, WalvaultError } from '../errors';
import { connectSite } from '../postgres/site-connection';
import { formatLsn, parseSegmentFileName, segmentFileName, segmentStartOfNumber, type Lsn } from '../wal/lsn';
import { checkWalIdentity, type WalClusterIdentity } from '../wal/wal-identity';
import type { MissingRange } from '../wal/wal-chain';

export interface RepairResult {
  rearchived: string[];
  unavailable: Array<{ range: MissingRange; reason: string }>;
  backupTaken: string | null;
}

export async function repairArchive(o: { site: SiteConfig; missing: MissingRange[]; backupIfNeeded: boolean; log: Logger }): Promise<RepairResult> {
  const result: RepairResult = { rearchived: [], unavailable: [], backupTaken: null };
  if (o.missing.length === 0) return result;
  const archive = openSiteArchive(o.site, 'write');
  try {
    const cluster = await archive.readCluster();
    if (!cluster) throw new WalvaultError('ARCHIVE_NOT_FOUND', `${archive.storage.description} has no cluster.json`, { fix: `nothing to repair` });
    await adoptSettings(archive, cluster, o.log, o.site.state);
    for (const range of o.missing) {
      try {
        result.rearchived.push(...(await streamRange(o.site, archive, cluster, range, o.log)));
      } catch (err) {
        if (!isWalvaultError(err) || (err.code !== 'PG_WAL_REMOVED' && err.code !== 'PG_SERVER_ERROR')) throw err;
        result.unavailable.push({ range, reason: err.message });
      }
    }
  } finally {
    await archive.close();
  }
  if (result.unavailable.length > 0 && o.backupIfNeeded) {
    const { takeBackup } = await import('../backup/take-backup');
    const meta = await takeBackup({ site: o.site, log: o.log, fastCheckpoint: true, walWaitSeconds: 3600 });
    result.backupTaken = meta.name;
  }
  return result;
}

/** Streams the segments of `range` from the server and archives each; returns their names. */
async function streamRange(site: SiteConfig, archive: Archive, cluster: WalClusterIdentity, range: MissingRange, log: Logger): Promise<string[]> {
  const systemId = cluster.systemId;
  const conn = await connectSite(site, 'repair');
  try {
    const identity = await conn.identifySystem();
    if (identity.systemId !== systemId) {
      throw new WalvaultError('ARCHIVE_OTHER_CLUSTER', `the server ${site.pgDescription} is database system ${identity.systemId}, but the archive belongs to ${systemId}`, { fix: `repair only from the archive's own cluster` });
    }
    const facts = await conn.serverFacts();
    const segSize = facts.walSegmentSize;
    const first = parseSegmentFileName(range.first, segSize).segNo;
    const last = parseSegmentFileName(range.last, segSize).segNo;
    const start = segmentStartOfNumber(first, segSize);
    const stopAt = segmentStartOfNumber(last + 1n, segSize);
    const stored: string[] = [];
    let segNo = first;
    let buf = Buffer.alloc(segSize);
    let fill = 0;
    let received: Lsn = start;
    // The end of the segments stored so far: the only position reported as flushed (the
    // connection has no slot, but a flush position is a promise all the same).
    let archivedTo: Lsn = start;
    let storing: Promise<void> = Promise.resolve();
    let failure: unknown = null;
    const positions = () => ({ write: received, flush: archivedTo, apply: 0n });
    const session = conn.startReplication(
      { start, timeline: range.tli },
      {
        onXLogData: (_h, payload) => {
          let at = 0;
          while (at < payload.length && segNo <= last) {
            const n = Math.min(payload.length - at, segSize - fill);
            payload.copy(buf, fill, at, at + n);
            fill += n;
            at += n;
            received += BigInt(n);
            if (fill < segSize) continue;
            const data = buf;
            const name = segmentFileName(range.tli, segNo, segSize);
            buf = Buffer.alloc(segSize);
            fill = 0;
            segNo++;
            // One segment stored at a time: the socket waits meanwhile.
            session.pause();
            storing = storing.then(async () => {
              const label = `${name} from ${site.pgDescription}`;
              checkWalIdentity(name, data, cluster, label);
              const r = await archive.putImmutable(Archive.walKey(name), data);
              log.info({ segment: name, result: r }, 'missing segment archived again from the server');
              stored.push(name);
              archivedTo = segmentStartOfNumber(parseSegmentFileName(name, segSize).segNo + 1n, segSize);
              if (received >= stopAt) session.stop(positions());
              // Reading goes on either way: after our CopyDone the server's end must be read.
              session.resume();
            });
            storing.catch((err) => {
              failure = err;
              session.stop();
              session.resume();
            });
          }
        },
        onKeepalive: (k) => {
          if (k.replyRequested) session.sendStatus(positions(), false);
        },
        finalPositions: positions,
      },
    );
    const end = await session.done;
    await storing.catch(() => undefined);
    if (failure) throw failure;
    if (segNo <= last) {
      throw new WalvaultError('PG_SERVER_ERROR', `the server ended the stream (${end.kind}) at ${formatLsn(received)}, before the end of ${range.last}`);
    }
    return stored;
  } finally {
    await conn.close();
  }
}
