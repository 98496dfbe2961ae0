/**
 * The chunks of a streamed object copied into fixed-size pooled buffers (the parts of an S3
 * multipart upload, the blocks of an Azure blob), each byte once: a full buffer is handed on
 * only when more bytes follow, so an object that fits in one buffer stays in it and can go up
 * in a single request.
 */
import type { BufferPool } from '../util/buffer-pool';
import { BodyFailed } from './body-failed';
import type { ObjectChunk } from './storage';

export interface FilledParts {
  /** The last buffer, which the caller now owns (and must release). */
  last: Buffer;
  /** Bytes in `last`. */
  length: number;
  /** How many full buffers went to `onFull` before it. */
  full: number;
}

/**
 * Fills buffers from `pool` with the body. `onFull(buffer, length)` owns the buffer from its
 * call (it gives it back to the pool once sent); `afterChunk` may throw to stop early (a part
 * that failed meanwhile). A body that throws ends it with BodyFailed. Whatever ends it, the
 * body is closed and no buffer it still held is kept from the pool.
 */
export async function fillParts(
  body: AsyncIterable<ObjectChunk>,
  pool: BufferPool,
  onFull: (buffer: Buffer, length: number) => Promise<void>,
  afterChunk: () => void,
): Promise<FilledParts> {
  const source = body[Symbol.asyncIterator]();
  let sourceDone = false;
  let part: Buffer | null = pool.acquire();
  let filled = 0;
  let full = 0;
  try {
    for (;;) {
      let next: IteratorResult<ObjectChunk>;
      try {
        next = await source.next();
      } catch (err) {
        sourceDone = true;
        throw new BodyFailed(err);
      }
      if (next.done) {
        sourceDone = true;
        const last = part!;
        part = null;
        return { last, length: filled, full };
      }
      for (const piece of Buffer.isBuffer(next.value) ? [next.value] : next.value) {
        for (let at = 0; at < piece.length; ) {
          if (filled === part!.length) {
            // A full buffer and more to come: the object goes up in parts.
            const done = part!;
            part = null;
            full++;
            await onFull(done, filled);
            part = pool.acquire();
            filled = 0;
          }
          const n = piece.copy(part!, filled, at, Math.min(piece.length, at + part!.length - filled));
          filled += n;
          at += n;
        }
      }
      afterChunk();
    }
  } finally {
    if (!sourceDone) await source.return?.();
    if (part !== null) pool.release(part);
  }
}
