/**
 * One `BASE_BACKUP` exchange on a walsender connection, turned into events: where the backup
 * starts, the tablespaces, each tar archive's bytes, the manifest's bytes, progress, and
 * where it stops. WAL is never requested: the site's own archive supplies it.
 *
 * What the server sends (docs/replication-protocol.md, section 6):
 *
 *   T/D/C  one row (recptr text, tli int8)                       start position
 *   T/D/C  one row per tablespace (spcoid oid, spclocation text, size int8 KiB or NULL);
 *          the main data directory last, with spcoid and spclocation NULL
 *   ...archive data, by version (below)...
 *   T/D/C  one row (recptr text, tli int8)                       stop position
 *   C, Z
 *
 * PostgreSQL 13 and 14: one COPY OUT (H ... c) per tablespace row, in row order, whose
 * CopyData bodies are raw tar bytes, and the tar lacks its end-of-archive blocks; then, when a
 * manifest was asked for, one more COPY OUT holding the manifest.
 *
 * PostgreSQL 15 and later: a single COPY OUT whose CopyData bodies are typed:
 *    'n'  String archive name, String location ('' for the main directory): a new archive
 *    'd'  Byte[n] bytes of the open archive, or of the manifest after 'm'
 *    'p'  Int64 (big-endian) bytes sent so far, cumulative over all archives
 *    'm'  the manifest follows (after every archive)
 * and every archive is a complete tar (with its two zero blocks).
 */
import { WalvaultError } from '../errors';
import { parseLsn, type Lsn } from '../wal/lsn';
import { mapPgError } from './connect-errors';
import { onPgMessages, socketOf, type PgMessages } from './pg-internals';
import type { ReplicationConnection } from './replication-connection';

export interface BaseBackupOptions {
  label: string;
  /** Immediate checkpoint instead of a spread one. */
  fastCheckpoint: boolean;
  /** kB/s, 32..1048576; unset = unlimited. */
  maxRateKiB?: number;
  /**
   * PostgreSQL 15+: the server compresses each archive (`base.tar.zst`, `<oid>.tar.zst`)
   * where the data is, as pgBackRest does on the database host; the manifest stays plain.
   */
  serverCompression?: { method: 'zstd'; level: number; workers?: number };
  /**
   * PostgreSQL 17+: only the blocks changed since the backup whose manifest was uploaded
   * (UPLOAD_MANIFEST, same connection) are sent, as INCREMENTAL.<file> files.
   */
  incremental?: boolean;
}

/** File-name suffix the server gives archives compressed with `method`. */
const SERVER_COMPRESSION_SUFFIX = { zstd: '.zst' } as const;

export interface TablespaceRow {
  /** null for the main data directory. */
  oid: string | null;
  location: string | null;
  /** The server's estimate in KiB (PROGRESS asked for). */
  sizeKiB: number | null;
}

export interface BackupPosition {
  lsn: Lsn;
  tli: number;
}

/**
 * What the stream is handed to. Chunks are views valid only during the call. Returning a
 * promise pauses reading from the socket until it settles (backpressure): the server then
 * waits in its send.
 */
export interface BaseBackupSink {
  start(position: BackupPosition): void;
  tablespaces(rows: TablespaceRow[]): void;
  archiveStart(name: string, tablespace: TablespaceRow): void | Promise<void>;
  archiveData(chunk: Buffer): void | Promise<void>;
  archiveEnd(): void | Promise<void>;
  manifestData(chunk: Buffer): void;
  progress(bytesSent: number): void;
}

export interface BaseBackupResult {
  start: BackupPosition;
  stop: BackupPosition;
  tablespaces: TablespaceRow[];
}

const MIN_RATE = 32;
const MAX_RATE = 1048576;
/** A tar ends with two 512-byte zero blocks; servers before 15 leave them to the client. */
export const TAR_END = Buffer.alloc(1024);

