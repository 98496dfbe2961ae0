/**
 * SHA-256 in worker threads, fed incrementally as an object is read, so hashing a restore's
 * parts (or everything `verify` reads) runs beside the main thread's decoding, parsing and
 * writing instead of on it.
 *
 * Each hash lives in one worker for its whole stream (SHA-256 is sequential). A large chunk
 * in shared memory (a storage read window) is hashed where it is: the worker reads the view,
 * and update() resolves once it has, so the caller reuses the memory only then. Other bytes
 * are copied into 1 MiB blocks (small chunks packed together), each transferred to the
 * worker without a second copy and transferred back with the acknowledgement for reuse: a
 * steady stream allocates nothing. A restore of an uncompressed archive hashes every byte it
 * writes, so the copy this skips was a third of its main thread's time. A stream with more
 * than a few blocks unacknowledged waits (update() returns a promise), so memory stays
 * bounded when the workers fall behind.
 * Workers are unref'd while they have nothing to do, so the pool never keeps a process alive,
 * and stopped after IDLE_STOP_MS without work (a daemon runs a restore drill now and then).
 */
import { createHash, type Hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { WalvaultError } from '../../errors';
import type { Hasher, HasherFactory } from './hashers';

const BLOCK = 1 << 20;
/** Shared-memory chunks from this size on are hashed in place; smaller ones are packed into a block. */
const IN_PLACE_MIN = 64 * 1024;
/** Blocks one stream may have in its worker's queue before update() waits. */
const QUEUED_BLOCKS = 4;
const ROLE = 'walvault-sha256';
const IDLE_STOP_MS = 10_000;

type ToWorker =
  | { op: 'update'; id: number; block: ArrayBuffer; length: number }
  /** A view of shared memory, read in place. */
  | { op: 'view'; id: number; view: Uint8Array }
  | { op: 'digest'; id: number }
  | { op: 'drop'; id: number };
type FromWorker = { op: 'ack'; id: number; block: ArrayBuffer | null } | { op: 'digest'; id: number; digest: Uint8Array };

interface PooledWorker {
  worker: Worker;
  streams: Map<number, WorkerSha256>;
  /** Messages whose answer is awaited: the worker is ref'd while there are any. */
  awaited: number;
}

let pool: PooledWorker[] | null = null;
let nextId = 1;
let idleTimer: NodeJS.Timeout | null = null;

/** Once no worker has anything to do, stops the pool after a while (the next hasher starts a new one). */
function stopWhenIdle(): void {
  if (idleTimer !== null || pool === null || pool.some((w) => w.awaited > 0 || w.streams.size > 0)) return;
  idleTimer = setTimeout(() => {
    idleTimer = null;
    if (pool === null || pool.some((w) => w.awaited > 0 || w.streams.size > 0)) return;
    const stopping = pool;
    pool = null;
    for (const w of stopping) void w.worker.terminate();
  }, IDLE_STOP_MS);
  idleTimer.unref();
}
/** Blocks back from the workers, for the next update. */
const freeBlocks: ArrayBuffer[] = [];

function startPool(): PooledWorker[] {
  // Two at most: the readers that use them (restore, verify) keep the main thread busy too.
  const size = Math.max(1, Math.min(2, availableParallelism()));
  const workers: PooledWorker[] = [];
  for (let i = 0; i < size; i++) {
    const worker = new Worker(__filename, { workerData: { role: ROLE }, resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 32 } });
    const entry: PooledWorker = { worker, streams: new Map(), awaited: 0 };
    worker.on('message', (msg: FromWorker) => {
      entry.awaited--;
      if (entry.awaited === 0) {
        worker.unref();
        queueMicrotask(stopWhenIdle);
      }
      const stream = entry.streams.get(msg.id);
      if (msg.op === 'ack') {
        if (msg.block && freeBlocks.length < 8) freeBlocks.push(msg.block);
        stream?.acked();
      } else {
        entry.streams.delete(msg.id);
        stream?.settle(Buffer.from(msg.digest.buffer, msg.digest.byteOffset, msg.digest.byteLength));
      }
    });
    const fail = (err: Error) => {
      for (const s of entry.streams.values()) s.fail(err);
      entry.streams.clear();
      if (pool) pool = pool.filter((w) => w !== entry);
      if (pool?.length === 0) pool = null;
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the hashing worker exited with code ${code}`)));
    worker.unref();
    workers.push(entry);
  }
  return workers;
}

class WorkerSha256 implements Hasher {
  private block: Buffer | null = null;
  private filled = 0;
  private queued = 0;
  /** Per message sent and not yet acknowledged, in order: what runs on its ack (for in-place views). */
  private readonly onAck: Array<(() => void) | null> = [];
  private waiting: (() => void) | null = null;
  private result: { resolve(d: Buffer): void; reject(e: Error): void } | null = null;
  private failure: Error | null = null;
  private finished = false;

  constructor(
    private readonly entry: PooledWorker,
    private readonly id: number,
  ) {
    entry.streams.set(id, this);
  }

  update(data: Buffer): void | Promise<void> {
    this.throwIfFailed();
    if (data.buffer instanceof SharedArrayBuffer && data.length >= IN_PLACE_MIN) {
      if (this.filled > 0) this.send();
      return new Promise<void>((resolve) => {
        this.queued++;
        this.onAck.push(resolve);
        this.post({ op: 'view', id: this.id, view: data });
      }).then(() => this.throwIfFailed());
    }
    let at = 0;
    while (at < data.length) {
      if (this.block === null) {
        const reused = freeBlocks.pop();
        this.block = reused ? Buffer.from(reused) : Buffer.allocUnsafeSlow(BLOCK);
        this.filled = 0;
      }
      const n = data.copy(this.block, this.filled, at);
      at += n;
      this.filled += n;
      if (this.filled === BLOCK) this.send();
    }
    if (this.queued > QUEUED_BLOCKS) return new Promise<void>((resolve) => (this.waiting = resolve)).then(() => this.throwIfFailed());
  }

  digest(): Promise<Buffer> {
    this.throwIfFailed();
    if (this.filled > 0) this.send();
    this.finished = true;
    return new Promise<Buffer>((resolve, reject) => {
      this.result = { resolve, reject };
      this.post({ op: 'digest', id: this.id });
    });
  }

  dispose(): void {
    if (this.finished || this.failure) return;
    this.finished = true;
    this.entry.streams.delete(this.id);
    // Its acks no longer reach it: nobody waits on a hash that is thrown away.
    for (const f of this.onAck.splice(0)) f?.();
    queueMicrotask(stopWhenIdle);
    this.entry.worker.postMessage({ op: 'drop', id: this.id } satisfies ToWorker);
  }

  acked(): void {
    this.queued--;
    this.onAck.shift()?.();
    if (this.queued <= QUEUED_BLOCKS && this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w();
    }
  }

  settle(digest: Buffer): void {
    this.result?.resolve(digest);
  }

  fail(err: Error): void {
    this.failure = new WalvaultError('INTERNAL', `SHA-256 in a worker thread failed: ${err.message}`, { cause: err });
    this.result?.reject(this.failure);
    for (const f of this.onAck.splice(0)) f?.();
    this.waiting?.();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  private send(): void {
    const block = this.block!;
    const message: ToWorker = { op: 'update', id: this.id, block: block.buffer as ArrayBuffer, length: this.filled };
    this.block = null;
    this.filled = 0;
    this.queued++;
    this.onAck.push(null);
    this.post(message, [message.block]);
  }

  private post(message: ToWorker, transfer: ArrayBuffer[] = []): void {
    if (this.entry.awaited++ === 0) this.entry.worker.ref();
    this.entry.worker.postMessage(message, transfer);
  }
}

/** A SHA-256 computed in the worker pool. */
export const workerSha256: HasherFactory = () => {
  if (idleTimer !== null) clearTimeout(idleTimer);
  idleTimer = null;
  pool ??= startPool();
  const entry = pool.reduce((a, b) => (b.streams.size < a.streams.size ? b : a));
  return new WorkerSha256(entry, nextId++);
};

if (!isMainThread && parentPort && (workerData as { role?: string } | null)?.role === ROLE) {
  const port = parentPort;
  const hashes = new Map<number, Hash>();
  port.on('message', (msg: ToWorker) => {
    if (msg.op === 'update') {
      let hash = hashes.get(msg.id);
      if (!hash) hashes.set(msg.id, (hash = createHash('sha256')));
      hash.update(new Uint8Array(msg.block, 0, msg.length));
      port.postMessage({ op: 'ack', id: msg.id, block: msg.block } satisfies FromWorker, [msg.block]);
    } else if (msg.op === 'view') {
      let hash = hashes.get(msg.id);
      if (!hash) hashes.set(msg.id, (hash = createHash('sha256')));
      hash.update(msg.view);
      port.postMessage({ op: 'ack', id: msg.id, block: null } satisfies FromWorker);
    } else if (msg.op === 'digest') {
      const digest = (hashes.get(msg.id) ?? createHash('sha256')).digest();
      hashes.delete(msg.id);
      const own = new Uint8Array(digest);
      port.postMessage({ op: 'digest', id: msg.id, digest: own } satisfies FromWorker, [own.buffer as ArrayBuffer]);
    } else {
      hashes.delete(msg.id);
    }
  });
}
