/**
 * The one small interface every storage backend implements. Keys are '/'-separated paths
 * relative to the site's archive prefix (e.g. `wal/000000010000000000000003`).
 *
 * Backends only move bytes. The archive layer above them owns the rules: envelopes,
 * checksums, the no-overwrite promise and read-back verification.
 */
export interface ObjectInfo {
  key: string;
  size: number;
  /** When it was last written, where the store says (listings). */
  modified?: Date;
}

export interface ListOptions {
  /** Only keys that sort after this one (plain code-unit order). */
  startAfter?: string;
  /** At most this many keys, the first in order (a positive integer). */
  limit?: number;
}

/**
 * What an object is written from: one buffer, parts (an envelope header and a plaintext,
 * without concatenating them), or a stream of chunks (a large file read piece by piece, so
 * memory stays bounded whatever the object's size). A streamed chunk is a buffer or a list of
 * consecutive buffers (a frame: its header, compressed or encrypted payload and tag, as they
 * were produced, never joined); it is valid only until the next one is requested (producers
 * refill their buffers): a backend that keeps chunks longer copies them.
 */
export type ObjectBody = Buffer | readonly Buffer[] | AsyncIterable<ObjectChunk>;
export type ObjectChunk = Buffer | readonly Buffer[];

/** Where a backend may read an object's chunks: one reused buffer, or a fresh one per read. */
export type ReadInto = Buffer | (() => Buffer);

export interface Storage {
  /** Human-readable location for logs and errors; never contains credentials. */
  readonly description: string;
  /**
   * Writes the whole object atomically: a reader sees the old object, the new one, or none.
   * An error raised by a streamed body aborts the write and leaves no object behind.
   */
  put(key: string, body: ObjectBody): Promise<void>;
  /** The whole object, or null when there is no object at `key`. */
  get(key: string): Promise<Buffer | null>;
  /**
   * Bytes [offset, offset + length) of the object (fewer at its end), or null when there is
   * no object. Lets large objects be checked in bounded memory. With `into` (at least
   * `length` bytes) the backend may read into it and return a view of it, so a caller that
   * reads window after window allocates nothing.
   */
  getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null>;
  /**
   * getRange on the calling thread, blocking it, where the backend can (local files): for a
   * restore reading hundreds of parts one after another on a CPU-bound machine, where each
   * trip through the thread pool costs a wake-up and a context switch. Never for the daemon,
   * whose loop must not wait on a disk.
   */
  getRangeNow?(key: string, offset: number, length: number, into?: Buffer): Buffer | null;
  head(key: string): Promise<ObjectInfo | null>;
  /**
   * The whole object as chunks in order, with its size, or null when there is no object: one
   * request on an object store (reading a large object back window by window would cost a
   * request per window), one open file locally. With `into` the backend may read into it
   * (local files do), so each chunk is valid only until the next one is requested; `into` as
   * a function gives a fresh buffer for each read, which the backend then never touches
   * again (a restore reads parts straight into its slabs this way, with no copy). Stopping
   * the iteration early releases the request or the file.
   */
  openRead(key: string, into?: ReadInto): Promise<{ size: number; chunks: AsyncIterable<Buffer> } | null>;
  /**
   * Optional: makes the complete, fsynced file at `file` the object at `key` without copying
   * it (a hard link), if the backend can. 'exists' when there is an object at `key` already
   * (it is never replaced); 'unsupported' when the caller must write the object instead
   * (another filesystem, no hard links). The caller keeps `file` and must not change it.
   */
  adoptFile?(key: string, file: string): Promise<'adopted' | 'exists' | 'unsupported'>;
  /**
   * Optional: where the store's own access rules are looser than configured (a local
   * directory readable by others), one warning per place, naming it and the fix.
   */
  accessWarnings?(): Promise<string[]>;
  /**
   * Every object whose key starts with `prefix`, sorted by key. With `startAfter`, only keys
   * after it (S3's StartAfter: a reader that needs the keys from one name on does not page
   * through everything before it); with `limit`, at most that many (the first ones).
   */
  list(prefix: string, opts?: ListOptions): Promise<ObjectInfo[]>;
  /** Removes the object; no error when it does not exist. */
  delete(key: string): Promise<void>;
  /** Releases connections or handles. */
  close(): Promise<void>;
}

/**
 * `chunks` (a generator whose `finally` releases what it reads from) as the iterable an
 * `openRead` returns: a generator that was never started skips its `finally` when returned
 * early, so `release` is called then instead. `release` must be safe to call twice.
 */
export function releasingChunks(chunks: AsyncGenerator<Buffer>, release: () => Promise<void> | void): AsyncIterable<Buffer> {
  let started = false;
  return {
    [Symbol.asyncIterator]: () => ({
      next: () => {
        started = true;
        return chunks.next();
      },
      return: async (value?: unknown) => {
        if (!started) await release();
        return chunks.return(value as undefined);
      },
    }),
  };
}

/**
 * A response body as the chunks `openRead` returns: an error while reading becomes
 * `fail(err)` (the backend's error naming the object), and `release` (safe to call twice) runs
 * however the iteration ends: abandoned early (a mismatch found), the rest is not wanted.
 */
export function readingChunks(body: AsyncIterable<Buffer>, fail: (err: unknown) => Error, release: () => void): AsyncIterable<Buffer> {
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of body) yield chunk;
    } catch (err) {
      throw fail(err);
    } finally {
      release();
    }
  }
  return releasingChunks(chunks(), release);
}
