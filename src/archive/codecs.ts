/**
 * Compression codecs, one per envelope codec id. Each works on one frame (at most
 * FRAME_PLAINTEXT_MAX bytes of plaintext) so memory stays bounded whatever the object size.
 *
 * The receiver compresses on the same process that reads the replication socket, so no codec
 * may compress on the event loop: snappy, lz4 and gzip have asynchronous native calls that run
 * on libuv's thread pool; zstd-napi has only synchronous calls, so zstd compresses in worker
 * threads (./compress-hash-workers.ts, given ZSTD_LEVEL with each frame). Decompression runs
 * where it is asked for (restore and wal-fetch have no socket to starve), synchronously for
 * zstd.
 *
 * Native modules are loaded on first use, so a process that never meets a codec never pays
 * for loading it.
 */
import * as zlib from 'node:zlib';
import { promisify } from 'node:util';
import { WalvaultError } from '../errors';
import { BufferPool } from '../util/buffer-pool';
import { FRAME_PLAINTEXT_MAX } from './framed-body';

export const CODEC_NAMES = ['none', 'gzip', 'lz4', 'zstd', 'snappy'] as const;
export type CodecName = (typeof CODEC_NAMES)[number];

/** Codec ids are part of the envelope format: never renumber. */
export const CODEC_IDS: Record<CodecName, number> = { none: 0, gzip: 1, lz4: 2, zstd: 3, snappy: 4 };

/** zstd and gzip at their fastest useful levels: WAL compresses well even there (see the README's table). */
export const ZSTD_LEVEL = 1;
const GZIP_LEVEL = 1;

/** One frame compressed for the write path: `bytes` stay valid until `release()`. */
export interface CompressedFrame {
  readonly bytes: Buffer;
  /** Gives a pooled output buffer back; `bytes` must not be used after. */
  release(): void;
}

export interface Codec {
  readonly name: CodecName;
  readonly id: number;
  compress(frame: Buffer): Promise<Buffer>;
  /**
   * The write path's compress: zstd compresses into a pooled buffer in shared memory (no
   * allocation, no copy per frame); the other codecs' native calls allocate their output.
   * `none` hands the frame itself on.
   */
  compressFrame(frame: Buffer): Promise<CompressedFrame>;
  /** `plainLength` is what the frame header promises; a different result is an error. */
  decompress(payload: Buffer, plainLength: number): Promise<Buffer>;
  /**
   * Several frames compressed at once, when they lie one after another in shared memory
   * (small frames of a backup part): one message to a worker for all of them. Null when they
   * do not (the caller compresses them one by one).
   */
  compressBatch?(frames: readonly Buffer[]): Array<Promise<CompressedFrame>> | null;
}

const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);

/** A codec whose output is its own allocation: nothing to give back. */
function unpooled(codec: Omit<Codec, 'compressFrame'>): Codec {
  return { ...codec, compressFrame: async (b) => ({ bytes: await codec.compress(b), release: () => undefined }) };
}

