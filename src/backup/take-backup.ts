/**
 * One base backup of a site: BASE_BACKUP over a walsender connection, each tar stream cut
 * into parts stored (hash, compress, encrypt, put, verify) several at once, the server's
 * manifest and the metadata stored, then - once the archive holds the WAL from the start to
 * the stop LSN - the completion marker, written last. Nothing touches local disk.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { claimArchive } from '../archive/archive-settings';
import { openSiteArchive } from '../archive/site-archive';
import type { SiteConfig } from '../config/config-types';
import { ArchiveLease, BACKUP_LEASE, LEASE_HEARTBEAT_MS, LEASE_TTL_MS, type BackupProgress } from '../archive/archive-lease';
import { errorMessage, isWalvaultError, WalvaultError } from '../errors';
import { Progress } from '../observe/progress';
import { runBaseBackup, type BaseBackupResult, type TablespaceRow } from '../postgres/base-backup-stream';
import { ReplicationConnection } from '../postgres/replication-connection';
import { connectSite } from '../postgres/site-connection';
import { sleep } from '../util/timers';
import { formatLsn, parseLsn } from '../wal/lsn';
import { ZSTD_LEVEL } from '../archive/codecs';
import { BackupLabelSniffer, type BackupLabel } from './backup-label';
import {
  backupNameFor,
  backupPrefix,
  MANIFEST_FILE,
  UPLOAD_MANIFEST_FILE,
  storeCompletion,
  storeMetadata,
  type BackupArchive,
  type BackupMetadata,
} from './catalog';
import { incrementalRefusal, prepareIncremental, type IncrementalBase } from './incremental-parent';
import { PartUploader, type StoredPart } from './part-uploader';
import { uploadManifestOf } from './upload-manifest-text';
import { uploadManifest } from '../postgres/upload-manifest';
import { WalCoverage } from './wal-coverage';
import { CheckpointWait } from './checkpoint-wait';
import { waitWhileBackupRuns } from './running-backup';

export const DEFAULT_PART_SIZE = 4 * 1024 * 1024;
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

/** Picks a name no object in the archive uses yet. */
async function freshName(archive: Archive, at: Date): Promise<string> {
  const base = backupNameFor(at);
  for (let n = 1; n < 100; n++) {
    const name = n === 1 ? base : `${base}-${n}`;
    if ((await archive.storage.list(backupPrefix(name))).length === 0) return name;
  }
  throw new WalvaultError('BACKUP_CONFLICT', `backup names ${base} to ${base}-99 are all taken in ${archive.storage.description}`);
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
    if (o.signal?.aborted) throw new WalvaultError('BACKUP_ABORTED', 'the base backup was abandoned because walvault is stopping; nothing was listed');
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
      name = await freshName(archive, startedAt);
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
        return await streamAttempt(serverCompressed, serverWorkers);
      } catch (err) {
        throw incrementalRefusal(err, base.parent.name);
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
    // a build without zstd): step down to fewer workers, then to compressing here.
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
        if (last || !(isWalvaultError(err) && err.code === 'PG_SERVER_ERROR' && /compression|zstd|worker/i.test(err.message))) throw err;
        const next = attempts[i + 1];
        blog.warn(
          { err: errorMessage(err) },
          next[0] ? `the server cannot compress with ${workers} workers; asking for ${next[1]}` : 'the server cannot compress this backup; walvault compresses it instead',
        );
      }
    }
    if (!streamed) throw new WalvaultError('INTERNAL', 'no backup attempt ran');
    checkpointWait.end();
    const { result, parts, archives, manifestChunks, label: bl } = streamed;
    const stoppedAt = new Date();
    const manifest = Buffer.concat(manifestChunks);
    checkManifest(manifest, identity.systemId);
    await archive.putImmutable(prefix + MANIFEST_FILE, manifest);
    const manifestInfo = await archive.storage.head(prefix + MANIFEST_FILE);
    // What a later incremental uploads: kept readable with the public key alone.
    if (facts.major >= 17) await archive.asPlain().putImmutable(prefix + UPLOAD_MANIFEST_FILE, uploadManifestOf(manifest, `the manifest of backup ${name}`));

    const stored: BackupArchive[] = archives.map((a) => {
      const list = parts.get(a.name) ?? [];
      return {
        name: a.name,
        tablespaceOid: a.row.oid,
        location: a.row.location,
        compression: a.compression,
        rawBytes: a.rawBytes,
        storedBytes: list.reduce((s, p) => s + p.storedSize, 0),
        parts: list,
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

/** Waits until the archive holds the backup's WAL, or gives up after `walWaitSeconds`. */
export async function waitForWal(
  archive: Archive,
  meta: BackupMetadata,
  o: { walWaitSeconds: number; walPollMs?: number; signal?: AbortSignal },
  log: Logger,
  stillOurs: () => void = () => undefined,
): Promise<void> {
  const coverage = new WalCoverage(archive, {
    startLsn: parseLsn(meta.startLsn),
    startTli: meta.startTimeline,
    stopLsn: parseLsn(meta.stopLsn),
    stopTli: meta.stopTimeline,
    segSize: meta.walSegmentSize,
  });
  const deadline = Date.now() + o.walWaitSeconds * 1000;
  let lastLog = 0;
  for (;;) {
    stillOurs();
    const state = await coverage.check();
    if (state.complete) return;
    if (Date.now() >= deadline) {
      throw new WalvaultError(
        'BACKUP_WAL_MISSING',
        `backup ${meta.name} is stored but not restorable yet: ${coverage.describe(state)}; is "walvault run" streaming this site? ` +
          `The backup will not be listed until that WAL is archived`,
      );
    }
    if (Date.now() - lastLog >= 30000) {
      lastLog = Date.now();
      log.info({ missing: state.missing }, coverage.describe(state));
    }
    await sleep(o.walPollMs ?? 250, o.signal);
  }
}


interface StreamArchive {
  name: string;
  row: TablespaceRow;
  compression: 'zstd' | null;
  /** Uncompressed tar bytes (for server-compressed archives: as the server counted them). */
  rawBytes: number;
}

interface Streamed {
  result: BaseBackupResult;
  parts: Map<string, StoredPart[]>;
  archives: StreamArchive[];
  manifestChunks: Buffer[];
  label: BackupLabel;
}

/**
 * One BASE_BACKUP into parts. With server compression the archives arrive as zstd streams:
 * they are stored as they are (no second compression), the backup_label is read from the
 * start of base.tar.zst through a decompressor, and raw sizes come from the server's
 * progress counter.
 */
async function streamIntoParts(
  conn: ReplicationConnection,
  major: number,
  o: {
    archive: Archive;
    prefix: string;
    label: string;
    options: TakeBackupOptions;
    inFlight: number;
    serverCompressed: boolean;
    /** zstd threads the server may use for this backup (0: the walsender's own thread). */
    serverWorkers: number;
    /** The parent's manifest was uploaded on this connection: ask for an incremental. */
    incremental: boolean;
    progress: Progress;
    log: Logger;
    checkLease: () => void;
    /** The server has checkpointed and begins to send. */
    onStart: () => void;
  },
): Promise<Streamed> {
  const uploader = new PartUploader({
    archive: o.archive,
    partSize: o.options.partSize ?? DEFAULT_PART_SIZE,
    inFlight: o.inFlight,
    ...(o.serverCompressed ? { codec: 'none' as const } : {}),
  });
  const sniffer = new BackupLabelSniffer();
  let labelStream: import('node:stream').Transform | null = null;
  let labelDone: Promise<void> = Promise.resolve();
  const archives: StreamArchive[] = [];
  const manifestChunks: Buffer[] = [];
  let current: StreamArchive | null = null;
  let lastProgress = 0;
  let progressAtStart = 0;
  const endArchive = (): void => {
    if (current && current.compression) current.rawBytes = lastProgress - progressAtStart;
    uploader.end();
  };
  let result: BaseBackupResult;
  try {
    result = await runBaseBackup(
      conn,
      major,
      {
        label: o.label,
        fastCheckpoint: o.options.fastCheckpoint,
        maxRateKiB: o.options.maxRateKiB,
        incremental: o.incremental,
        ...(o.serverCompressed ? { serverCompression: { method: 'zstd' as const, level: ZSTD_LEVEL, workers: o.serverWorkers } } : {}),
      },
      {
        start: (p) => {
          o.onStart();
          o.log.info({ start: formatLsn(p.lsn), timeline: p.tli, serverCompression: o.serverCompressed }, 'base backup streaming');
        },
        tablespaces: (rows) => {
          const kib = rows.reduce((sum, r) => (r.sizeKiB === null ? sum : sum + r.sizeKiB), 0);
          o.progress.setTotal(rows.some((r) => r.sizeKiB !== null) ? kib * 1024 : null);
        },
        archiveStart: (archiveName, row) => {
          current = { name: archiveName, row, compression: o.serverCompressed ? 'zstd' : null, rawBytes: 0 };
          progressAtStart = lastProgress;
          archives.push(current);
          uploader.begin(o.prefix, archiveName);
          if (row.oid === null && o.serverCompressed) {
            const { DecompressStream } = require('zstd-napi') as typeof import('zstd-napi');
            const d = new DecompressStream();
            labelStream = d;
            d.on('data', (out: Buffer) => {
              sniffer.feed(out);
              // The label is all we read here: the rest of the stream is not decompressed.
              if (sniffer.done) d.destroy();
            });
            labelDone = new Promise<void>((resolve) => {
              d.once('error', (err) => {
                if (!sniffer.done) sniffer.error = new WalvaultError('PG_PROTOCOL', `base.tar.zst from the server does not decompress: ${err.message}`);
                resolve();
              });
              d.once('close', () => resolve());
              d.once('end', () => resolve());
            });
          }
        },
        archiveData: (chunk) => {
          o.checkLease();
          const a = current!;
          if (a.row.oid === null && !sniffer.done) {
            if (labelStream) labelStream.write(Buffer.from(chunk));
            else sniffer.feed(chunk);
          }
          if (!a.compression) a.rawBytes += chunk.length;
          return uploader.write(chunk);
        },
        archiveEnd: endArchive,
        manifestData: (chunk) => {
          manifestChunks.push(Buffer.from(chunk));
        },
        progress: (bytes) => {
          lastProgress = bytes;
          o.progress.update(bytes);
        },
      },
    );
  } catch (err) {
    o.progress.finish();
    (labelStream as import('node:stream').Transform | null)?.destroy();
    await uploader.abandon();
    o.checkLease();
    throw err;
  }
  o.progress.finish();
  const parts = await uploader.finish();
  const ls = labelStream as import('node:stream').Transform | null;
  if (ls && !ls.destroyed) {
    // The label lies in the first few hundred bytes: anything still unread was not needed.
    ls.end();
    await labelDone;
  }
  if (sniffer.error) throw sniffer.error;
  const label = sniffer.label;
  if (!label) throw new WalvaultError('PG_PROTOCOL', 'the backup has no base.tar with a backup_label');
  if (label.startLsn !== result.start.lsn) {
    throw new WalvaultError('PG_PROTOCOL', `backup_label starts at ${formatLsn(label.startLsn)} but the server reported ${formatLsn(result.start.lsn)}`);
  }
  return { result, parts, archives, manifestChunks, label };
}
