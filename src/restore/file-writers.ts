/**
 * Restored files are checksummed (for the manifest check) and written by worker threads,
 * off the thread that decompresses and parses the archive. Decompressing one zstd stream
 * cannot be split; hashing and writing can run beside it.
 *
 * - A small file goes whole to one worker: it creates it, hashes and writes each piece,
 *   and fsyncs and closes it at the end.
 * - A large file (a relation segment of up to 1 GiB) is where the time goes, and one thread
 *   hashing and writing it would hold the whole restore to that thread's speed. So one
 *   worker checksums it (in order), while every piece is written at its offset by whichever
 *   worker is least busy; this thread opens it and fsyncs and closes it at the end.
 * - Writes go through the page cache, flushed (fdatasync) every FLUSH_EVERY bytes so the
 *   disk works while the CPUs do, and fsynced at the end. O_DIRECT was measured against
 *   this on the 2-core development host (ext4 on a virtio disk), restoring the restore
 *   bench's 1.5 GB zstd backup: with O_DIRECT a median of 16.9 s over 3 rounds (13.1 to
 *   18.4 s; bench/results/restore-2026-12-03T22-03-06Z.json), through the page cache 2.80 s
 *   (2.59 to 2.84 s; restore-2026-12-04T13-41-10Z.json, which also drops two copies of an
 *   uncompressed archive's bytes; single runs toggling only O_DIRECT: 7 to 22 s against 2.2
 *   to 2.8 s). A direct write waits for the device in the writing thread, and two to four
 *   writers keep the disk's queue shallow; the page cache takes a write at memory speed and
 *   the kernel's write-back keeps the queue deep. The copy into the cache costs less CPU
 *   than those waits cost time.
 *
 * - A delta restore has the threads read and checksum the files already there (digestFiles),
 *   and decode and write the blocks it fetches (patchPart). While the check runs, half the
 *   threads check and the others take the parts, so each compiles (JIT) and keeps warm the
 *   code of one job (on 2 cores about 10% less CPU than each doing both); a thread done
 *   checking takes parts too.
 * - The chain patcher (./chain-patcher.ts) opens rebuilt files here (openAt: creating a file
 *   can cost the kernel most of a millisecond) and has each piece's stretches written at
 *   their places and CRC'd here (place), one message a piece, by the thread that opened the
 *   file, which also closes it (closeAt): Node closes a thread's own fds when it exits.
 *
 * File contents travel as views of shared memory (the slabs of ./slab-ring.ts). A worker
 * acknowledges each piece once done with it, in the order it got them; the caller's callback
 * runs when every worker given the piece is done, and releases the slab.
 */
import * as fs from 'node:fs';
import type { Worker } from 'node:worker_threads';
import { WalvaultError } from '../errors';
import type { FrameKeys, FrameRef } from '../archive/read/pick-frames';
import { FLUSH_EVERY, writeError, type FromWorker, type PartWrite, type Placement, type ToWorker } from './file-writer-messages';
import { DigestPlan } from './digest-plan';
import type { ManifestChecksumAlgorithm } from './manifest-checksum';
import { defaultWriterCount, takeWriterThread } from './writer-threads';

export type { Placement };

export interface WrittenFile {
  size: number;
  /** In the backup manifest's checksum algorithm, hex as the manifest writes it. */
  checksum: string;
  /** A file patched in place (open's `patch`): the bytes actually written. */
  rewritten?: number;
  /** Of a file digested by blocks (digestFiles' `blockSize`): the XXH64 of each block, 8 bytes a block. */
  blocks?: Buffer;
}

/** From this size on a file is checksummed by one worker and written by all. */
const LARGE_FILE = 8 * 1024 * 1024;
/** Files from this size on can be patched in place (open's `patch`). */
export const PATCH_MIN_SIZE = LARGE_FILE;

interface WriterThread {
  worker: Worker;
  /** Callbacks of the pieces posted and not yet done, in posting order. */
  acks: Array<(crcs?: number[], written?: number) => void>;
  /** Bytes posted and not yet done: work goes to the least busy worker. */
  queued: number;
  /** Parts of a delta restore posted and not yet done (patchPart). */
  patching: number;
  /** digestFiles' lanes working on this thread. */
  checking: number;
}

