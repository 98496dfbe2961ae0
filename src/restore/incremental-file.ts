/**
 * PostgreSQL 17+ incremental relation files (`INCREMENTAL.<relfile>[.<segno>]` in a backup
 * taken with `BASE_BACKUP ... INCREMENTAL`), and the plan to rebuild the full segment file
 * from a chain of backups. Pure: no I/O; callers read the bytes and follow the plan.
 *
 * File layout (basebackup.c sendFile; sizes from basebackup_incremental.c):
 *
 *   offset        size          field
 *   0             4   uint32    magic, INCREMENTAL_MAGIC = 0xd3ae1f0d
 *   4             4   uint32    block count N (<= RELSEG_SIZE)
 *   8             4   uint32    truncation block length (<= RELSEG_SIZE)
 *   12            4*N uint32[]  block numbers, relative to the segment's first block,
 *                               in the order the images follow (the server sorts them)
 *   12+4N         pad           zero bytes up to a multiple of BLCKSZ, only when N > 0
 *   headerSize    N*BLCKSZ      the block images, in the order of the list above
 *
 * The header is the server's in-memory integers written as they are, so its byte order is
 * the server's: little-endian on every platform walvault supports (x86-64, arm64). A
 * big-endian server's file is recognised by its magic and refused rather than misread.
 * The file's total length is exactly headerSize + N*BLCKSZ; the server pads with zeroes if
 * the relation shrinks while it is being sent, so the length still holds then.
 *
 * Note the order: block count before truncation length. The comment on the server's
 * GetIncrementalHeaderSize lists them the other way round; the writer (sendFile) and the
 * reader (pg_combinebackup's make_incremental_rfile) agree on count first.
 */
import { WalvaultError } from '../errors';

export const INCREMENTAL_MAGIC = 0xd3ae1f0d;
const INCREMENTAL_PREFIX = 'INCREMENTAL.';
/** RELSEG_SIZE for the default build: 1 GiB segments of 8 KiB blocks. */
const DEFAULT_BLOCKS_PER_SEGMENT = 131072;
/** magic + block count + truncation block length. */
const INCREMENTAL_FIXED_HEADER_BYTES = 12;

export interface IncrementalHeader {
  blockCount: number;
  /**
   * Blocks below this come from older backups unless this file has them; the rebuilt file is
   * at least this long. Blocks at or past it exist only if this file carries them.
   */
  truncationBlockLength: number;
  /** Segment-relative block numbers; image i (at headerSize + i*blockSize) is blocks[i]. */
  blocks: Uint32Array;
  /** Bytes before the first image, padding included. */
  headerSize: number;
}

export interface HeaderOptions {
  /** Names the file in error messages. */
  path?: string;
  /** RELSEG_SIZE of the cluster; defaults to 131072 (1 GiB / 8 KiB). */
  blocksPerSegment?: number;
  /** The whole file's length, when known, to check against the header. */
  fileSize?: number;
}

function splitBasename(path: string): [dir: string, base: string] {
  const slash = path.lastIndexOf('/');
  return [path.slice(0, slash + 1), path.slice(slash + 1)];
}

export function isIncrementalPath(path: string): boolean {
  const base = splitBasename(path)[1];
  return base.length > INCREMENTAL_PREFIX.length && base.startsWith(INCREMENTAL_PREFIX);
}

/** `base/5/INCREMENTAL.16384.1` -> `base/5/16384.1`; other paths come back unchanged. */
export function nonIncrementalPath(path: string): string {
  if (!isIncrementalPath(path)) return path;
  const [dir, base] = splitBasename(path);
  return dir + base.slice(INCREMENTAL_PREFIX.length);
}

function checkBlockSize(blockSize: number): void {
  // BLCKSZ is a power of two from 1 kB to 32 kB (configure --with-blocksize).
  if (!Number.isInteger(blockSize) || blockSize < 1024 || blockSize > 32768 || (blockSize & (blockSize - 1)) !== 0) {
    throw new WalvaultError('INTERNAL', `block size ${blockSize} is not one PostgreSQL can be built with`);
  }
}

/** What the server's GetIncrementalHeaderSize gives: padded only when images follow. */
export function incrementalHeaderSize(blockCount: number, blockSize: number): number {
  checkBlockSize(blockSize);
  const raw = INCREMENTAL_FIXED_HEADER_BYTES + 4 * blockCount;
  if (blockCount === 0) return raw;
  return Math.ceil(raw / blockSize) * blockSize;
}

