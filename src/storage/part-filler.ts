/**
 * What S3's multipart uploads (./s3-upload.ts) and Azure's block uploads (./azure-upload.ts)
 * share: the chunks of a streamed object copied into fixed-size pooled buffers (parts,
 * blocks), each byte once: a full buffer is handed on only when more bytes follow, so an
 * object that fits in one buffer stays in it and can go up in a single request; and the
 * bounded set of parts on the wire meanwhile.
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

/**
 * The parts (or blocks) of one upload that are on the wire, at most `limit`, each holding its
 * pooled buffer until it settles. A part that fails does not reject anything by itself: the
 * first failure is kept, and `check` throws it where the upload can stop (between chunks,
 * before the next part), so no rejection goes unhandled while the body is still being read.
 */
export class PartsInFlight {
  private readonly sending = new Set<Promise<void>>();
  private failure: { err: unknown } | null = null;

  constructor(
    private readonly pool: BufferPool,
    private readonly limit: number,
  ) {}

  /** Throws the first part's failure, if one failed. */
  readonly check = (): void => {
    if (this.failure !== null) throw this.failure.err;
  };

  /** What failed first, or undefined. */
  get firstFailure(): unknown {
    return this.failure?.err;
  }

  /**
   * Waits until another part may go. `buf` is the part that will, owned from here: when a
   * part failed meanwhile it goes back to the pool and the failure is thrown.
   */
  async room(buf: Buffer): Promise<void> {
    try {
      while (this.sending.size >= this.limit) await Promise.race(this.sending);
      this.check();
    } catch (err) {
      this.pool.release(buf);
      throw err;
    }
  }

  /** Counts `request` in flight; `buf` goes back to the pool once it settles. */
  add(request: Promise<unknown>, buf: Buffer): void {
    const sending: Promise<void> = request
      .then(
        () => undefined,
        (err: unknown) => {
          this.failure ??= { err };
        },
      )
      .finally(() => {
        this.sending.delete(sending);
        this.pool.release(buf);
      });
    this.sending.add(sending);
  }

  /** Every part sent, or the first failure thrown. */
  async all(): Promise<void> {
    await Promise.all(this.sending);
    this.check();
  }

  /** Waits for every part to settle, failed or not (before an abort, or giving up). */
  async settled(): Promise<void> {
    await Promise.allSettled(this.sending);
  }
}
