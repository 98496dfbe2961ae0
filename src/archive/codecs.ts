/**
 * Compression codecs, one per envelope codec id. Each works on one frame (at most
 * FRAME_PLAINTEXT_MAX bytes of plaintext) so memory stays bounded whatever the object size.
 *
 * The receiver compresses on the same process that reads the replication socket, so no codec
 * may compress on the event loop: snappy, lz4 and gzip have asynchronous native calls that run
 * on libuv's thread pool; zstd-napi has only synchronous calls, so zstd compresses in worker
 * threads (./zstd-worker.ts). Decompression runs where it is asked for (restore and wal-fetch
 * have no socket to starve), synchronously for zstd.
 *
 * Native modules are loaded on first use, so a process that never meets a codec never pays
 * for loading it.
 */
import * as zlib from 'node:zlib';
import { promisify } from 'node:util';
import { WalvaultError } from '../errors';

export const CODEC_NAMES = ['none', 'gzip', 'lz4', 'zstd', 'snappy'] as const;
export type CodecName = (typeof CODEC_NAMES)[number];

/** Codec ids are part of the envelope format: never renumber. */
export const CODEC_IDS: Record<CodecName, number> = { none: 0, gzip: 1, lz4: 2, zstd: 3, snappy: 4 };

/** zstd and gzip at their fastest useful levels: WAL compresses well even there (see the README's table). */
export const ZSTD_LEVEL = 1;
export const GZIP_LEVEL = 1;

export interface Codec {
  readonly name: CodecName;
  readonly id: number;
  compress(frame: Buffer): Promise<Buffer>;
  /** `plainLength` is what the frame header promises; a different result is an error. */
  decompress(payload: Buffer, plainLength: number): Promise<Buffer>;
}

const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);

/* eslint-disable @typescript-eslint/no-require-imports */
const loaders: Record<CodecName, () => Codec> = {
  none: () => ({ name: 'none', id: CODEC_IDS.none, compress: async (b) => b, decompress: async (b) => b }),
  gzip: () => ({
    name: 'gzip',
    id: CODEC_IDS.gzip,
    compress: (b) => gzip(b, { level: GZIP_LEVEL }),
    decompress: (b) => gunzip(b),
  }),
  lz4: () => {
    const lz4 = require('lz4-napi') as typeof import('lz4-napi');
    return { name: 'lz4', id: CODEC_IDS.lz4, compress: (b) => lz4.compress(b), decompress: (b) => lz4.uncompress(b) };
  },
  snappy: () => {
    const snappy = require('snappy') as typeof import('snappy');
    return {
      name: 'snappy',
      id: CODEC_IDS.snappy,
      compress: (b) => snappy.compress(b),
      decompress: async (b) => (await snappy.uncompress(b, { asBuffer: true })) as Buffer,
    };
  },
  zstd: () => {
    const zstd = require('zstd-napi') as typeof import('zstd-napi');
    const { zstdCompressInWorker } = require('./zstd-worker') as typeof import('./zstd-worker');
    return { name: 'zstd', id: CODEC_IDS.zstd, compress: (b) => zstdCompressInWorker(b), decompress: async (b) => zstd.decompress(b) };
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
        `compression codec "${name}" cannot be loaded (${(err as Error).message}); reinstall walvault's dependencies (npm ci) or choose another codec`,
        { cause: err },
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