/* eslint-disable @typescript-eslint/no-require-imports */
const loaders: Record<CodecName, () => Codec> = {
  none: () => unpooled({ name: 'none', id: CODEC_IDS.none, compress: async (b) => b, decompress: async (b) => b }),
  gzip: () =>
    unpooled({
      name: 'gzip',
      id: CODEC_IDS.gzip,
      compress: (b) => gzip(b, { level: GZIP_LEVEL }),
      decompress: (b) => gunzip(b),
    }),
  lz4: () => {
    const lz4 = require('lz4-napi') as typeof import('lz4-napi');
    return unpooled({ name: 'lz4', id: CODEC_IDS.lz4, compress: (b) => lz4.compress(b), decompress: (b) => lz4.uncompress(b) });
  },
  snappy: () => {
    const snappy = require('snappy') as typeof import('snappy');
    return unpooled({
      name: 'snappy',
      id: CODEC_IDS.snappy,
      compress: (b) => snappy.compress(b),
      decompress: async (b) => (await snappy.uncompress(b, { asBuffer: true })) as Buffer,
    });
  },
  zstd: () => {
    const zstd = require('zstd-napi') as typeof import('zstd-napi');
    const { zstdCompressInWorker, zstdCompressInto, zstdBound, zstdBatchBound, zstdCompressBatchInto } = require('./compress-hash-workers') as typeof import('./compress-hash-workers');
    // Output buffers, each the bound for a whole frame: enough idle ones for a few objects
    // compressing frames ahead at once. Only the bytes a compressed frame fills are touched,
    // so an idle one costs about its last frame's compressed size in resident memory.
    const outputs = new BufferPool(zstdBound(FRAME_PLAINTEXT_MAX), 8, { shared: true });
    // A batch of small frames needs each frame's bound: a little more than one large frame's.
    const BATCH_OUT = zstdBound(FRAME_PLAINTEXT_MAX) + 64 * 1024;
    const batchOutputs = new BufferPool(BATCH_OUT, 8, { shared: true });
    return {
      name: 'zstd',
      id: CODEC_IDS.zstd,
      compress: (b) => zstdCompressInWorker(b, ZSTD_LEVEL),
      compressFrame: async (b) => {
        // A frame larger than the write path's (none is) gets a buffer of its own.
        const fits = b.length <= FRAME_PLAINTEXT_MAX;
        const out = fits ? outputs.acquire() : Buffer.from(new SharedArrayBuffer(zstdBound(b.length)));
        const release = () => (fits ? outputs.release(out) : undefined);
        try {
          const n = await zstdCompressInto(b, out, ZSTD_LEVEL);
          return { bytes: out.subarray(0, n), release };
        } catch (err) {
          release();
          throw err;
        }
      },
      decompress: async (b) => zstd.decompress(b),
      compressBatch: (frames) => {
        const first = frames[0];
        const contiguous = frames.every((f, i) => f.buffer === first.buffer && (i === 0 || f.byteOffset === frames[i - 1].byteOffset + frames[i - 1].length));
        if (!(first.buffer instanceof SharedArrayBuffer) || !contiguous) return null;
        const cuts = frames.map((f) => f.length);
        const pooled = zstdBatchBound(cuts) <= BATCH_OUT;
        const out = pooled ? batchOutputs.acquire() : Buffer.from(new SharedArrayBuffer(zstdBatchBound(cuts)));
        // Given back when the last frame of the batch is released (or the batch failed).
        let left = frames.length;
        const release = () => {
          if (--left === 0 && pooled) batchOutputs.release(out);
        };
        const last = frames[frames.length - 1];
        const span = Buffer.from(first.buffer, first.byteOffset, last.byteOffset + last.length - first.byteOffset);
        const lengths = zstdCompressBatchInto(span, cuts, out, ZSTD_LEVEL);
        lengths.catch(() => {
          if (pooled) batchOutputs.release(out);
        });
        let at = 0;
        return cuts.map((n, i) => {
          const offset = at;
          at += zstdBound(n);
          return lengths.then((l) => ({ bytes: out.subarray(offset, offset + l[i]), release }));
        });
      },
    };
  },
};
/* eslint-enable @typescript-eslint/no-require-imports */

const loaded = new Map<CodecName, Codec>();

export function isCodecName(name: string): name is CodecName {
  return (CODEC_NAMES as readonly string[]).includes(name);
}

export function codecByName(name: CodecName): Codec {
  let codec = loaded.get(name);
  if (!codec) {
    try {
      codec = loaders[name]();
    } catch (err) {
      throw new WalvaultError(
        'INTERNAL',
        `compression codec "${name}" cannot be loaded (${(err as Error).message})`,
        { fix: `reinstall walvault's dependencies (npm ci) or choose another codec`, cause: err },
      );
    }
    loaded.set(name, codec);
  }
  return codec;
}

export function codecById(id: number): Codec | null {
  const name = CODEC_NAMES.find((n) => CODEC_IDS[n] === id);
  return name === undefined ? null : codecByName(name);
}
