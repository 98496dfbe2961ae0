/**
 * Counts, in every thread of the process, the bytes the write path copies and hashes, so a
 * change to it shows as numbers that do not depend on how busy the machine is. Loaded with
 * `node -r dist/bench/byte-counter.js` (bench/write-path-bench.ts re-runs itself that way);
 * worker threads load it too (Node preloads `-r` modules in workers), and report their
 * counts to the main thread over a BroadcastChannel when asked.
 *
 * What counts, by the JavaScript call that does it (Node's internals call captured
 * primordials, so nothing is counted twice):
 *   copy    Buffer.concat, Buffer.from(<bytes>), Uint8Array.from, %TypedArray%.slice,
 *           Buffer#copy, %TypedArray%#set: bytes duplicated in memory
 *   sha256  Hash#update of sha256 hashes, webcrypto digest (which also copies its input)
 *   read    bytes read from files (FileHandle#read): the kernel's copy into our buffers
 *   write   bytes written to files (FileHandle#write and #writev)
 * Not counted: bytes the kernel copies for sockets (the HTTP request body, the response
 * read back), and compression and encryption output (produced, not copied).
 */
import type * as Crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { BroadcastChannel, isMainThread, threadId } from 'node:worker_threads';

export interface ByteCounts {
  copy: number;
  sha256: number;
  read: number;
  write: number;
  /** Copies by the call that made them, e.g. "Buffer.concat". */
  copyBy: Record<string, number>;
}

const CHANNEL = 'walvault-bench-byte-counter';

function empty(): ByteCounts {
  return { copy: 0, sha256: 0, read: 0, write: 0, copyBy: {} };
}

let counts = empty();
/** Off while the counter's own bookkeeping runs (structured clone of counts, say). */
let counting = true;

function copied(by: string, n: number): void {
  if (!counting || n <= 0) return;
  counts.copy += n;
  counts.copyBy[by] = (counts.copyBy[by] ?? 0) + n;
}

function isBytes(v: unknown): v is ArrayBufferView {
  return ArrayBuffer.isView(v) && !(v instanceof DataView);
}

