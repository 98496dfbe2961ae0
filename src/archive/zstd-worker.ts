/**
 * zstd compression off the main thread. zstd-napi only compresses synchronously, and a
 * millisecond-long call per frame on the event loop would delay reading the replication
 * socket; worker threads keep it away. The pool starts on first use and its workers are
 * unref'd, so an idle pool never keeps the process alive.
 *
 * Frames are copied to the worker (the caller's buffer is usually a reused window) and the
 * compressed result is transferred back without a copy.
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
  const size = Math.max(1, Math.min(2, availableParallelism() - 1));
  const workers: PooledWorker[] = [];
  for (let i = 0; i < size; i++) {
    const worker = new Worker(__filename);
    const entry: PooledWorker = { worker, pending: new Map() };
    worker.on('message', (msg: { id: number; out?: Uint8Array; error?: string }) => {
      const job = entry.pending.get(msg.id);
      if (!job) return;
      entry.pending.delete(msg.id);
      if (entry.pending.size === 0) worker.unref();
      if (msg.error !== undefined) job.reject(new WalvaultError('INTERNAL', `zstd compression failed: ${msg.error}`));
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

export function zstdCompressInWorker(frame: Buffer): Promise<Buffer> {
  pool ??= startPool();
  const entry = pool.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  const id = nextJobId++;
  const copy = new Uint8Array(frame.length);
  copy.set(frame);
  return new Promise((resolve, reject) => {
    entry.pending.set(id, { resolve, reject });
    entry.worker.ref();
    entry.worker.postMessage({ id, frame: copy }, [copy.buffer]);
  });
}

if (!isMainThread && parentPort) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const zstd = require('zstd-napi') as typeof import('zstd-napi');
  // Imported lazily above; the level lives with the other codec settings.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { ZSTD_LEVEL } = require('./codecs') as typeof import('./codecs');
  const port = parentPort;
  port.on('message', (msg: { id: number; frame: Uint8Array }) => {
    try {
      const out = zstd.compress(msg.frame, { compressionLevel: ZSTD_LEVEL });
      const view = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      // A result sharing a larger or pooled ArrayBuffer must be copied before transfer.
      const own = out.byteOffset === 0 && out.buffer.byteLength === out.byteLength ? view : view.slice();
      port.postMessage({ id: msg.id, out: own }, [own.buffer as ArrayBuffer]);
    } catch (err) {
      port.postMessage({ id: msg.id, error: (err as Error).message });
    }
  });
}