/** What the server's GetIncrementalFileSize gives. */
export function expectedFileSize(header: Pick<IncrementalHeader, 'blockCount'>, blockSize: number): number {
  return incrementalHeaderSize(header.blockCount, blockSize) + header.blockCount * blockSize;
}

function corrupt(path: string | undefined, what: string): WalvaultError {
  return new WalvaultError('ARCHIVE_CORRUPT', `incremental file ${path ?? '(unnamed)'}: ${what}`);
}

/** Magic, block count and truncation length, checked; the caller has >= 12 bytes. */
function readFixed(buf: Buffer, blockSize: number, options: HeaderOptions): { blockCount: number; truncationBlockLength: number; headerSize: number } {
  const { path } = options;
  const perSegment = options.blocksPerSegment ?? DEFAULT_BLOCKS_PER_SEGMENT;
  const magic = buf.readUInt32LE(0);
  if (magic !== INCREMENTAL_MAGIC) {
    if (buf.readUInt32BE(0) === INCREMENTAL_MAGIC) {
      throw corrupt(path, 'written by a big-endian server (magic 0xd3ae1f0d in big-endian byte order); only little-endian servers are supported');
    }
    throw corrupt(path, `bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 0x${INCREMENTAL_MAGIC.toString(16)}): not an incremental file`);
  }
  const blockCount = buf.readUInt32LE(4);
  const truncationBlockLength = buf.readUInt32LE(8);
  // A segment holds at most RELSEG_SIZE blocks, so neither count can exceed it; checking
  // here also bounds the header size before a streaming reader buffers that much.
  if (blockCount > perSegment) throw corrupt(path, `block count ${blockCount} exceeds the segment size of ${perSegment} blocks`);
  if (truncationBlockLength > perSegment) {
    throw corrupt(path, `truncation block length ${truncationBlockLength} exceeds the segment size of ${perSegment} blocks`);
  }
  return { blockCount, truncationBlockLength, headerSize: incrementalHeaderSize(blockCount, blockSize) };
}

/**
 * How many leading bytes of the file `parseIncrementalHeader` needs: 12 while fewer are at
 * hand, then the whole header, padding included (so the images start right after it).
 */
export function incrementalHeaderNeeds(prefix: Buffer, blockSize: number, options: HeaderOptions = {}): number {
  checkBlockSize(blockSize);
  if (prefix.length < INCREMENTAL_FIXED_HEADER_BYTES) return INCREMENTAL_FIXED_HEADER_BYTES;
  return readFixed(prefix, blockSize, options).headerSize;
}

/**
 * Parses and checks a header. `buf` needs the fixed part and the block list; padding bytes
 * present in it are checked to be zero (the server writes zeroes there), and images past
 * the header are ignored.
 */
export function parseIncrementalHeader(buf: Buffer, blockSize: number, options: HeaderOptions = {}): IncrementalHeader {
  checkBlockSize(blockSize);
  const { path } = options;
  const perSegment = options.blocksPerSegment ?? DEFAULT_BLOCKS_PER_SEGMENT;
  if (buf.length < INCREMENTAL_FIXED_HEADER_BYTES) {
    throw corrupt(path, `header truncated: ${buf.length} bytes, the fixed part alone is ${INCREMENTAL_FIXED_HEADER_BYTES}`);
  }
  const { blockCount, truncationBlockLength, headerSize } = readFixed(buf, blockSize, options);
  const listEnd = INCREMENTAL_FIXED_HEADER_BYTES + 4 * blockCount;
  if (buf.length < listEnd) throw corrupt(path, `header truncated: ${buf.length} bytes, its ${blockCount} block numbers end at byte ${listEnd}`);

  const blocks = new Uint32Array(blockCount);
  let sorted = true;
  for (let i = 0; i < blockCount; i++) {
    const b = buf.readUInt32LE(INCREMENTAL_FIXED_HEADER_BYTES + 4 * i);
    // The image would land outside the segment; RELSEG_SIZE blocks per file, numbered from 0.
    if (b >= perSegment) throw corrupt(path, `block number ${b} (entry ${i}) is not below the segment size of ${perSegment} blocks`);
    if (i > 0 && b <= blocks[i - 1]) sorted = false;
    blocks[i] = b;
  }
  // Two images for one block would make "which one wins" depend on the reader.
  if (!sorted) {
    const copy = blocks.slice().sort();
    for (let i = 1; i < copy.length; i++) {
      if (copy[i] === copy[i - 1]) throw corrupt(path, `block ${copy[i]} is listed more than once`);
    }
  }
  const padEnd = Math.min(buf.length, headerSize);
  for (let i = listEnd; i < padEnd; i++) {
    if (buf[i] !== 0) throw corrupt(path, `header padding byte at offset ${i} is 0x${buf[i].toString(16)}, not zero: the block list or the alignment is off`);
  }
  const header: IncrementalHeader = { blockCount, truncationBlockLength, blocks, headerSize };
  if (options.fileSize !== undefined) {
    const expected = expectedFileSize(header, blockSize);
    if (options.fileSize !== expected) {
      throw corrupt(path, `${options.fileSize} bytes long, but a header of ${blockCount} blocks makes it ${expected} (${headerSize} header + ${blockCount} x ${blockSize})`);
    }
  }
  return header;
}