/** Installs the counter in this thread (the preload does it when WALVAULT_BYTE_COUNTER=1). */
export function installByteCounter(): Promise<void> {
  const g = globalThis as { __walvaultByteCounter?: boolean };
  if (g.__walvaultByteCounter) return fileCountsReady;
  g.__walvaultByteCounter = true;

  const concat = Buffer.concat;
  Buffer.concat = function (list: readonly Uint8Array[], total?: number) {
    const out = concat.call(Buffer, list, total);
    copied('Buffer.concat', out.length);
    return out;
  } as typeof Buffer.concat;

  const from = Buffer.from;
  Buffer.from = function (this: unknown, value: unknown, ...rest: unknown[]) {
    const out = (from as (...a: unknown[]) => Buffer).call(Buffer, value, ...rest);
    if (isBytes(value)) copied('Buffer.from', out.length);
    return out;
  } as typeof Buffer.from;

  const u8from = Uint8Array.from;
  Uint8Array.from = function (this: unknown, src: unknown, ...rest: unknown[]) {
    const out = (u8from as (...a: unknown[]) => Uint8Array).call(this ?? Uint8Array, src, ...rest);
    if (isBytes(src)) copied('Uint8Array.from', out.length);
    return out;
  } as typeof Uint8Array.from;

  const typedProto = Object.getPrototypeOf(Uint8Array.prototype) as { slice: (...a: unknown[]) => Uint8Array; set: (...a: unknown[]) => void };
  const slice = typedProto.slice;
  typedProto.slice = function (this: Uint8Array, ...a: unknown[]) {
    const out = slice.apply(this, a);
    copied('TypedArray#slice', out.byteLength);
    return out;
  };
  const set = typedProto.set;
  typedProto.set = function (this: Uint8Array, src: unknown, ...a: unknown[]) {
    set.call(this, src, ...a);
    if (isBytes(src)) copied('TypedArray#set', src.byteLength);
  };
  const bufCopy = Buffer.prototype.copy;
  Buffer.prototype.copy = function (this: Buffer, ...a: unknown[]) {
    const n = (bufCopy as (...x: unknown[]) => number).apply(this, a);
    copied('Buffer#copy', n);
    return n;
  } as typeof Buffer.prototype.copy;

  // The module object itself (an import would give a read-only namespace copy).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const crypto = require('node:crypto') as typeof Crypto;
  const algorithms = new WeakMap<object, string>();
  const createHash = crypto.createHash;
  (crypto as { createHash: typeof crypto.createHash }).createHash = function (algorithm: string, options?: Crypto.HashOptions) {
    const h = createHash(algorithm, options);
    algorithms.set(h, algorithm.toLowerCase());
    return h;
  } as typeof crypto.createHash;
  const hashProto = Object.getPrototypeOf(createHash('sha256')) as { update: (...a: unknown[]) => unknown; copy: (...a: unknown[]) => unknown };
  const update = hashProto.update;
  hashProto.update = function (this: object, data: unknown, ...a: unknown[]) {
    if (counting && algorithms.get(this) === 'sha256') counts.sha256 += isBytes(data) ? data.byteLength : Buffer.byteLength(String(data));
    return update.call(this, data, ...a);
  };
  // A copy of a hash state hashes the same algorithm.
  const hashCopy = hashProto.copy;
  hashProto.copy = function (this: object, ...a: unknown[]) {
    const c = hashCopy.apply(this, a) as object;
    const alg = algorithms.get(this);
    if (alg !== undefined) algorithms.set(c, alg);
    return c;
  };
  const subtle = crypto.webcrypto.subtle as unknown as { digest: (alg: unknown, data: ArrayBufferView | ArrayBuffer) => Promise<ArrayBuffer> };
  const digest = subtle.digest.bind(subtle);
  subtle.digest = (alg, data) => {
    const n = data.byteLength;
    if (counting && /sha-?256/i.test(typeof alg === 'string' ? alg : String((alg as { name?: string })?.name))) counts.sha256 += n;
    copied('webcrypto.digest', n);
    return digest(alg, data);
  };

  // FileHandle is not exported: reach its prototype through a handle's.
  fileCountsReady = fsp.open(__filename, 'r').then(async (h) => {
    const proto = Object.getPrototypeOf(h) as { read: (...a: unknown[]) => Promise<{ bytesRead: number }>; write: (...a: unknown[]) => Promise<{ bytesWritten: number }>; writev: (...a: unknown[]) => Promise<{ bytesWritten: number }> };
    await h.close();
    const read = proto.read;
    proto.read = async function (this: unknown, ...a: unknown[]) {
      const r = await read.apply(this, a);
      if (counting) counts.read += r.bytesRead;
      return r;
    };
    for (const name of ['write', 'writev'] as const) {
      const orig = proto[name];
      proto[name] = async function (this: unknown, ...a: unknown[]) {
        const r = await orig.apply(this, a);
        if (counting) counts.write += r.bytesWritten;
        return r;
      };
    }
  });

  const channel = new BroadcastChannel(CHANNEL);
  (channel as unknown as { unref(): void }).unref();
  if (!isMainThread) {
    channel.onmessage = (ev: unknown) => {
      const msg = (ev as { data: { op: string } }).data;
      if (msg.op === 'collect') {
        counting = false;
        channel.postMessage({ op: 'counts', thread: threadId, counts });
        counts = empty();
        counting = true;
      } else if (msg.op === 'reset') {
        counts = empty();
      }
    };
  } else {
    mainChannel = channel;
  }
  return fileCountsReady;
}

/** Settles once file reads and writes are counted too (their prototype is reached asynchronously). */
let fileCountsReady: Promise<void> = Promise.resolve();

let mainChannel: BroadcastChannel | null = null;

export function counterInstalled(): boolean {
  return (globalThis as { __walvaultByteCounter?: boolean }).__walvaultByteCounter === true;
}

function add(into: ByteCounts, from: ByteCounts): void {
  into.copy += from.copy;
  into.sha256 += from.sha256;
  into.read += from.read;
  into.write += from.write;
  for (const [k, v] of Object.entries(from.copyBy)) into.copyBy[k] = (into.copyBy[k] ?? 0) + v;
}

/** Zeroes the counts of every thread. */
export function resetCounts(): void {
  counts = empty();
  mainChannel?.postMessage({ op: 'reset' });
}

/**
 * The counts of every thread since the last reset (and resets them). Workers answer over the
 * channel: their answers are awaited until none has come for `quietMs`.
 */
export async function collectCounts(quietMs = 300): Promise<ByteCounts> {
  counting = false;
  const total = empty();
  add(total, counts);
  counts = empty();
  const channel = mainChannel;
  if (channel !== null) {
    await new Promise<void>((resolve) => {
      let timer = setTimeout(resolve, quietMs);
      channel.onmessage = (ev: unknown) => {
        const msg = (ev as { data: { op: string; counts: ByteCounts } }).data;
        if (msg.op !== 'counts') return;
        add(total, msg.counts);
        clearTimeout(timer);
        timer = setTimeout(resolve, quietMs);
      };
      channel.postMessage({ op: 'collect' });
    });
    channel.onmessage = () => undefined;
  }
  counting = true;
  return total;
}

if (process.env.WALVAULT_BYTE_COUNTER === '1') void installByteCounter();
