/** The streams of one BASE_BACKUP exchange as stored parts, with its manifest and backup_label. */
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { ZSTD_LEVEL } from '../archive/codecs';
import { WalvaultError } from '../errors';
import type { Progress } from '../observe/progress';
import { runBaseBackup, type BaseBackupResult, type TablespaceRow } from '../postgres/base-backup-stream';
import type { ReplicationConnection } from '../postgres/replication-connection';
import { formatLsn } from '../wal/lsn';
import { BackupLabelSniffer, type BackupLabel } from './backup-label';
import { BlockIndexer } from './block-index';
import { PartUploader, type StoredPart } from './part-uploader';

export const DEFAULT_PART_SIZE = 4 * 1024 * 1024;

export interface StreamArchive {
  name: string;
  row: TablespaceRow;
  compression: 'zstd' | null;
  /** Uncompressed tar bytes (for server-compressed archives: as the server counted them). */
  rawBytes: number;
}

export interface Streamed {
  result: BaseBackupResult;
  parts: Map<string, StoredPart[]>;
  archives: StreamArchive[];
  manifestChunks: Buffer[];
  label: BackupLabel;
  /** The block index plaintext of each archive walvault saw uncompressed, by archive name. */
  indexes: Map<string, Buffer>;
}

/**
 * One BASE_BACKUP into parts. With server compression the archives arrive as zstd streams:
 * they are stored as they are (no second compression), the backup_label is read from the
 * start of base.tar.zst through a decompressor, and raw sizes come from the server's
 * progress counter. Archives that arrive as plain tar are also indexed as they pass
 * (./block-index.ts), for delta restores.
 */
export async function streamIntoParts(
  conn: ReplicationConnection,
  major: number,
  o: {
    archive: Archive;
    prefix: string;
    label: string;
    /** What the command asked of BASE_BACKUP and of the parts. */
    options: { fastCheckpoint: boolean; maxRateKiB?: number; partSize?: number };
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
  const indexes = new Map<string, Buffer>();
  let indexer: BlockIndexer | null = null;
  let lastProgress = 0;
  let progressAtStart = 0;
  const endArchive = (): void => {
    if (current && current.compression) current.rawBytes = lastProgress - progressAtStart;
    if (current && indexer) indexes.set(current.name, indexer.finish());
    indexer = null;
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
          indexer = o.serverCompressed ? null : new BlockIndexer(`${archiveName} from the server`);
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
          // Done with the chunk when it returns (CRCs of 8 KiB views, a few GB/s: inline on
          // the socket's thread is fine), before the caller reuses its buffer.
          indexer?.write(chunk);
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
  return { result, parts, archives, manifestChunks, label, indexes };
}