export interface IncrementalFileSpec {
  truncationBlockLength: number;
  /** Written in this order; the server writes them sorted by block number. */
  blocks: ReadonlyArray<{ blockNo: number; image: Uint8Array }>;
}

/** The bytes the server sends for an incremental file with these blocks. */
export function buildIncrementalFile(spec: IncrementalFileSpec, blockSize: number): Buffer {
  checkBlockSize(blockSize);
  const n = spec.blocks.length;
  const headerSize = incrementalHeaderSize(n, blockSize);
  const out = Buffer.alloc(headerSize + n * blockSize);
  out.writeUInt32LE(INCREMENTAL_MAGIC, 0);
  out.writeUInt32LE(n, 4);
  out.writeUInt32LE(spec.truncationBlockLength, 8);
  spec.blocks.forEach(({ blockNo, image }, i) => {
    if (image.length !== blockSize) throw new WalvaultError('INTERNAL', `image of block ${blockNo} is ${image.length} bytes, not ${blockSize}`);
    out.writeUInt32LE(blockNo, INCREMENTAL_FIXED_HEADER_BYTES + 4 * i);
    out.set(image, headerSize + i * blockSize);
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Reconstruction plan (pg_combinebackup's reconstruct_from_incremental_file, without I/O)

/** One output file's version in one backup of the chain. */
export type ChainEntry =
  | { backup: string; kind: 'full'; /** bytes */ length: number }
  | { backup: string; kind: 'incremental'; header: IncrementalHeader }
  | { backup: string; kind: 'absent' };

/**
 * Output blocks [start, start + count) come from one place, contiguously: for 'incremental'
 * images from..from+count-1 of that backup's file (byte offset headerSize + from*blockSize),
 * for 'full' blocks from..from+count-1 of that backup's file, for 'zero' nowhere.
 */
export type PlanRun =
  | { start: number; count: number; source: 'incremental'; backup: string; from: number }
  | { start: number; count: number; source: 'full'; backup: string; from: number }
  | { start: number; count: number; source: 'zero' };

export type ReconstructionPlan =
  /** The output is that backup's full file byte for byte. */
  | { kind: 'copy'; backup: string; length: number }
  | { kind: 'reconstruct'; blockCount: number; runs: PlanRun[] };

export interface PlanOptions {
  /**
   * false (default): a block at or past the truncation block length of any incremental in
   * the chain is never taken from a backup older than that incremental, which is what the
   * server means by the field ("the prior backup" has no such block) and what combining the
   * chain one backup at a time gives. true: only the newest incremental's truncation length
   * limits older backups, as pg_combinebackup does (reconstruct.c), for byte-for-byte
   * comparisons with it. The two differ only when a file shrank before an intermediate
   * backup and grew again with blocks no WAL record touched.
   */
  pgCombinebackupCompat?: boolean;
}

const NO_SOURCE = -1;

/**
 * How to rebuild output file `path` from its chain, newest first (chain[0] is the backup
 * being restored). `path` is only for messages.
 */
export function planReconstruction(path: string, chain: readonly ChainEntry[], blockSize: number, options: PlanOptions = {}): ReconstructionPlan {
  checkBlockSize(blockSize);
  if (chain.length === 0) throw new WalvaultError('INTERNAL', `no backups given to rebuild ${path} from`);
  const newest = chain[0];
  // pg_combinebackup only rebuilds what the final backup holds; a full file there is copied.
  if (newest.kind === 'absent') throw new WalvaultError('INTERNAL', `${path} is not in backup ${newest.backup}, so there is nothing to rebuild`);
  if (newest.kind === 'full') return { kind: 'copy', backup: newest.backup, length: newest.length };

  const latest = newest.header;
  // find_reconstructed_block_length: the truncation length, stretched to the highest image.
  let blockCount = latest.truncationBlockLength;
  for (const b of latest.blocks) if (b >= blockCount) blockCount = b + 1;

  // Per output block: index into `chain` and the image index or block number there.
  const sourceOf = new Int32Array(blockCount).fill(NO_SOURCE);
  const fromOf = new Uint32Array(blockCount);
  // Every image of the newest file is used, even past its truncation length.
  latest.blocks.forEach((b, i) => {
    sourceOf[b] = 0;
    fromOf[b] = i;
  });
  let usedIncremental = latest.blockCount > 0;
  let limit = latest.truncationBlockLength;

  for (let k = 1; ; k++) {
    const entry = chain[k];
    if (entry === undefined) {
      // reconstruct.c: "full backup contains unexpected incremental file".
      throw new WalvaultError('ARCHIVE_CORRUPT', `${path}: the chain ends at backup ${chain[k - 1].backup} with an incremental file`, { fix: `the oldest backup must hold the full file` });
    }
    if (entry.kind === 'absent') {
      // The server sends a file incrementally only if the prior backup's manifest lists it,
      // so a gap means the chain is broken (pg_combinebackup fails to open the file too).
      throw new WalvaultError('ARCHIVE_CORRUPT', `${path}: backup ${chain[k - 1].backup} holds it as an incremental file, but the backup before it (${entry.backup}) has neither the file nor an incremental one`);
    }
    if (entry.kind === 'full') {
      const fullBlocks = Math.floor(entry.length / blockSize);
      // Blocks before the limit that the full file lacks stay zero: extended after it was
      // taken and never WAL-logged since, as reconstruct.c reasons.
      const end = Math.min(limit, fullBlocks);
      for (let b = 0; b < end; b++) {
        if (sourceOf[b] === NO_SOURCE) {
          sourceOf[b] = k;
          fromOf[b] = b;
        }
      }
      // pg_combinebackup copies the older full file when nothing newer changed it and its
      // length is exactly the truncation length; the bytes are the same as rebuilding
      // (unless an intermediate truncation cut it short, which only the default mode heeds).
      if (!usedIncremental && limit === latest.truncationBlockLength && latest.truncationBlockLength * blockSize === entry.length) {
        return { kind: 'copy', backup: entry.backup, length: entry.length };
      }
      break;
    }
    const h = entry.header;
    h.blocks.forEach((b, i) => {
      if (b < limit && sourceOf[b] === NO_SOURCE) {
        sourceOf[b] = k;
        fromOf[b] = i;
        usedIncremental = true;
      }
    });
    if (!options.pgCombinebackupCompat && h.truncationBlockLength < limit) limit = h.truncationBlockLength;
  }

  return { kind: 'reconstruct', blockCount, runs: toRuns(chain, sourceOf, fromOf) };
}

function toRuns(chain: readonly ChainEntry[], sourceOf: Int32Array, fromOf: Uint32Array): PlanRun[] {
  const runs: PlanRun[] = [];
  let start = 0;
  for (let b = 1; b <= sourceOf.length; b++) {
    // A run continues while the source is the same and its offset moves on by one block.
    if (b < sourceOf.length && sourceOf[b] === sourceOf[start] && (sourceOf[b] === NO_SOURCE || fromOf[b] === fromOf[start] + (b - start))) continue;
    const k = sourceOf[start];
    const count = b - start;
    if (k === NO_SOURCE) runs.push({ start, count, source: 'zero' });
    else runs.push({ start, count, source: chain[k].kind === 'full' ? 'full' : 'incremental', backup: chain[k].backup, from: fromOf[start] });
    start = b;
  }
  return runs;
}

/** One output block's source. */
export type BlockSource =
  | { source: 'incremental'; backup: string; index: number }
  | { source: 'full'; backup: string; block: number }
  | { source: 'zero' };

/** The runs of a 'reconstruct' plan, one entry per output block (for tests and debugging). */
export function expandRuns(runs: readonly PlanRun[]): BlockSource[] {
  const out: BlockSource[] = [];
  for (const r of runs) {
    for (let j = 0; j < r.count; j++) {
      if (r.source === 'zero') out.push({ source: 'zero' });
      else if (r.source === 'full') out.push({ source: 'full', backup: r.backup, block: r.from + j });
      else out.push({ source: 'incremental', backup: r.backup, index: r.from + j });
    }
  }
  return out;
}
