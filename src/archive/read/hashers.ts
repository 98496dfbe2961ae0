/**
 * The SHA-256 the read stages compute (stored bytes, plaintext), behind one small interface
 * so a reader picks where it runs: on the calling thread (wal-fetch, small objects: a worker
 * would cost more to start than a segment costs to hash) or in a worker pool
 * (./hash-worker.ts: restore and verify, whose main thread has other work to do meanwhile).
 */
import { createHash } from 'node:crypto';

export interface Hasher {
  /** Adds `data`; the caller may reuse `data` once the returned promise, if any, settles. */
  update(data: Buffer): void | Promise<void>;
  /** The digest of everything added; the hasher is finished then. */
  digest(): Promise<Buffer>;
  /** Releases what an unfinished hash holds (a read abandoned midway); nothing after digest(). */
  dispose(): void;
}

export type HasherFactory = () => Hasher;

export const inThreadSha256: HasherFactory = () => {
  const hash = createHash('sha256');
  return {
    update: (data) => {
      hash.update(data);
    },
    digest: async () => hash.digest(),
    dispose: () => undefined,
  };
};
