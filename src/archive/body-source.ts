/**
 * A plaintext to archive, read in windows: a buffer, or the first bytes of a file (a spool
 * segment), read a window at a time into a reused buffer so memory stays bounded whatever the
 * segment size.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { WalvaultError } from '../errors';
import { BufferPool } from '../util/buffer-pool';

export const WINDOW = 1 << 20;

/**
 * Window buffers shared by every reader in the process (a few uploads and checks at once). In
 * shared memory, so the compression workers read a window where it is
 * (./compress-hash-workers.ts).
 */
export const windowPool = new BufferPool(WINDOW, 8, { shared: true });

export interface BodySource {
  readonly length: number;
  /** Human-readable origin for errors. */
  readonly origin: string;
  /**
   * The bytes in order. A window is valid only until the next one is requested: its buffer
   * is then refilled.
   */
  windows(): AsyncIterable<Buffer>;
  /** Whether the source can still be read (a file may be renamed or removed meanwhile). */
  exists(): Promise<boolean>;
}

/**
 * A buffer in windows of `windowSize` bytes, which become the object's frames when it is
 * framed: smaller frames let a reader decode a small piece of the object (a backup part's
 * blocks, in a delta restore) at some cost in compression.
 */
export function bufferSource(buf: Buffer, windowSize = WINDOW, origin = 'memory'): BodySource {
  if (!Number.isInteger(windowSize) || windowSize <= 0 || windowSize > WINDOW) throw new WalvaultError('INTERNAL', `a ${windowSize}-byte window is not from 1 byte to ${WINDOW}`);
  return {
    length: buf.length,
    origin,
    exists: async () => true,
    async *windows() {
      for (let at = 0; at < buf.length; at += windowSize) yield buf.subarray(at, Math.min(buf.length, at + windowSize));
    },
  };
}

/** `length` bytes of the file at `path`, from byte `offset` on. */
export function fileSource(path: string, length: number, offset = 0): BodySource {
  return {
    length,
    origin: path,
    exists: () => fsp.access(path).then(() => true, () => false),
    async *windows() {
      const handle = await fsp.open(path, 'r');
      const buf = windowPool.acquire();
      try {
        for (let at = 0; at < length; ) {
          const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, length - at), offset + at);
          if (bytesRead === 0) throw new WalvaultError('STORAGE_IO', `${path} ended at ${at} bytes, expected ${length}`);
          yield buf.subarray(0, bytesRead);
          at += bytesRead;
        }
      } finally {
        windowPool.release(buf);
        await handle.close();
      }
    },
  };
}

/** SHA-256 of the whole source, read once. */
export async function digestOf(source: BodySource): Promise<Buffer> {
  const hash = createHash('sha256');
  for await (const w of source.windows()) hash.update(w);
  return hash.digest();
}