function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** The command text for `major` (parenthesised options from 15, keywords before). */
export function baseBackupCommand(major: number, o: BaseBackupOptions): string {
  if (o.maxRateKiB !== undefined && (!Number.isInteger(o.maxRateKiB) || o.maxRateKiB < MIN_RATE || o.maxRateKiB > MAX_RATE)) {
    throw new WalvaultError('CONFIG_INVALID', `max rate ${o.maxRateKiB} kB/s is out of range`, { fix: `give a whole number from ${MIN_RATE} to ${MAX_RATE}` });
  }
  if (major < 13) {
    throw new WalvaultError('PG_UNSUPPORTED_VERSION', `base backups need PostgreSQL 13 or later (for the backup manifest)`, { fix: `the server is ${major}` });
  }
  if (major >= 15) {
    const opts = [
      `LABEL ${literal(o.label)}`,
      'PROGRESS',
      `CHECKPOINT ${o.fastCheckpoint ? "'fast'" : "'spread'"}`,
      // We do not archive WAL through the backup; waiting for the server's archiver (which
      // may not even be configured) would only stall the stop.
      'WAIT false',
      'MANIFEST \'yes\'',
      // CRC32C (the server's default): restore checks every file against it, and at ~5x
      // the speed of SHA-256 it costs neither the server nor the restore much. The parts
      // themselves are SHA-256 protected end to end.
      "MANIFEST_CHECKSUMS 'CRC32C'",
      "TARGET 'client'",
    ];
    if (o.maxRateKiB !== undefined) opts.push(`MAX_RATE ${o.maxRateKiB}`);
    if (o.incremental) {
      if (major < 17) throw new WalvaultError('INTERNAL', `incremental backups need PostgreSQL 17 or later`, { fix: `the server is ${major}` });
      opts.push('INCREMENTAL');
    }
    if (o.serverCompression) opts.push(`COMPRESSION '${o.serverCompression.method}'`, `COMPRESSION_DETAIL 'level=${o.serverCompression.level}${o.serverCompression.workers ? `,workers=${o.serverCompression.workers}` : ''}'`);
    return `BASE_BACKUP ( ${opts.join(', ')} )`;
  }
  if (o.serverCompression || o.incremental) {
    throw new WalvaultError('INTERNAL', `server-side compression (15+) and incremental backups (17+) need a newer PostgreSQL`, { fix: `the server is ${major}` });
  }
  const parts = [`LABEL ${literal(o.label)}`, 'PROGRESS'];
  if (o.fastCheckpoint) parts.push('FAST');
  parts.push('NOWAIT');
  if (o.maxRateKiB !== undefined) parts.push(`MAX_RATE ${o.maxRateKiB}`);
  parts.push("MANIFEST 'yes'", "MANIFEST_CHECKSUMS 'CRC32C'");
  return `BASE_BACKUP ${parts.join(' ')}`;
}

/** Reads a NUL-terminated string at `at`; returns it and the offset after the NUL. */
function cString(buf: Buffer, at: number, what: string): [string, number] {
  const end = buf.indexOf(0, at);
  if (end < 0) throw new WalvaultError('PG_PROTOCOL', `BASE_BACKUP: ${what} is not NUL-terminated`);
  return [buf.toString('utf8', at, end), end + 1];
}

/** Archive names the server may send: `base.tar` or `<oid>.tar`, plus the compression suffix asked for. */
function checkArchiveName(name: string, suffix: string): void {
  if (!/^(?:base|[0-9]+)\.tar$/.test(suffix ? name.slice(0, -suffix.length) : name) || !name.endsWith(suffix)) {
    throw new WalvaultError('PG_PROTOCOL', `BASE_BACKUP: unexpected archive name ${JSON.stringify(name)}`);
  }
}

/**
 * Runs BASE_BACKUP on `conn` (which must be idle) and feeds `sink`. Resolves with the start
 * and stop positions once the server has finished; rejects on any error, server or sink.
 */
