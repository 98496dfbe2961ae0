/**
 * One base backup of a site: BASE_BACKUP over a walsender connection, each tar stream cut
 * into parts stored (hash, compress, encrypt, put, verify) several at once, the server's
 * manifest and the metadata stored, then - once the archive holds the WAL from the start to
 * the stop LSN - the completion marker, written last. Nothing touches local disk.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { claimArchive } from '../archive/archive-settings';
import { openSiteArchive } from '../archive/site-archive';
import type { SiteConfig } from '../config/config-types';
import { ArchiveLease, BACKUP_LEASE, LEASE_HEARTBEAT_MS, LEASE_TTL_MS, type BackupProgress } from '../archive/archive-lease';
import { errorMessage, isWalvaultError, WalvaultError } from '../errors';
import { Progress } from '../observe/progress';
import { ReplicationConnection } from '../postgres/replication-connection';
import { connectSite } from '../postgres/site-connection';
import { formatLsn } from '../wal/lsn';
import {
  backupPrefix,
  freshBackupName,
  indexKey,
  MANIFEST_FILE,
  UPLOAD_MANIFEST_FILE,
  storeCompletion,
  storeMetadata,
  type BackupArchive,
  type BackupMetadata,
  type RecordedObject,
} from './catalog';
import { incrementalRefusal, prepareIncremental, type IncrementalBase } from './incremental-parent';
import { streamIntoParts, type Streamed } from './stream-into-parts';
import { uploadManifestOf } from './upload-manifest-text';
import { uploadManifest } from '../postgres/upload-manifest';
import { waitForWal } from './wal-coverage';
import { CheckpointWait } from './checkpoint-wait';
import { waitWhileBackupRuns } from './running-backup';

/** Parts hashing, compressing and uploading at once: enough to keep every core's worker busy while the next part fills. */
const PARTS_IN_FLIGHT = 4;

export interface TakeBackupOptions {
  site: SiteConfig;
  log: Logger;
  fastCheckpoint: boolean;
  maxRateKiB?: number;
  label?: string;
  partSize?: number;
  /** How long to wait for the receiver to archive the backup's WAL before giving up. */
  walWaitSeconds: number;
  /** Poll interval of that wait. */
  walPollMs?: number;
  progressOut?: NodeJS.WriteStream;
  /** Aborts the backup (the daemon stopping): the connection is dropped, nothing is listed. */
  signal?: AbortSignal;
  /**
   * PostgreSQL 17+: only what changed since a parent backup (`parent`: by name, else the
   * newest complete one on the server's timeline history). A precondition that does not hold
   * is a BACKUP_INCREMENTAL_IMPOSSIBLE error, before anything is written.
   */
  incremental?: { parent?: string };
  /**
   * Another backup of the archive running: wait for it to end, then take this one (the
   * default of `backup push`), instead of failing at once with ARCHIVE_LOCKED.
   */
  waitForRunning?: boolean;
  /** How often that wait looks at the lease again. */
  waitPollMs?: number;
}

function checkManifest(manifest: Buffer, systemId: string): void {
  let parsed: { 'PostgreSQL-Backup-Manifest-Version'?: number; Files?: unknown[]; 'System-Identifier'?: unknown };
  try {
    parsed = JSON.parse(manifest.toString('utf8'));
  } catch (err) {
    throw new WalvaultError('PG_PROTOCOL', `the server's backup manifest is not valid JSON: ${(err as Error).message}`);
  }
  if (!parsed['PostgreSQL-Backup-Manifest-Version'] || !Array.isArray(parsed.Files)) {
    throw new WalvaultError('PG_PROTOCOL', 'the server sent a backup manifest without a version or a file list');
  }
  // Version 2 (PostgreSQL 17+) names the system; a bare JSON number loses precision past
  // 2^53, so compare the text.
  const sid = /"System-Identifier":\s*([0-9]+)/.exec(manifest.toString('utf8'));
  if (sid && sid[1] !== systemId) {
    throw new WalvaultError('PG_PROTOCOL', `the backup manifest names database system ${sid[1]}, but the server identified as ${systemId}`);
  }
}