interface SmallFile {
  kind: 'small';
  owner: WriterThread;
}

interface LargeFile {
  kind: 'large';
  path: string;
  fd: number;
  hasher: WriterThread;
  position: number;
  writesPending: number;
  writesDone: (() => void) | null;
  unflushed: number;
  flushing: Promise<void> | null;
  /** Opened as it is: only the pages that differ are written (open's `patch`). */
  patch: boolean;
  rewritten: number;
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(err: Error): void;
}

export class FileWriterPool {
  private readonly threads: WriterThread[] = [];
  private readonly files = new Map<number, SmallFile | LargeFile>();
  private readonly closes = new Map<number, Waiter<WrittenFile>>();
  private readonly checked = new Map<number, Waiter<WrittenFile[]>>();
  private readonly digests = new Map<number, Waiter<string>>();
  private readonly requests = new Map<number, Waiter<number>>();
  private readonly patches = new Map<number, Waiter<Array<{ key: string; bytes: Buffer }>>>();
  /** The thread that opened each openAt file: it writes and closes it (Node tracks a thread's fds, and closes them when it exits). */
  private readonly openedBy = new Map<number, WriterThread>();
  private nextId = 1;
  private failure: Error | null = null;
  private failed: Array<(err: Error) => void> = [];

  constructor(algorithm: ManifestChecksumAlgorithm, size = defaultWriterCount()) {
    for (let i = 0; i < size; i++) {
      const worker = takeWriterThread();
      worker.ref();
      const t: WriterThread = { worker, acks: [], queued: 0, patching: 0, checking: 0 };
      worker.on('message', (m: FromWorker) => this.onMessage(t, m));
      worker.on('error', (err) => this.fail(new WalvaultError('INTERNAL', `a restore writer thread failed: ${err.message}`, { cause: err })));
      worker.on('exit', (code) => {
        if (code !== 0) this.fail(new WalvaultError('INTERNAL', `a restore writer thread exited with code ${code}`));
      });
      // The first message a thread gets: the algorithm is known only once the manifest is read.
      worker.postMessage({ op: 'setup', algorithm } satisfies ToWorker);
      this.threads.push(t);
    }
  }

