/** The read-back that proves a write (./object-writer.ts). */
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import type { Storage } from '../storage/storage';
import { windowPool } from './body-source';
import { hex32 } from './envelope';

/**
 * Reads the stored object back in one pass, in bounded memory, hashing it once: it must be
 * `total` bytes; its first bytes must be `head` and its last `tail`, byte for byte (the
 * plain envelope header; a framed object's trailer); what lies between must hash to
 * `sha256` (the plaintext's received checksum; for a framed object the trailer's checksum,
 * whose range includes the header), or have the CRC32C `crc32c` when that is given instead.
 * Null when it is so, else what differs.
 */
export async function readBackProblem(
  storage: Storage,
  key: string,
  expect: { total: number; head?: Buffer; tail?: Buffer; sha256: Buffer; crc32c?: number },
): Promise<string | null> {
  const { total } = expect;
  const head = expect.head ?? Buffer.alloc(0);
  const tail = expect.tail ?? Buffer.alloc(0);
  const hashEnd = total - tail.length;
  const window = windowPool.acquire();
  try {
    const opened = await storage.openRead(key, window);
    if (opened === null) return 'missing when read back';
    let offset = 0;
    const hash = expect.crc32c === undefined ? createHash('sha256') : null;
    let crc = 0;
    const chunks = opened.chunks[Symbol.asyncIterator]();
    try {
      if (opened.size !== total) return `${opened.size} bytes instead of ${total} when read back`;
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
        const got = next.value;
        const end = offset + got.length;
        if (end > total) return `more than ${total} bytes when read back`;
        // This chunk's share of the head, of the hashed middle, and of the tail.
        if (offset < head.length && !got.subarray(0, head.length - offset).equals(head.subarray(offset, Math.min(end, head.length)))) {
          return 'its header differs when read back';
        }
        const from = Math.max(offset, head.length);
        const to = Math.min(end, hashEnd);
        if (from < to) {
          const middle = got.subarray(from - offset, to - offset);
          if (hash) hash.update(middle);
          else crc = crc32c(middle, crc);
        }
        if (end > hashEnd) {
          const at = Math.max(offset, hashEnd);
          if (!got.subarray(at - offset).equals(tail.subarray(at - hashEnd, end - hashEnd))) return 'its trailer differs when read back';
        }
        offset = end;
      }
    } finally {
      await chunks.return?.();
    }
    if (offset < total) return `missing from byte ${offset} when read back`;
    if (hash === null) {
      const want = expect.crc32c! >>> 0;
      return crc >>> 0 === want ? null : `what was read back has CRC32C ${hex32(crc >>> 0)}, not ${hex32(want)} as received`;
    }
    const stored = hash.digest();
    if (!stored.equals(expect.sha256)) {
      return `what was read back has sha256 ${stored.toString('hex')}, not ${expect.sha256.toString('hex')} as ${expect.head ? 'received' : 'written'}`;
    }
    return null;
  } finally {
    windowPool.release(window);
  }
}