export async function takeBackup(o: TakeBackupOptions): Promise<BackupMetadata> {
  const { site, log } = o;
  const archive = openSiteArchive(site, 'write');
  let conn: ReplicationConnection | null = null;
  let lease: ArchiveLease | null = null;
  let leaseTimer: NodeJS.Timeout | null = null;
  let leaseLost: unknown = null;
  let checkpointWait: CheckpointWait | null = null;
  /** The last heartbeat's write: awaited before the release, which it must not outlive. */
  let beating: Promise<void> = Promise.resolve();
  const checkLease = (): void => {
    if (leaseLost) throw leaseLost;
    if (o.signal?.aborted) throw new WalvaultError('BACKUP_ABORTED', 'the base backup was abandoned because walvault is stopping', { fix: 'nothing was listed' });
  };
  const onAbort = (): void => {
    void conn?.close();
  };
  o.signal?.addEventListener('abort', onAbort);
  const waitTurn = async (): Promise<void> => {
    await waitWhileBackupRuns(archive, log, { signal: o.signal, pollMs: o.waitPollMs });
    checkLease();
  };
  try {
    // Waiting holds no walsender: the server's max_wal_senders is not spent on a queue.
    if (o.waitForRunning) await waitTurn();
    conn = await connectSite(site, 'backup');
    const identity = await conn.identifySystem();
    const facts = await conn.serverFacts();
    // An incremental's preconditions only read: a refusal leaves even a new archive untouched.
    const base: IncrementalBase | null = o.incremental ? await prepareIncremental(archive, conn, identity, facts, o.incremental.parent) : null;
    // Refuses another cluster's archive before anything is written.
    // Also settles the codec and key: the archive's, where the command named none.
    await claimArchive(archive, { systemId: identity.systemId, pgVersionNum: facts.versionNum, walSegmentSize: facts.walSegmentSize }, log, site.state);

    // One backup at a time per archive; the lease also tells retention this backup's
    // objects are not leftovers. Held until the completion marker is written.
    let startedAt: Date;
    let name: string;
    for (;;) {
      startedAt = new Date();
      name = await freshBackupName(archive, startedAt);
      lease = new ArchiveLease(archive.storage, site.name, site.state, LEASE_TTL_MS, BACKUP_LEASE, name);
      try {
        await lease.acquire();
        break;
      } catch (err) {
        // Another push that waited with us took its turn first.
        if (!o.waitForRunning || !isWalvaultError(err, 'ARCHIVE_LOCKED')) throw err;
        lease = null;
        await waitTurn();
      }
    }
    const heldLease = lease;
    const blog = log.child({ backup: name });
    const progress = new Progress({ what: `backup ${name}`, log: blog, out: o.progressOut });
    let phase: BackupProgress['phase'] = 'checkpoint';
    // Each heartbeat carries the phase and progress, for a push or a check that waits on it.
    const beat = (): void => {
      heldLease.report({ phase, ...progress.snapshot() });
      beating = heldLease.heartbeat().catch((err) => {
        leaseLost = err;
        log.error({ err: errorMessage(err) }, 'lost the backup lease: abandoning the backup');
      });
    };
    const enter = (next: BackupProgress['phase']): void => {
      phase = next;
      beat();
    };
    leaseTimer = setInterval(beat, LEASE_HEARTBEAT_MS);
    leaseTimer.unref();
    const prefix = backupPrefix(name);
    const label = o.label ?? `walvault ${name}`;
    blog.info(
      { server: site.pgDescription, fastCheckpoint: o.fastCheckpoint, ...(base ? { incremental: true, parent: base.parent.name } : {}) },
      base ? `incremental backup against ${base.parent.name} starting (checkpoint first)` : 'base backup starting (checkpoint first)',
    );

    // The site's zstd runs on the database server when it can (15+): the bytes cross the
    // network compressed and the parts are stored as they come.
    const wantServer = site.backupCompression === 'server' && archive.codec === 'zstd' && facts.major >= 15;
    const server = conn;
    checkpointWait = await CheckpointWait.start((setting) => server.show(setting).catch(() => null), o.fastCheckpoint, blog);
    const streamOnce = async (serverCompressed: boolean, serverWorkers: number): Promise<Streamed> => {
      if (!base) return streamAttempt(serverCompressed, serverWorkers);
      try {
        // The server forgets nothing between attempts on one connection, but a fresh upload
        // before each leaves no doubt which manifest the attempt is taken against.
        await uploadManifest(conn!, base.uploadManifest);
      } catch (err) {
        throw incrementalRefusal(err, base.parent.name, 'manifest');
      }
      try {
        return await streamAttempt(serverCompressed, serverWorkers);
      } catch (err) {
        throw incrementalRefusal(err, base.parent.name, 'backup');
      }
    };
    const streamAttempt = (serverCompressed: boolean, serverWorkers: number) =>
      streamIntoParts(conn!, facts.major, {
        archive,
        prefix,
        label,
        options: o,
        inFlight: Math.max(PARTS_IN_FLIGHT, site.uploadConcurrency),
        serverCompressed,
        serverWorkers,
        incremental: base !== null,
        progress,
        log: blog,
        checkLease,
        onStart: () => {
          checkpointWait?.end();
          enter('streaming');
        },
      });
    // What the server cannot do it says before sending anything (a libzstd without threads,
    // a build without zstd): a refusal before the backup began steps down to fewer workers,
    // then to compressing here. A refusal with another cause refuses the last attempt too,
    // which then reports it.
    const attempts: Array<[boolean, number]> = wantServer
      ? [[true, site.backupCompressionWorkers], ...(site.backupCompressionWorkers > 0 ? [[true, 0] as [boolean, number]] : []), [false, 0]]
      : [[false, 0]];
    let streamed: Streamed | null = null;
    for (const [i, [serverCompressed, workers]] of attempts.entries()) {
      try {
        streamed = await streamOnce(serverCompressed, workers);
        break;
      } catch (err) {
        const last = i === attempts.length - 1;
        if (last || !isWalvaultError(err, 'PG_BACKUP_REFUSED')) throw err;
        const next = attempts[i + 1];
        blog.warn(
          { err: errorMessage(err) },
          next[0] ? `the server cannot compress with ${workers} workers; asking for ${next[1]}` : 'the server cannot compress this backup; walvault compresses it instead',
        );
      }
    }
    if (!streamed) throw new WalvaultError('INTERNAL', 'no backup attempt ran');
    checkpointWait.end();
    const { result, parts, archives, manifestChunks, label: bl, indexes } = streamed;
    const stoppedAt = new Date();
    const manifest = Buffer.concat(manifestChunks);
    checkManifest(manifest, identity.systemId);
    await archive.putImmutable(prefix + MANIFEST_FILE, manifest);
    const manifestInfo = await archive.storage.head(prefix + MANIFEST_FILE);
    // What a later incremental uploads: kept readable with the public key alone.
    if (facts.major >= 17) await archive.asPlain().putImmutable(prefix + UPLOAD_MANIFEST_FILE, uploadManifestOf(manifest, `the manifest of backup ${name}`));

    // Stored like the manifest, bound to its key, with the site's codec and key.
    const indexed = new Map<string, RecordedObject>();
    for (const [archiveName, plaintext] of indexes) {
      const key = indexKey(name, archiveName);
      await archive.putImmutable(key, plaintext);
      indexed.set(archiveName, { key, size: plaintext.length, sha256: createHash('sha256').update(plaintext).digest('hex') });
    }

    const stored: BackupArchive[] = archives.map((a) => {
      const list = parts.get(a.name) ?? [];
      const index = indexed.get(a.name);
      return {
        name: a.name,
        tablespaceOid: a.row.oid,
        location: a.row.location,
        compression: a.compression,
        rawBytes: a.rawBytes,
        storedBytes: list.reduce((s, p) => s + p.storedSize, 0),
        parts: list,
        ...(index ? { index } : {}),
      };
    });
    const meta: BackupMetadata = {
      format: 1,
      name,
      label,
      systemId: identity.systemId,
      pgVersionNum: facts.versionNum,
      walSegmentSize: facts.walSegmentSize,
      startLsn: formatLsn(result.start.lsn),
      startTimeline: result.start.tli,
      checkpointLsn: formatLsn(bl.checkpointLsn),
      stopLsn: formatLsn(result.stop.lsn),
      stopTimeline: result.stop.tli,
      startedAt: startedAt.toISOString(),
      stoppedAt: stoppedAt.toISOString(),
      serverStartTime: bl.startTime,
      backupFrom: bl.backupFrom,
      rawBytes: stored.reduce((s, a) => s + a.rawBytes, 0),
      storedBytes: stored.reduce((s, a) => s + a.storedBytes, 0) + (manifestInfo?.size ?? 0),
      archives: stored,
      manifest: { key: prefix + MANIFEST_FILE, size: manifest.length, sha256: createHash('sha256').update(manifest).digest('hex') },
      kind: base ? 'incremental' : 'full',
      ...(facts.major >= 17 ? { blockSize: Number(await conn.show('block_size')) } : {}),
      ...(base ? { parent: base.parent.name, chain: base.chain } : {}),
    };
    const metadataSha = await storeMetadata(archive, meta);
    await conn.close();
    conn = null;
    blog.info({ start: meta.startLsn, stop: meta.stopLsn, rawBytes: meta.rawBytes, storedBytes: meta.storedBytes }, 'base backup stored; waiting for its WAL to be archived');
    enter('waiting for WAL');

    await waitForWal(archive, meta, o, blog, checkLease);
    checkLease();
    await storeCompletion(archive, meta, metadataSha);
    blog.info({ start: meta.startLsn, stop: meta.stopLsn }, 'base backup complete');
    return meta;
  } finally {
    checkpointWait?.end();
    o.signal?.removeEventListener('abort', onAbort);
    if (leaseTimer) clearInterval(leaseTimer);
    await beating;
    await conn?.close();
    await lease?.release().catch((err) => log.warn({ err: errorMessage(err) }, 'could not release the backup lease; it expires by itself'));
    await archive.close();
  }
}
