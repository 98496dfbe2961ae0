/**
 * Cuts a stream of bytes (one tar archive of a base backup) into parts of a fixed size and
 * stores each part as its own archive object, several at once. Memory is bounded by
 * (parts in flight + 1) x part size whatever the database size: when every buffer is busy,
 * `write` returns a promise and the caller (the replication socket) waits.
 */
import { createHash } from 'node:crypto';
import type { Archive } from '../archive/archive';
import type { CodecName } from '../archive/codecs';
import { sha256InWorker } from '../archive/compress-hash-workers';
import { WalvaultError } from '../errors';

/**
 * Plaintext bytes per frame of the parts walvault compresses or encrypts itself: a delta
 * restore decodes only the frames holding the blocks it needs, so a small frame spares it most
 * of a part. (Parts the server compressed are one zstd stream that must be read from its start
 * anyway: they keep 1 MiB frames.)
 */
export const BACKUP_FRAME_SIZE = 32 * 1024;

export interface StoredPart {
  key: string;
  /** Bytes of the archive this part holds (its plaintext). */
  size: number;
  /** SHA-256 of the plaintext, hex. */
  sha256: string;
  /** Bytes the object takes in storage (envelope, compression, encryption). */
  storedSize: number;
}

export interface PartUploaderOptions {
  archive: Archive;
  /** Overrides the archive's codec (parts the server compressed already are stored as they are). */
  codec?: CodecName;
  partSize: number;
  inFlight: number;
  /** Called after each part is stored and verified. */
  onStored?: (part: StoredPart) => void;
}

/** Key of part `index` of `archiveName` in backup `name`: zero-padded so keys sort in order. */
function partKey(backupPrefix: string, archiveName: string, index: number): string {
  return `${backupPrefix}parts/${archiveName}.${String(index).padStart(6, '0')}`;
}

export class PartUploader {
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private current: Buffer | null = null;
  private filled = 0;
  private archiveName = '';
  private prefix = '';
  private index = 0;
  private readonly uploads = new Set<Promise<void>>();
  private waiters: Array<() => void> = [];
  private failure: unknown = null;
  private readonly parts = new Map<string, StoredPart[]>();
  private rawBytes = 0;

  constructor(private readonly o: PartUploaderOptions) {
    if (o.partSize <= 0 || o.inFlight <= 0) throw new WalvaultError('CONFIG_INVALID', 'part size and parts in flight must be positive');
  }

  /** Starts a new archive (a tar stream) under `backupPrefix` (ending in '/'). */
  begin(backupPrefix: string, archiveName: string): void {
    if (this.current && this.filled > 0) throw new WalvaultError('INTERNAL', `archive ${this.archiveName} was not ended before ${archiveName} began`);
    this.prefix = backupPrefix;
    this.archiveName = archiveName;
    this.index = 0;
    this.parts.set(archiveName, []);
  }

  /**
   * Copies `chunk` (a view the caller will reuse) into part buffers. Resolves at once while a
   * buffer is free; otherwise when an upload finishes.
   */
  write(chunk: Buffer): void | Promise<void> {
    this.throwIfFailed();
    let at = 0;
    while (at < chunk.length) {
      if (!this.current) {
        const buf = this.takeBuffer();
        if (!buf) {
          // The caller reuses `chunk` once we return: what waits for a buffer waits as a copy.
          const rest = Buffer.from(chunk.subarray(at));
          return this.waitForBuffer().then(() => this.write(rest));
        }
        this.current = buf;
        this.filled = 0;
      }
      const take = Math.min(chunk.length - at, this.current.length - this.filled);
      chunk.copy(this.current, this.filled, at, at + take);
      this.filled += take;
      at += take;
      this.rawBytes += take;
      if (this.filled === this.current.length) this.ship();
    }
  }

  /** Ships the archive's last (short) part. An empty archive still gets one empty part. */
  end(): void {
    this.throwIfFailed();
    const list = this.parts.get(this.archiveName) ?? [];
    if (this.current && this.filled > 0) this.ship();
    else if (this.index === 0 && list.length === 0) {
      this.current = Buffer.alloc(0);
      this.filled = 0;
      this.ship();
    }
  }

  /** Waits for every upload; throws the first failure. Returns the parts per archive, in order. */
  async finish(): Promise<Map<string, StoredPart[]>> {
    while (this.uploads.size > 0) await Promise.race(this.uploads);
    this.throwIfFailed();
    for (const list of this.parts.values()) list.sort((a, b) => (a.key < b.key ? -1 : 1));
    return this.parts;
  }

  /** Waits for uploads in flight and drops the rest: used when the backup fails. */
  async abandon(): Promise<void> {
    while (this.uploads.size > 0) await Promise.race(this.uploads);
  }

  get bytesTaken(): number {
    return this.rawBytes;
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  private takeBuffer(): Buffer | null {
    const b = this.free.pop();
    if (b) return b;
    // One buffer fills while `inFlight` upload. Shared memory: compression workers read the
    // frames in place instead of getting a copy of every byte.
    if (this.allocated < this.o.inFlight + 1) {
      this.allocated++;
      return Buffer.from(new SharedArrayBuffer(this.o.partSize));
    }
    return null;
  }

  private waitForBuffer(): Promise<void> {
    return new Promise<void>((resolve) => this.waiters.push(resolve)).then(() => this.throwIfFailed());
  }

  private ship(): void {
    const buffer = this.current!;
    const body = buffer.subarray(0, this.filled);
    const key = partKey(this.prefix, this.archiveName, this.index++);
    const list = this.parts.get(this.archiveName)!;
    this.current = null;
    this.filled = 0;
    const upload = this.store(key, body)
      .then((part) => {
        list.push(part);
        this.o.onStored?.(part);
      })
      .catch((err) => {
        if (!this.failure) this.failure = err;
      })
      .finally(() => {
        this.uploads.delete(upload);
        if (buffer.length > 0) this.free.push(buffer);
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      });
    this.uploads.add(upload);
  }

  private async store(key: string, body: Buffer): Promise<StoredPart> {
    // Hashed in a worker, reading the shared part buffer in place: the main thread's time
    // belongs to the socket.
    const sha = body.length > 0 ? await sha256InWorker(body) : createHash('sha256').digest();
    const ours = this.o.codec === undefined;
    const result = await this.o.archive.putOwnedBuffer(key, body, sha, ours ? { frameSize: BACKUP_FRAME_SIZE } : { codec: this.o.codec });
    if (result === 'unchanged') {
      // A fresh backup name never has parts: an object there means two writers share it.
      throw new WalvaultError('BACKUP_CONFLICT', `${key} already exists`, { fix: `is another backup writing under the same name?` });
    }
    const info = await this.o.archive.storage.head(key);
    if (!info) throw new WalvaultError('ARCHIVE_CORRUPT', `${key} vanished right after it was stored and verified`);
    return { key, size: body.length, sha256: sha.toString('hex'), storedSize: info.size };
  }
}