  private onMessage(t: WriterThread, m: FromWorker): void {
    if (m.op === 'ack') {
      t.queued -= m.bytes;
      t.acks.shift()?.(m.crcs, m.written);
    } else if (m.op === 'closed') {
      this.files.delete(m.id);
      take(this.closes, m.id)?.resolve({ size: m.size, checksum: m.checksum });
    } else if (m.op === 'digestedFiles') {
      take(this.checked, m.id)?.resolve(m.facts.map((f) => ({ size: f.size, checksum: f.checksum, ...(f.blocks ? { blocks: Buffer.from(f.blocks.buffer, f.blocks.byteOffset, f.blocks.byteLength) } : {}) })));
    } else if (m.op === 'digested') {
      take(this.digests, m.id)?.resolve(m.checksum);
    } else if (m.op === 'answered') {
      take(this.requests, m.id)?.resolve(m.value);
    } else if (m.op === 'patched') {
      t.patching--;
      take(this.patches, m.id)?.resolve(m.pieces.map((p) => ({ key: p.key, bytes: Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength) })));
    } else if (m.op === 'error') {
      this.fail(m.corrupt ? new WalvaultError('ARCHIVE_CORRUPT', m.message, { fix: 'restore without --delta, or another backup' }) : writeError(m.path, m));
    }
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const m of [this.closes, this.checked, this.digests, this.requests, this.patches]) {
      for (const w of m.values()) w.reject(err);
      m.clear();
    }
    for (const f of this.failed) f(err);
    this.failed = [];
  }

  /** Rejects when any write fails, so a caller waiting on something else learns of it. */
  whenFailed(): Promise<never> {
    return new Promise((_, reject) => {
      if (this.failure) reject(this.failure);
      else this.failed.push(reject);
    });
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  private leastBusy(): WriterThread {
    return this.threads.reduce((a, b) => (b.queued < a.queued ? b : a));
  }

  private post(t: WriterThread, m: ToWorker, bytes = 0, done?: (crcs?: number[], written?: number) => void): void {
    if (done) {
      t.acks.push(done);
      t.queued += bytes;
    }
    t.worker.postMessage(m);
  }

  /**
   * Creates `file` (it must not exist yet) with `mode` for `size` bytes; returns its id. With
   * `patch` (a delta restore's file that differs, of at least PATCH_MIN_SIZE bytes), opens the
   * file there as it is, and each piece is compared with what it holds: only the pages that
   * differ are written.
   */
  open(file: string, mode: number, size: number, patch = false): number {
    this.check();
    const id = this.nextId++;
    if (patch && size < LARGE_FILE) throw new WalvaultError('INTERNAL', `${file}: only files of ${LARGE_FILE} bytes or more are patched in place`);
    if (size < LARGE_FILE) {
      const owner = this.leastBusy();
      this.files.set(id, { kind: 'small', owner });
      this.post(owner, { op: 'open', id, path: file, mode });
      return id;
    }
    let fd: number;
    try {
      fd = fs.openSync(file, patch ? 'r+' : 'wx', mode);
    } catch (err) {
      throw writeError(file, err as NodeJS.ErrnoException);
    }
    this.files.set(id, { kind: 'large', path: file, fd, hasher: this.leastBusy(), position: 0, writesPending: 0, writesDone: null, unflushed: 0, flushing: null, patch, rewritten: 0 });
    return id;
  }

  /**
   * Appends `bytes` (a view of shared memory, left unchanged until `done` runs) to the
   * file `id`.
   */
  write(id: number, bytes: Uint8Array, done: () => void): void {
    this.checkShared(bytes);
    const f = this.files.get(id)!;
    const n = bytes.byteLength;
    if (f.kind === 'small') {
      this.post(f.owner, { op: 'data', id, bytes }, n, done);
      return;
    }
    let left = 2;
    const both = () => {
      if (--left === 0) done();
    };
    this.post(f.hasher, { op: 'hash', id, bytes }, n, both);
    f.writesPending++;
    this.post(this.leastBusy(), { op: 'pwrite', id, fd: f.fd, position: f.position, bytes, path: f.path, ...(f.patch ? { patch: true } : {}) }, n, (_crcs, written) => {
      f.writesPending--;
      f.unflushed += written ?? n;
      f.rewritten += written ?? n;
      if (f.unflushed >= FLUSH_EVERY && !f.flushing) this.flush(f);
      if (f.writesPending === 0) f.writesDone?.();
      both();
    });
    f.position += n;
  }

  /**
   * Places stretches of `bytes` (a view of shared memory, left unchanged until `done`
   * runs) in file `file` of openAt: each [from, to) of `bytes` at file offset `at`, or
   * nowhere (at null). One message for a whole piece, to the thread that opened the file;
   * `done` gets each stretch's CRC-32C when `crc` is asked for (else an empty list), or the
   * pool's failure. The CRCs are taken there too, so a caller that must check what it places
   * (the chain patcher) spends none of its thread on it.
   *
   * One thread per file, not the least busy one: two threads writing one file take turns on
   * its inode lock, spinning while they wait (measured on a chain restore: 0.1 CPU-s per GiB
   * in rwsem_spin_on_owner; with one writer per file, 4 alternating rounds on a copy of the
   * incremental bench's archive: median 9.8 CPU-s (9.5-10.7) against 10.1 (9.5-11.4)).
   */
  place(file: number, path: string, bytes: Uint8Array, stretches: Placement[], crc: boolean, done: (err: Error | null, crcs: number[]) => void): void {
    if (this.failure) return done(this.failure, []);
    this.checkShared(bytes);
    this.post(this.ownerOf(file, path), { op: 'place', file, bytes, stretches, path, crc }, bytes.byteLength, (crcs) => done(this.failure, crcs ?? []));
  }

  /**
   * Opens `path` on a writer thread for place(): 'wx' creates it (it must not exist yet)
   * with `mode`, `size` bytes long and sparse; 'r+' opens it as it is. Returns the file's id
   * at once: the open, the pieces placed and the close are that thread's messages, done in
   * order, so nothing waits for the open. Creating a file costs the kernel up to a
   * millisecond on ext4 (inode allocation), and a round trip for each open held a slab per
   * small file while it waited. A failed open fails the pool. `lane` (laneOf) picks the thread;
   * else the least busy one.
   */
  openAt(path: string, flags: 'wx' | 'r+', mode = 0o600, size: number | null = null, lane: number | null = null): number {
    this.check();
    const file = this.nextId++;
    const t = lane === null ? this.leastBusy() : this.threads[lane];
    this.openedBy.set(file, t);
    this.post(t, { op: 'openAt', file, path, flags, mode, size });
    return file;
  }

  /**
   * The thread (its lane) that file `file` of openAt is opened, written and closed on. Opening
   * a path again on the same lane puts that open after everything posted before on it (a
   * chain member writing into a file a newer one created), with no wait here.
   */
  laneOf(file: number): number {
    return this.threads.indexOf(this.ownerOf(file, `file ${file}`));
  }

  /** Closes file `file` of openAt, on the thread that opened it; fsynced first if `sync`. */
  async closeAt(file: number, path: string, sync = false): Promise<void> {
    const t = this.ownerOf(file, path);
    this.openedBy.delete(file);
    await this.request(t, (id) => ({ op: 'closeAt', id, file, path, sync }));
  }

  private ownerOf(file: number, path: string): WriterThread {
    const t = this.openedBy.get(file);
    if (!t) throw new WalvaultError('INTERNAL', `${path} (file ${file}) was not opened by the restore's writer threads`);
    return t;
  }

  private request(t: WriterThread, message: (id: number) => ToWorker): Promise<number> {
    this.check();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.requests.set(id, { resolve, reject });
      this.post(t, message(id));
    });
  }

  private checkShared(bytes: Uint8Array): void {
    this.check();
    if (!(bytes.buffer instanceof SharedArrayBuffer)) throw new WalvaultError('INTERNAL', 'restore writers take shared memory only');
  }

  private flush(f: LargeFile): void {
    f.unflushed = 0;
    f.flushing = new Promise<void>((resolve) => {
      fs.fdatasync(f.fd, (err) => {
        if (err) this.fail(writeError(f.path, err));
        f.flushing = null;
        resolve();
      });
    });
  }

  /** Ends the file: resolves, once it is fsynced and closed, with its size and SHA-256. */
  close(id: number): Promise<WrittenFile> {
    this.check();
    const f = this.files.get(id)!;
    if (f.kind === 'small') {
      return new Promise((resolve, reject) => {
        this.closes.set(id, { resolve, reject });
        this.post(f.owner, { op: 'close', id });
      });
    }
    const digest = new Promise<string>((resolve, reject) => {
      this.digests.set(id, { resolve, reject });
      this.post(f.hasher, { op: 'digest', id });
    });
    const written = f.writesPending === 0 ? Promise.resolve() : new Promise<void>((resolve) => (f.writesDone = resolve));
    return (async () => {
      const checksum = await digest;
      await written;
      await f.flushing;
      try {
        // A file patched in place ends where the backup's does.
        if (f.patch) await new Promise<void>((resolve, reject) => fs.ftruncate(f.fd, f.position, (err) => (err ? reject(err) : resolve())));
        await new Promise<void>((resolve, reject) => fs.fsync(f.fd, (err) => (err ? reject(err) : resolve())));
      } catch (err) {
        throw writeError(f.path, err as NodeJS.ErrnoException);
      } finally {
        fs.close(f.fd, () => undefined);
        this.files.delete(id);
      }
      return { size: f.position, checksum, ...(f.patch ? { rewritten: f.rewritten } : {}) };
    })();
  }

  /**
   * Reads existing files and checksums them (a delta restore's check; what each request reads:
   * ./digest-plan.ts), through one buffer per thread whatever the files' sizes. `each` gets a
   * file's size and checksum (with `blockSize`, its block hashes instead) as it is done (the
   * lane's next request waits for what it returns); a file that cannot be read fails the pool.
   */
  async digestFiles(files: readonly string[], each: (index: number, facts: WrittenFile) => void | Promise<void>, blockSize?: number, sizes?: readonly number[]): Promise<void> {
    const plan = new DigestPlan(files.length, sizes, !!blockSize);
    let next = 0;
    const lane = async (t: WriterThread) => {
      while (next < plan.items.length) {
        this.check();
        const item = plan.items[next++];
        const id = this.nextId++;
        const facts = await new Promise<WrittenFile[]>((resolve, reject) => {
          this.checked.set(id, { resolve, reject });
          this.post(t, { op: 'digestFiles', id, paths: item.files.map((f) => files[f]), ...(blockSize ? { blockSize } : {}), ...(item.range ? { range: item.range } : {}) });
        });
        for (const [file, whole] of plan.done(item, facts)) await each(file, whole);
      }
    };
    // Two lanes a thread: its next file is there when it finishes one, not after this thread has
    // taken the result and posted again (it may be busy with a part, say). Half the threads
    // (at least one) check; patchPart sends parts to the others while they do.
    const checkers = this.threads.slice(0, Math.ceil(this.threads.length / 2));
    await Promise.all(
      [...checkers, ...checkers].map(async (t) => {
        t.checking++;
        try {
          await lane(t);
        } finally {
          t.checking--;
        }
      }),
    );
  }

  /**
   * A delta restore's blocks out of one backup part, on the least busy thread: see the
   * thread's patchPart. `stored` in shared memory is shared, and must be left alone until
   * this resolves; otherwise its bytes are handed over (unusable here after). Resolves to the
   * pieces of blocks that span parts.
   */
  patchPart(part: { stored: Buffer; keys: FrameKeys; frames: FrameRef[]; writes: PartWrite[] }): Promise<Array<{ key: string; bytes: Buffer }>> {
    this.check();
    // A thread still checking takes no part while another thread does not check.
    const free = this.threads.filter((t) => t.checking === 0);
    const t = (free.length > 0 ? free : this.threads).reduce((a, b) => (b.patching < a.patching ? b : a));
    const id = this.nextId++;
    const shared = part.stored.buffer instanceof SharedArrayBuffer;
    const own = !shared && part.stored.byteOffset === 0 && part.stored.byteLength === part.stored.buffer.byteLength;
    const stored = shared || own ? new Uint8Array(part.stored.buffer, part.stored.byteOffset, part.stored.byteLength) : new Uint8Array(part.stored);
    const keys = { ...part.keys, dataKey: part.keys.dataKey ? new Uint8Array(part.keys.dataKey) : null };
    t.patching++;
    return new Promise((resolve, reject) => {
      this.patches.set(id, { resolve, reject });
      t.worker.postMessage({ op: 'patchPart', id, stored, keys, frames: part.frames, writes: part.writes } satisfies ToWorker, shared ? [] : [stored.buffer as ArrayBuffer]);
    });
  }

  /** Stops the threads, closing the files a failure left open (as they are). */
  async destroy(): Promise<void> {
    for (const f of this.files.values()) if (f.kind === 'large') fs.close(f.fd, () => undefined);
    this.files.clear();
    await Promise.all(
      this.threads.map(
        (t) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void t.worker.terminate().then(() => resolve()), 5000);
            t.worker.on('message', (m: FromWorker) => {
              if (m.op !== 'aborted') return;
              clearTimeout(timer);
              void t.worker.terminate().then(() => resolve());
            });
            t.worker.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            t.worker.postMessage({ op: 'abort' } satisfies ToWorker);
          }),
      ),
    );
  }
}

function take<T>(m: Map<number, T>, id: number): T | undefined {
  const v = m.get(id);
  m.delete(id);
  return v;
}
