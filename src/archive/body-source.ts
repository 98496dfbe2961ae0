/**
 * A plaintext to archive that can be read more than once, in windows: once to store it and
 * once to compare the stored object with it. A buffer, or the first bytes of a file (a spool
 * segment), read a window at a time so memory stays bounded whatever the segment size.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { WalvaultError } from '../errors';

export const WINDOW = 1 << 20;

export interface BodySource {
  readonly length: number;
  /** Human-readable origin for errors. */
  readonly origin: string;
  windows(): AsyncIterable<Buffer>;
}

export function bufferSource(buf: Buffer, origin = 'memory'): BodySource {
  return {
    length: buf.length,
    origin,
    async *windows() {
      for (let at = 0; at < buf.length; at += WINDOW) yield buf.subarray(at, Math.min(buf.length, at + WINDOW));
    },
  };
}

export function fileSource(path: string, length: number): BodySource {
  return {
    length,
    origin: path,
    async *windows() {
      const handle = await fsp.open(path, 'r');
      try {
        for (let at = 0; at < length; ) {
          // A fresh window each time: a storage backend may still hold the previous one.
          const buf = Buffer.allocUnsafe(Math.min(WINDOW, length - at));
          const { bytesRead } = await handle.read(buf, 0, buf.length, at);
          if (bytesRead === 0) throw new WalvaultError('STORAGE_IO', `${path} ended at ${at} bytes, expected ${length}`);
          yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
          at += bytesRead;
        }
      } finally {
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

/**
 * The source's windows, hashed on the way; when the last one has passed, the digest must be
 * `expected`, or the stream fails (and the write consuming it is abandoned).
 */
export async function* checkedWindows(source: BodySource, expected: Buffer): AsyncIterable<Buffer> {
  const hash = createHash('sha256');
  let seen = 0;
  for await (const w of source.windows()) {
    hash.update(w);
    seen += w.length;
    yield w;
  }
  const digest = hash.digest();
  if (seen !== source.length || !digest.equals(expected)) {
    throw new WalvaultError(
      'ARCHIVE_CORRUPT',
      `${source.origin} no longer has the content it was received with (${seen} bytes, sha256 ${digest.toString('hex')}; ` +
        `expected ${source.length} bytes, sha256 ${expected.toString('hex')}); check the disk it is on`,
    );
  }
}
