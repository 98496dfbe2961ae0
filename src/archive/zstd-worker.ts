/**
 * zstd compression off the main thread. zstd-napi only compresses synchronously, and a
 * millisecond-long call per frame on the event loop would delay reading the replication
 * socket; worker threads keep it away. The pool starts on first use and its workers are
 * unref'd, so an idle pool never keeps the process alive.
 *
 * Frames are copied to the worker (the caller's buffer is usually a reused window), except
 * frames in a SharedArrayBuffer, which the worker reads in place; the caller keeps such a
 * frame unchanged until the promise settles. The compressed result is transferred back
 * without a copy.
 */
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { WalvaultError } from '../errors';

interface Job {
  resolve(buf: Buffer): void;
  reject(err: Error): void;
}

interface PooledWorker {
  worker: Worker;
  pending: Map<number, Job>;
}

let pool: PooledWorker[] | null = null;
let nextJobId = 1;

function startPool(): PooledWorker[] {
  // One worker per core, up to four: a base backup keeps several parts compressing at once,
  // and an idle worker costs only its memory (the receiver rarely keeps more than one busy).
  const size = Math.max(1, Math.min(4, availableParallelism()));
  const workers: PooledWorker[] = [];
  for (let i = 0; i < size; i++) {
    // A worker keeps nothing between frames: small heap limits keep garbage frames from
    // growing its resident set.
    const worker = new Worker(__filename, { resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 32 } });
    const entry: PooledWorker = { worker, pending: new Map() };
    worker.on('message', (msg: { id: number; out?: Uint8Array; error?: string }) => {
      const job = entry.pending.get(msg.id);
      if (!job) return;
      entry.pending.delete(msg.id);
      if (entry.pending.size === 0) worker.unref();
      if (msg.error !== undefined) job.reject(new WalvaultError('INTERNAL', `compression worker failed: ${msg.error}`));
      else job.resolve(Buffer.from(msg.out!.buffer, msg.out!.byteOffset, msg.out!.byteLength));
    });
    worker.on('error', (err) => failAll(entry, err));
    worker.on('exit', (code) => {
      failAll(entry, new Error(`zstd worker exited with code ${code}`));
      if (pool) pool = pool.filter((w) => w !== entry);
      if (pool && pool.length === 0) pool = null;
    });
    worker.unref();
    workers.push(entry);
  }
  return workers;
}

function failAll(entry: PooledWorker, err: Error): void {
  for (const job of entry.pending.values()) job.reject(new WalvaultError('INTERNAL', `zstd compression failed: ${err.message}`, { cause: err }));
  entry.pending.clear();
}

type Op = 'zstd' | 'sha256';

function inWorker(op: Op, frame: Buffer): Promise<Buffer> {
  pool ??= startPool();
  const entry = pool.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  const id = nextJobId++;
  // A frame in shared memory (a backup part buffer) is read by the worker in place; any
  // other is copied, since its buffer is usually refilled before the worker gets to it.
  const shared = frame.buffer instanceof SharedArrayBuffer;
  const message = { id, op, frame: shared ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength) : Uint8Array.from(frame) };
  return new Promise((resolve, reject) => {
    entry.pending.set(id, { resolve, reject });
    entry.worker.ref();
    entry.worker.postMessage(message, shared ? [] : [message.frame.buffer as ArrayBuffer]);
  });
}

export function zstdCompressInWorker(frame: Buffer): Promise<Buffer> {
  return inWorker('zstd', frame);
}

/**
 * SHA-256 of `data` in a worker: for large buffers in shared memory (backup parts), whose
 * hashing would otherwise take the main thread away from the socket.
 */
export function sha256InWorker(data: Buffer): Promise<Buffer> {
  return inWorker('sha256', data);
}

if (!isMainThread && parentPort) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const zstd = require('zstd-napi') as typeof import('zstd-napi');
  // Imported lazily above; the level lives with the other codec settings.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { ZSTD_LEVEL } = require('./codecs') as typeof import('./codecs');
  const port = parentPort;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  port.on('message', (msg: { id: number; op: Op; frame: Uint8Array }) => {
    try {
      const out = msg.op === 'sha256' ? createHash('sha256').update(msg.frame).digest() : zstd.compress(msg.frame, { compressionLevel: ZSTD_LEVEL });
      const view = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      // A result sharing a larger or pooled ArrayBuffer must be copied before transfer.
      const own = out.byteOffset === 0 && out.buffer.byteLength === out.byteLength ? view : view.slice();
      port.postMessage({ id: msg.id, out: own }, [own.buffer as ArrayBuffer]);
    } catch (err) {
      port.postMessage({ id: msg.id, error: (err as Error).message });
    }
  });
}
