/**
 * The write path's CPU work off the main thread, in one pool of worker threads: zstd
 * compression of frames, and SHA-256 of whole backup parts. zstd-napi only compresses
 * synchronously, and a millisecond-long call per frame (or hashing a 4 MiB part) on the event
 * loop would delay reading the replication or BASE_BACKUP socket. The pool starts on first use
 * and its workers are unref'd, so an idle pool never keeps the process alive. (Reads hash
 * incrementally in ./read/hash-worker.ts.)
 *
 * The module depends on nothing of the archive's: callers pass the zstd level with each frame
 * (./codecs.ts owns it), so the worker loads only zstd-napi.
 *
 * The write path passes frames in shared memory (window buffers, backup part buffers), which
 * the worker reads in place, and compresses into a pooled output buffer in shared memory
 * (`zstdCompressInto`): nothing is copied into or out of the worker and nothing is allocated
 * per frame. A frame in an ordinary buffer is copied to the worker (the caller's buffer may be
 * refilled before the worker gets to it); `zstdCompressInWorker`'s result is transferred back
 * without a copy.
 */
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { WalvaultError } from '../errors';

/** What a worker answers: a buffer (compressed frame, digest), or a length written into `out` (several: a batch). */
interface Answer {
  id: number;
  out?: Uint8Array;
  length?: number;
  lengths?: number[];
  error?: string;
}

interface Job {
  resolve(answer: Answer): void;
  reject(err: Error): void;
}

interface PooledWorker {
  worker: Worker;
  pending: Map<number, Job>;
}

/** Marks this module's own workers: other threads (a site's receiver thread) load it too. */
const ROLE = 'walvault-compress-hash';

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
    const worker = new Worker(__filename, { workerData: { role: ROLE }, resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 32 } });
    const entry: PooledWorker = { worker, pending: new Map() };
    worker.on('message', (msg: Answer) => {
      const job = entry.pending.get(msg.id);
      if (!job) return;
      entry.pending.delete(msg.id);
      if (entry.pending.size === 0) worker.unref();
      if (msg.error !== undefined) job.reject(new WalvaultError('INTERNAL', `compression or hashing in a worker thread failed: ${msg.error}`));
      else job.resolve(msg);
    });
    worker.on('error', (err) => failAll(entry, err));
    worker.on('exit', (code) => {
      failAll(entry, new Error(`worker exited with code ${code}`));
      if (pool) pool = pool.filter((w) => w !== entry);
      if (pool && pool.length === 0) pool = null;
    });
    worker.unref();
    workers.push(entry);
  }
  return workers;
}

function failAll(entry: PooledWorker, err: Error): void {
  for (const job of entry.pending.values()) job.reject(new WalvaultError('INTERNAL', `compression or hashing in a worker thread failed: ${err.message}`, { cause: err }));
  entry.pending.clear();
}

type Op = 'zstd' | 'zstd-into' | 'zstd-batch' | 'sha256';

function inWorker(op: Op, frame: Buffer, level: number, out?: Buffer, cuts?: number[]): Promise<Answer> {
  pool ??= startPool();
  const entry = pool.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  const id = nextJobId++;
  // A frame in shared memory is read by the worker in place; any other is copied, since its
  // buffer is usually refilled before the worker gets to it.
  const shared = isShared(frame);
  const message = {
    id,
    op,
    level,
    frame: shared ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength) : Uint8Array.from(frame),
    ...(out ? { out: new Uint8Array(out.buffer, out.byteOffset, out.byteLength) } : {}),
    ...(cuts ? { cuts } : {}),
  };
  return new Promise((resolve, reject) => {
    entry.pending.set(id, { resolve, reject });
    entry.worker.ref();
    entry.worker.postMessage(message, shared ? [] : [message.frame.buffer as ArrayBuffer]);
  });
}

function isShared(buf: Buffer): boolean {
  return buf.buffer instanceof SharedArrayBuffer;
}

function asBuffer(answer: Answer): Buffer {
  return Buffer.from(answer.out!.buffer, answer.out!.byteOffset, answer.out!.byteLength);
}