export async function runBaseBackup(conn: ReplicationConnection, major: number, options: BaseBackupOptions, sink: BaseBackupSink): Promise<BaseBackupResult> {
  const sql = baseBackupCommand(major, options);
  // Held back (paused), dropped on a failure: the socket under the connection.
  const socket = socketOf(conn.connection);
  let columns: string[] = [];
  let start: BackupPosition | null = null;
  let stop: BackupPosition | null = null;
  const tablespaces: TablespaceRow[] = [];
  let tablespacesDone = false;
  let failure: unknown = null;
  // Ordered work: sink calls that return promises are awaited in order, the socket paused
  // meanwhile. Everything after a failure is dropped.
  let chain: Promise<void> = Promise.resolve();
  let pending = 0;
  let paused = false;
  const run = (fn: () => void | Promise<void>): void => {
    if (failure) return;
    if (pending === 0) {
      try {
        const r = fn();
        if (r && typeof (r as Promise<void>).then === 'function') track(r as Promise<void>);
      } catch (err) {
        fail(err);
      }
      return;
    }
    track(chain.then(() => (failure ? undefined : fn())));
  };
  // A chunk is a view of a read buffer that is refilled once the current read is handled:
  // when its sink call has to wait its turn, it waits with a copy.
  const runWith = (chunk: Buffer, fn: (c: Buffer) => void | Promise<void>): void => {
    const c = pending === 0 ? chunk : Buffer.from(chunk);
    run(() => fn(c));
  };
  const track = (p: Promise<void>): void => {
    pending++;
    if (!paused) {
      paused = true;
      socket.pause();
    }
    chain = p.then(
      () => {
        pending--;
        if (pending === 0 && paused && !failure) {
          paused = false;
          socket.resume();
        }
      },
      (err) => {
        pending--;
        fail(err);
      },
    );
  };
  const fail = (err: unknown): void => {
    if (failure) return;
    failure = err;
    // The server cannot be told to stop a base backup mid-stream: drop the connection.
    socket.destroy();
  };

  // PostgreSQL 13/14: archives are delimited by COPY OUT responses.
  let copyIndex = -1;
  let inManifest = false;
  let archiveOpen = false;
  // Bytes so far, for servers that do not send 'p' (13/14).
  let sent = 0;

  const onRowDescription = (msg: PgMessages['rowDescription']): void => {
    columns = msg.fields.map((f) => f.name);
  };
  const onDataRow = (msg: PgMessages['dataRow']): void => {
    try {
      const row: Record<string, string | null> = {};
      columns.forEach((c, i) => (row[c] = msg.fields[i] ?? null));
      if ('recptr' in row) {
        const position = { lsn: parseLsn(String(row.recptr)), tli: Number(row.tli) };
        if (!start) {
          start = position;
          run(() => sink.start(position));
        } else {
          stop = position;
        }
      } else if ('spcoid' in row) {
        tablespaces.push({
          oid: row.spcoid,
          location: row.spclocation,
          sizeKiB: row.size === null || row.size === undefined ? null : Number(row.size),
        });
      }
    } catch (err) {
      fail(err);
    }
  };
  const tablespacesKnown = (): void => {
    if (tablespacesDone) return;
    tablespacesDone = true;
    const rows = [...tablespaces];
    run(() => sink.tablespaces(rows));
  };
  const suffix = options.serverCompression ? SERVER_COMPRESSION_SUFFIX[options.serverCompression.method] : '';
  const tablespaceNamed = (name: string, location: string): TablespaceRow => {
    const tar = name.slice(0, name.length - suffix.length);
    const oid = tar === 'base.tar' ? null : tar.slice(0, -'.tar'.length);
    const row = tablespaces.find((t) => t.oid === oid);
    if (!row) throw new WalvaultError('PG_PROTOCOL', `BASE_BACKUP: archive ${name} (${location || 'main directory'}) matches no tablespace the server listed`);
    return row;
  };
  const onCopyOut = (): void => {
    tablespacesKnown();
    if (major >= 15) return;
    copyIndex++;
    if (copyIndex < tablespaces.length) {
      const row = tablespaces[copyIndex];
      const name = row.oid === null ? 'base.tar' : `${row.oid}.tar`;
      archiveOpen = true;
      run(() => sink.archiveStart(name, row));
    } else {
      inManifest = true;
    }
  };
  const onCopyDone = (): void => {
    if (major >= 15) {
      if (archiveOpen) {
        archiveOpen = false;
        run(() => sink.archiveEnd());
      }
      return;
    }
    if (archiveOpen) {
      archiveOpen = false;
      run(() => sink.archiveData(TAR_END));
      run(() => sink.archiveEnd());
    }
  };
  const onCopyData = (body: Buffer): void => {
    if (failure) return;
    try {
      if (major < 15) {
        sent += body.length;
        if (inManifest) runWith(body, (c) => sink.manifestData(c));
        else runWith(body, (c) => sink.archiveData(c));
        const done = sent;
        run(() => sink.progress(done));
        return;
      }
      const type = body[0];
      switch (type) {
        case 0x6e /* n */: {
          const [name, next] = cString(body, 1, 'archive name');
          const [location] = cString(body, next, 'archive location');
          checkArchiveName(name, suffix);
          const row = tablespaceNamed(name, location);
          const wasOpen = archiveOpen;
          archiveOpen = true;
          if (wasOpen) run(() => sink.archiveEnd());
          run(() => sink.archiveStart(name, row));
          break;
        }
        case 0x64 /* d */: {
          const chunk = body.subarray(1);
          if (inManifest) runWith(chunk, (c) => sink.manifestData(c));
          else if (archiveOpen) runWith(chunk, (c) => sink.archiveData(c));
          else throw new WalvaultError('PG_PROTOCOL', 'BASE_BACKUP: data before any archive began');
          break;
        }
        case 0x70 /* p */: {
          if (body.length < 9) throw new WalvaultError('PG_PROTOCOL', 'BASE_BACKUP: short progress message');
          const done = Number(body.readBigInt64BE(1));
          run(() => sink.progress(done));
          break;
        }
        case 0x6d /* m */: {
          if (archiveOpen) {
            archiveOpen = false;
            run(() => sink.archiveEnd());
          }
          inManifest = true;
          break;
        }
        default:
          throw new WalvaultError('PG_PROTOCOL', `BASE_BACKUP: unknown CopyData type 0x${type.toString(16)}`);
      }
    } catch (err) {
      fail(err);
    }
  };

  const stopListening = onPgMessages(conn.connection, {
    rowDescription: onRowDescription,
    dataRow: onDataRow,
    copyOutResponse: onCopyOut,
    copyDone: onCopyDone,
  });
  const unsubscribe = conn.subscribeCopyData(onCopyData);
  try {
    let serverError: unknown = null;
    await conn.rawQuery(sql).catch((err) => {
      serverError = err;
    });
    // Whatever the sink still has in hand is finished before the outcome is decided.
    while (pending > 0) await chain;
    if (failure) throw failure;
    if (serverError) {
      const mapped = mapPgError(serverError, conn.target);
      // Refused before it began (no start position yet): nothing was sent, so the caller may
      // ask again another way (without server compression, as a full backup).
      throw !start && mapped.code === 'PG_SERVER_ERROR' ? new WalvaultError('PG_BACKUP_REFUSED', mapped.message, { cause: serverError }) : mapped;
    }
    if (!start || !stop) throw new WalvaultError('PG_PROTOCOL', 'BASE_BACKUP ended without reporting its start and stop positions');
    if (archiveOpen) throw new WalvaultError('PG_PROTOCOL', 'BASE_BACKUP ended inside an archive');
    return { start, stop, tablespaces };
  } finally {
    unsubscribe();
    stopListening();
    if (paused) socket.resume();
  }
}
