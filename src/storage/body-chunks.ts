/**
 * A response body's chunks under the progress deadline: each wait for the store is bounded by
 * `idleMs` (a store that stops sending mid-body ends the read even when the socket's own
 * idle timeout does not fire), and only the wait counts, not the consumer's time between
 * chunks. A body that ends in an error is told apart by when its last byte came: none for the
 * deadline is a stall (a timeout); sooner, the connection closed early, said with how much of
 * the announced length came, when the backend's `cutShort` says the error means that (its SDK
 * knows: Azure's download stream reports a cut without a code, so every error is one there;
 * S3's passes Node's ECONNRESET, and other errors, such as a checksum mismatch, must reach the
 * caller as they are). The stream is destroyed however the iteration ends.
 *
 * Errors carry codes, never meaning in their text: `WALVAULT_BODY_STALLED` (name
 * TimeoutError) and `WALVAULT_BODY_INCOMPLETE` (name IncompleteBody).
 */
import type { Readable } from 'node:stream';

/** A body error within this much of the deadline since the last byte counts as the stall. */
const DEADLINE_SLACK_MS = 250;

export function bodyStalled(idleMs: number, cause?: unknown): Error {
  return Object.assign(new Error(`no body bytes for ${idleMs} ms`), { name: 'TimeoutError', code: 'WALVAULT_BODY_STALLED', cause });
}

export async function* guardedBody(
  stream: Readable,
  idleMs: number,
  announced: number | undefined,
  cutShort: (err: unknown) => boolean = () => true,
): AsyncGenerator<Buffer> {
  const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let got = 0;
  let lastByteAt = Date.now();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(bodyStalled(idleMs)), idleMs);
      });
      let next: IteratorResult<Buffer>;
      try {
        next = await Promise.race([it.next(), stalled]);
      } catch (err) {
        if ((err as { code?: string })?.code === 'WALVAULT_BODY_STALLED') throw err;
        if (Date.now() - lastByteAt >= idleMs - DEADLINE_SLACK_MS) throw bodyStalled(idleMs, err);
        if (!cutShort(err)) throw err;
        const of = announced !== undefined ? ` of the ${announced} bytes it announced` : '';
        throw Object.assign(new Error(`the connection closed after ${got}${of}`), { name: 'IncompleteBody', code: 'WALVAULT_BODY_INCOMPLETE', cause: err });
      } finally {
        clearTimeout(timer);
      }
      if (next.done) return;
      got += next.value.length;
      lastByteAt = Date.now();
      yield next.value;
    }
  } finally {
    stream.destroy();
  }
}

/** The chunks copied into `into` (when it holds `length` bytes) or a new buffer: at most `length` bytes. */
export async function collectInto(chunks: AsyncIterable<Buffer>, length: number, into?: Buffer): Promise<Buffer> {
  const out = into !== undefined && into.length >= length ? into : Buffer.allocUnsafe(length);
  let got = 0;
  for await (const c of chunks) {
    const take = Math.min(c.length, length - got);
    c.copy(out, got, 0, take);
    got += take;
  }
  return out.subarray(0, got);
}
