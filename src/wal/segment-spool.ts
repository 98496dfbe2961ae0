/**
 * The spool: WAL received from the server, written into segment files in the state
 * directory before anything is reported as safe.
 *
 * A segment being received lives in `NAME.partial`, sized to the full segment from the
 * start (so a later restart can tell a torn file from a short one). Bytes must arrive in
 * order: each write has to start exactly where the previous one ended. When the last byte
 * of a segment is written, the file is fsynced, renamed to `NAME` and the directory is
 * fsynced; only then is the segment reported complete. Page headers and the SHA-256 of the
 * segment are computed in the same pass as the write.
 *
 * Spool file layout: `headerRoom` bytes, then the segment's WAL. The room is zero while the
 * segment is received; at completion it is filled with `seal(size, sha256)` (the receiver
 * passes the archive's envelope header), so a complete spool file is already an archive
 * object that a local archive can take over with a hard link instead of a copy.
 */
import { createHash, type Hash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { writeFully } from '../util/write-fully';
import { formatLsn, segmentFileName, segmentNumber, segmentOffset, segmentStartOfNumber, type Lsn } from './lsn';
import { PageChecker, type PageCheckContext } from './page-header';
import { fsyncDir } from './fsync-dir';

export interface SpoolOptions {
  dir: string;
  segSize: number;
  /** Page check settings for a file of timeline `tli` (magic, system id, block size...). */
  checkContext(tli: number, name: string): PageCheckContext;
  /** Bytes reserved before the WAL in every spool file (default 0). */
  headerRoom?: number;
  /** The `headerRoom` bytes written at completion, from the segment's size and SHA-256. */
  seal?(size: number, sha256: Buffer): Buffer;
  /**
   * Called when creating or writing a spool file fails for room (ENOSPC, EDQUOT): resolving
   * retries the same write at the same offset, rejecting gives up with that error. Without it
   * the error is thrown. An fsync that fails is never retried: after a failed fsync the
   * kernel may have dropped the dirty pages, so the bytes must be written again from the
   * server (the caller reconnects and receives the segment again).
   */
  waitForRoom?(err: Error, file: string): Promise<void>;
}

export interface CompletedSegment {
  tli: number;
  segNo: bigint;
  name: string;
  startLsn: Lsn;
  sha256: string;
  /**
   * CRC32C of the same bytes, taken as they arrived (one hardware instruction per 8 bytes): what
   * a read-back of the sealed file itself is checked against, instead of a second SHA-256.
   */
  crc32c: number;
}

export interface OpenSegment {
  tli: number;
  segNo: bigint;
  name: string;
  startLsn: Lsn;
  /** Bytes written from offset 0. */
  received: number;
  /** Bytes known durable (fsynced) from offset 0. */
  fsynced: number;
}

interface Current extends OpenSegment {
  handle: fsp.FileHandle;
  hash: Hash;
  /** Running CRC32C of the bytes fed to `hash`. */
  crc: number;
  /** Bytes fed to `hash`: ahead of `received` only while (or when) a write fails. */
  hashed: number;
  checker: PageChecker;
}

export class SegmentSpool {
  private current: Current | null = null;
  private expected: Lsn | null = null;

  readonly headerRoom: number;

  constructor(private readonly opts: SpoolOptions) {
    this.headerRoom = opts.headerRoom ?? 0;
    if (this.headerRoom > 0 && !opts.seal) throw new Error('a spool with header room needs a seal');
  }

  get dir(): string {
    return this.opts.dir;
  }

  partialPath(name: string): string {
    return path.join(this.opts.dir, name + '.partial');
  }

  completePath(name: string): string {
    return path.join(this.opts.dir, name);
  }

  /** The segment being received, if any. */
  get open(): OpenSegment | null {
    if (!this.current) return null;
    const { tli, segNo, name, startLsn, received, fsynced } = this.current;
    return { tli, segNo, name, startLsn, received, fsynced };
  }

  /**
   * SHA-256 of the open segment's first `received` bytes (what `open` says now), from the
   * running hash, without reading the file: a partial's upload then hashes its bytes once.
   * Null when no segment is open, or when a failed write left the hash ahead of the file.
   */
  openDigest(): Buffer | null {
    const cur = this.current;
    if (!cur || cur.hashed !== cur.received) return null;
    return cur.hash.copy().digest();
  }

  /** End position of the bytes written so far (null before the first write). */
  get receivedLsn(): Lsn | null {
    return this.expected;
  }

  /**
   * Writes WAL bytes starting at `start` of timeline `tli`: `data` is one buffer or several
   * consecutive ones (written with one vectored write per segment). Calls `onOpen` when a new
   * segment file is started and `onComplete` as soon as one is complete (so a failure later
   * in the same write cannot hide it), and awaits each (a caller that must record the segment
   * before more WAL goes down holds the write there); returns the segments this write completed.
   */
  async write(
    tli: number,
    start: Lsn,
    data: Buffer | readonly Buffer[],
    onOpen?: (seg: OpenSegment) => unknown,
    onComplete?: (seg: CompletedSegment) => unknown,
  ): Promise<CompletedSegment[]> {
    const done: CompletedSegment[] = [];
    const segSize = this.opts.segSize;
    if (this.expected !== null && start !== this.expected) {
      throw new WalvaultError(
        'WAL_DISCONTINUITY',
        `WAL arrived from ${formatLsn(start)} but the spool ends at ${formatLsn(this.expected)}: refused, it would leave a gap`,
      );
    }
    const parts = Buffer.isBuffer(data) ? [data] : data;
    let pos = start;
    let part = 0;
    let offset = 0;
    while (part < parts.length) {
      if (!this.current) {
        if (segmentOffset(pos, segSize) !== 0) {
          throw new WalvaultError(
            'WAL_DISCONTINUITY',
            `WAL arrived from ${formatLsn(pos)}, which is not the start of a segment, with no segment open`,
          );
        }
        await this.openSegment(tli, segmentNumber(pos, segSize));
        await onOpen?.(this.open!);
      }
      const cur = this.current!;
      if (cur.tli !== tli) {
        throw new WalvaultError('WAL_DISCONTINUITY', `timeline ${tli} WAL arrived while segment ${cur.name} is open`);
      }
      // Everything that fits in this segment, checked and hashed piece by piece, then one write.
      const pieces: Buffer[] = [];
      let room = segSize - cur.received;
      while (room > 0 && part < parts.length) {
        const buf = parts[part];
        const n = Math.min(buf.length - offset, room);
        const piece = buf.subarray(offset, offset + n);
        cur.checker.feed(piece);
        cur.hash.update(piece);
        cur.crc = crc32c(piece, cur.crc);
        cur.hashed += piece.length;
        pieces.push(piece);
        room -= n;
        offset += n;
        if (offset === buf.length) {
          part++;
          offset = 0;
        }
      }
      const n = segSize - cur.received - room;
      await this.writeFully(cur, pieces, this.headerRoom + cur.received);
      cur.received += n;
      pos += BigInt(n);
      this.expected = pos;
      if (cur.received === segSize) {
        const completed = await this.completeCurrent();
        done.push(completed);
        await onComplete?.(completed);
      }
    }
    return done;
  }

  private async openSegment(tli: number, segNo: bigint): Promise<void> {
    const name = segmentFileName(tli, segNo, this.opts.segSize);
    const file = this.partialPath(name);
    let handle: fsp.FileHandle;
    for (;;) {
      try {
        // A file left by an earlier run of the same segment and timeline holds the same WAL,
        // possibly already reported as fsynced: overwrite it in place rather than truncating,
        // so those bytes stay durable while they are received again. Never one with another
        // link, though: that inode may be an archived object now.
        const st = await statOf(file);
        const reuse = st !== null && st.size === this.headerRoom + this.opts.segSize && st.nlink === 1;
        if (st !== null && !reuse) await fsp.unlink(file);
        // 0600: plaintext WAL, whatever the archive does with it (an older walvault's file too).
        handle = await fsp.open(file, reuse ? 'r+' : 'wx+', 0o600);
        try {
          if (reuse) await handle.chmod(0o600);
          // Full size up front: a restart can then tell a torn file from a short one.
          else await handle.truncate(this.headerRoom + this.opts.segSize);
        } catch (err) {
          await handle.close().catch(() => undefined);
          throw err;
        }
        break;
      } catch (err) {
        if (this.opts.waitForRoom && isRoomError(err)) {
          await this.opts.waitForRoom(err as Error, file);
          continue;
        }
        if (isRoomError(err)) throw err;
        throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot write spool file ${file}: ${(err as Error).message}`, { cause: err });
      }
    }
    const startLsn = segmentStartOfNumber(segNo, this.opts.segSize);
    this.current = {
      tli,
      segNo,
      name,
      startLsn,
      received: 0,
      fsynced: 0,
      handle,
      hash: createHash('sha256'),
      crc: 0,
      hashed: 0,
      checker: new PageChecker(startLsn, this.opts.checkContext(tli, name)),
    };
    await fsyncDir(this.opts.dir);
  }

  private async completeCurrent(): Promise<CompletedSegment> {
    const cur = this.current!;
    const digest = cur.hash.digest();
    if (this.headerRoom > 0) {
      const header = this.opts.seal!(this.opts.segSize, digest);
      if (header.length !== this.headerRoom) throw new Error(`seal gave ${header.length} bytes for ${this.headerRoom} bytes of room`);
      await this.writeFully(cur, [header], 0);
    }
    await cur.handle.sync();
    cur.fsynced = cur.received;
    await cur.handle.close();
    this.current = null;
    await fsp.rename(this.partialPath(cur.name), this.completePath(cur.name));
    await fsyncDir(this.opts.dir);
    return { tli: cur.tli, segNo: cur.segNo, name: cur.name, startLsn: cur.startLsn, sha256: digest.toString('hex'), crc32c: cur.crc };
  }

  /** Makes everything written so far durable. Returns the fsynced end position. */
  async fsync(): Promise<Lsn | null> {
    const cur = this.current;
    if (cur && cur.fsynced < cur.received) {
      const target = cur.received;
      await cur.handle.sync();
      cur.fsynced = Math.max(cur.fsynced, target);
    }
    return this.fsyncedLsn;
  }

  get fsyncedLsn(): Lsn | null {
    if (this.current) return this.current.startLsn + BigInt(this.current.fsynced);
    return this.expected;
  }

  /**
   * Stops writing to the open segment without completing it: it stays `NAME.partial`
   * (end of a timeline, shutdown). Returns what it held.
   */
  async closeOpen(): Promise<OpenSegment | null> {
    const cur = this.current;
    if (!cur) {
      this.expected = null;
      return null;
    }
    // Closed and forgotten even when the fsync fails, or every later reconnect would trip
    // over it; the bytes it did not make durable are received again from the segment's start.
    this.current = null;
    this.expected = null;
    try {
      await cur.handle.sync();
      cur.fsynced = cur.received;
    } finally {
      await cur.handle.close().catch(() => undefined);
    }
    const { tli, segNo, name, startLsn, received, fsynced } = cur;
    return { tli, segNo, name, startLsn, received, fsynced };
  }

  /** Forgets the expected position so the next write may start a new segment (timeline switch). */
  resetPosition(): void {
    if (this.current) throw new Error('a segment is still open');
    this.expected = null;
  }

  /** Writes every piece at `position` on; a write that fails for room waits and goes on where it stopped. */
  private async writeFully(cur: Current, pieces: Buffer[], position: number): Promise<void> {
    for (;;) {
      try {
        await writeFully(cur.handle, pieces, position, (done) => {
          position = done.position;
          pieces = done.rest;
        });
        return;
      } catch (err) {
        if (!this.opts.waitForRoom || !isRoomError(err)) throw err;
        await this.opts.waitForRoom(err as Error, this.partialPath(cur.name));
      }
    }
  }
}

function isRoomError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

async function statOf(file: string): Promise<{ size: number; nlink: number } | null> {
  try {
    return await fsp.stat(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
