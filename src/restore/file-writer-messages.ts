/**
 * The messages between the restore's writer pool (./file-writers.ts) and its threads
 * (./file-writer-thread.ts). File contents travel as views of shared memory.
 */

import type { CodecName } from '../archive/codecs';
import { WalvaultError } from '../errors';
import type { FrameRef } from '../archive/read/pick-frames';
import type { ManifestChecksumAlgorithm } from './manifest-checksum';

/** Marks the pool's own threads: other threads (a site's receiver thread) load the module too. */
export const WRITER_ROLE = 'walvault-file-writer';
/** Pages are flushed while a file is written, this often, rather than all at its fsync. */
export const FLUSH_EVERY = 32 * 1024 * 1024;
/** A patch pwrite compares what is there with the piece in pages of this size, and writes those that differ. */
export const PATCH_PAGE = 8192;
/** By blocks, a file larger than this is read in ranges of this size (a multiple of any block size), on several threads. */
export const DIGEST_RANGE = 64 * 1024 * 1024;
/** The check of the files there asks for small files together, up to this many... */
export const DIGEST_BATCH_FILES = 32;
/** ...and up to this many bytes: a round trip to a thread each costs more than a small file's read. */
export const DIGEST_BATCH_BYTES = 8 * 1024 * 1024;
/** A thread reads an existing file (digestFiles) through one buffer of this size. */
export const DIGEST_READ_SIZE = 1024 * 1024;

/** [from, to) of a piece, and where in the file it goes (null: nowhere). */
export interface Placement {
  from: number;
  to: number;
  at: number | null;
}

export type ToWorker =
  | { op: 'setup'; algorithm: ManifestChecksumAlgorithm }
  | { op: 'open'; id: number; path: string; mode: number }
  | { op: 'data'; id: number; bytes: Uint8Array }
  | { op: 'close'; id: number }
  | { op: 'hash'; id: number; bytes: Uint8Array }
  | { op: 'digest'; id: number }
  /**
   * Writes a piece at its offset; with `patch` (a delta restore's file that differs, opened
   * as it is), reads what is there first and writes only the pages that differ.
   */
  | { op: 'pwrite'; id: number; fd: number; position: number; bytes: Uint8Array; path: string; patch?: boolean }
  /** Writes stretches of a file opened by openAt (`file`: its id) on this thread. */
  | { op: 'place'; file: number; bytes: Uint8Array; stretches: Placement[]; path: string; crc: boolean }
  /** Opens a file for positional writes as `file` (flags 'wx': created, and sized to `size`); nothing goes back but a failure. */
  | { op: 'openAt'; file: number; path: string; flags: 'wx' | 'r+'; mode: number; size: number | null }
  /** Closes `file` (fsynced first if `sync`); answered (value 0) under request `id`. */
  | { op: 'closeAt'; id: number; file: number; path: string; sync: boolean }
  /**
   * Reads existing files whole, one after another, and checksums them (a delta restore's
   * check); answered as 'digestedFiles' under `id`, a fact per path. With `blockSize`,
   * instead of the manifest's checksum: the XXH64 of each block of that size (8 bytes each),
   * which a backup's block index records (../util/block-hash.ts); with `range` (one path), of
   * those bytes of the file only.
   */
  | { op: 'digestFiles'; id: number; paths: string[]; blockSize?: number; range?: [number, number] }
  /**
   * A delta restore's blocks out of one backup part (./delta-fetch.ts): the frames decoded
   * (../archive/read/pick-frames.ts), each block checked against its index hashes and written
   * where it goes; the pieces of blocks that span two parts are sent back instead. Answered
   * as 'patched' under `id`.
   */
  | { op: 'patchPart'; id: number; stored: Uint8Array; keys: WireFrameKeys; frames: FrameRef[]; writes: PartWrite[] }
  | { op: 'abort' };

/** FrameKeys as a message carries them. */
export interface WireFrameKeys {
  codec: CodecName;
  dataKey: Uint8Array | null;
  headerLength: number;
  label: string;
}

/** Bytes [start, end) of a part's plaintext: a block written at `position` of `path`, or (`piece`) sent back. */
export interface PartWrite {
  path: string;
  position: number;
  start: number;
  end: number;
  /** The block's CRC-32C and XXH64 in the index; null for a piece of a block that spans parts. */
  hashes: [number, bigint] | null;
  piece?: string;
}

export type FromWorker =
  /** `written`: of a patch pwrite, the bytes it wrote. */
  | { op: 'ack'; bytes: number; crcs?: number[]; written?: number }
  /** A small file written and closed: its size and checksum. */
  | { op: 'closed'; id: number; size: number; checksum: string }
  | { op: 'digestedFiles'; id: number; facts: Array<{ size: number; checksum: string; blocks?: Uint8Array }> }
  | { op: 'digested'; id: number; checksum: string }
  /** The answer to a request (a closeAt: 0). */
  | { op: 'answered'; id: number; value: number }
  | { op: 'error'; id: number; path: string; message: string; code?: string; reading?: boolean; corrupt?: boolean }
  | { op: 'patched'; id: number; pieces: Array<{ key: string; bytes: Uint8Array }> }
  | { op: 'aborted' };

/** A file a thread (or the pool) could not read or write, as the restore reports it. */
export function writeError(file: string, e: { code?: string; message: string; reading?: boolean }): WalvaultError {
  if (e.reading) return new WalvaultError('STORAGE_IO', `cannot read ${file}: ${e.message}`, { fix: 'fix its permissions, or remove it (the restore then fetches it)' });
  return new WalvaultError('STORAGE_IO', e.code === 'EEXIST' ? `${file} already exists (a restore never writes over a file)` : `cannot write ${file}: ${e.message}`);
}
