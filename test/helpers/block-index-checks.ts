/**
 * Checks of stored block indexes (src/backup/block-index.ts) against the bytes they describe,
 * computed here from the tar and the CRC library, not through the indexer.
 */
import { crc32c } from '@node-rs/crc32';
import { xxh64 } from '@node-rs/xxhash';
import { readEnvelopeHeader } from '../../src/archive/envelope';
import { FRAME_HEADER_LENGTH, readFrameHeader, TRAILER_LENGTH } from '../../src/archive/framed-body';
import type { BlockIndex } from '../../src/backup/block-index';

const BLOCK = 8192;

/** CRC-32C then XXH64 (seed 0) of each 8 KiB block of `content`, big-endian: what an index records. */
export function blockHashesOf(content: Buffer): Buffer {
  const out = Buffer.alloc(Math.ceil(content.length / BLOCK) * 12);
  for (let b = 0; b * BLOCK < content.length; b++) {
    const block = content.subarray(b * BLOCK, (b + 1) * BLOCK);
    out.writeUInt32BE(crc32c(block), b * 12);
    out.writeBigUInt64BE(xxh64(block), b * 12 + 4);
  }
  return out;
}

/** What is wrong with `index` as the index of `tar`: each file's bytes at its offset must hash to its recorded blocks. */
export function indexProblems(index: BlockIndex, tar: Buffer, label: string): string[] {
  const problems: string[] = [];
  if (index.blockSize !== BLOCK) problems.push(`${label}: block size ${index.blockSize}`);
  for (const m of index.members) {
    if (m.type !== 'file') continue;
    if (m.offset + m.size > tar.length) problems.push(`${label}: ${m.path} at ${m.offset}+${m.size} lies past the tar's end`);
    else if (!m.hashes.equals(blockHashesOf(tar.subarray(m.offset, m.offset + m.size)))) problems.push(`${label}: ${m.path}: the bytes at its offset do not hash to its blocks`);
  }
  return problems;
}

/** The plaintext length of each frame of a stored framed object, in order. */
export function framePlainLengths(stored: Buffer, label: string): number[] {
  const header = readEnvelopeHeader(stored, label);
  const lengths: number[] = [];
  for (let at = header.headerLength; at < stored.length - TRAILER_LENGTH; ) {
    const f = readFrameHeader(stored.subarray(at, at + FRAME_HEADER_LENGTH));
    lengths.push(f.plainLength);
    at += FRAME_HEADER_LENGTH + f.payloadLength;
  }
  return lengths;
}