/** The largest zstd output for `n` bytes of input (ZSTD_COMPRESSBOUND in zstd.h). */
export function zstdBound(n: number): number {
  const small = 128 * 1024;
  return n + (n >>> 8) + (n < small ? (small - n) >>> 11 : 0);
}

export function zstdCompressInWorker(frame: Buffer, level: number): Promise<Buffer> {
  return inWorker('zstd', frame, level).then(asBuffer);
}

/**
 * Compresses `frame` into `out`, a buffer in shared memory of at least zstdBound(frame.length)
 * bytes that the caller leaves alone until this settles; resolves to the compressed length.
 */
export async function zstdCompressInto(frame: Buffer, out: Buffer, level: number): Promise<number> {
  if (!isShared(out) || out.length < zstdBound(frame.length)) throw new WalvaultError('INTERNAL', 'zstd output buffer must be shared memory of zstdBound(frame) bytes');
  return (await inWorker('zstd-into', frame, level, out)).length!;
}

/** Room in `out` for the frames of a batch: each frame's bound, one after another. */
export function zstdBatchBound(cuts: readonly number[]): number {
  return cuts.reduce((sum, n) => sum + zstdBound(n), 0);
}

/**
 * Compresses consecutive frames of `frames` (their lengths in `cuts`, summing to its length)
 * in one message to a worker, each into `out` at the sum of the bounds of those before it
 * (zstdBatchBound): small frames (a backup part's 32 KiB) would otherwise cost a message
 * each, more than their compression. Resolves to each frame's compressed length.
 */
export async function zstdCompressBatchInto(frames: Buffer, cuts: number[], out: Buffer, level: number): Promise<number[]> {
  if (!isShared(out) || out.length < zstdBatchBound(cuts)) throw new WalvaultError('INTERNAL', 'zstd batch output buffer must be shared memory of zstdBatchBound(cuts) bytes');
  return (await inWorker('zstd-batch', frames, level, out, cuts)).lengths!;
}

/**
 * SHA-256 of `data` in a worker: for large buffers in shared memory (backup parts), whose
 * hashing would otherwise take the main thread away from the socket.
 */
export function sha256InWorker(data: Buffer): Promise<Buffer> {
  return inWorker('sha256', data, 0).then(asBuffer);
}

if (!isMainThread && parentPort && (workerData as { role?: string } | null)?.role === ROLE) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const zstd = require('zstd-napi') as typeof import('zstd-napi');
  // The binding's context compresses into a buffer it is given (the high-level API allocates
  // a result and copies it when it is much smaller than the bound).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const binding = require('zstd-napi/binding') as typeof import('zstd-napi/binding');
  const cctx = new binding.CCtx();
  const port = parentPort;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  port.on('message', (msg: { id: number; op: Op; level: number; frame: Uint8Array; out?: Uint8Array; cuts?: number[] }) => {
    try {
      if (msg.op === 'zstd-into') {
        port.postMessage({ id: msg.id, length: cctx.compress(msg.out!, msg.frame, msg.level) });
        return;
      }
      if (msg.op === 'zstd-batch') {
        const lengths: number[] = [];
        let from = 0;
        let to = 0;
        for (const n of msg.cuts!) {
          const bound = zstdBound(n);
          lengths.push(cctx.compress(msg.out!.subarray(to, to + bound), msg.frame.subarray(from, from + n), msg.level));
          from += n;
          to += bound;
        }
        port.postMessage({ id: msg.id, lengths });
        return;
      }
      const out = msg.op === 'sha256' ? createHash('sha256').update(msg.frame).digest() : zstd.compress(msg.frame, { compressionLevel: msg.level });
      const view = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      // A result sharing a larger or pooled ArrayBuffer must be copied before transfer.
      const own = out.byteOffset === 0 && out.buffer.byteLength === out.byteLength ? view : view.slice();
      port.postMessage({ id: msg.id, out: own }, [own.buffer as ArrayBuffer]);
    } catch (err) {
      port.postMessage({ id: msg.id, error: (err as Error).message });
    }
  });
}
