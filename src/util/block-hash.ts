/**
 * What a backup's block index records of each 8 KiB block (../backup/block-index.ts), and how
 * a delta restore compares a block with it.
 *
 * Per block, 12 bytes, big-endian: the CRC-32C of the block (u32), then its XXH64 with seed 0
 * (u64). The CRC-32C is what PostgreSQL's backup manifest checksums files with: a file's is
 * folded from its blocks' (./crc32c-combine.ts). The XXH64 is what a block on disk is
 * compared with: 64 bits, so two different blocks agree by chance about once in 2^64, and
 * about four times cheaper than the CRC-32C alone (a delta reads the whole directory).
 * A block fetched from the archive is checked against both.
 */
import { crc32c } from '@node-rs/crc32';
import { xxh64 } from '@node-rs/xxhash';

export const BLOCK_HASH_LENGTH = 12;

/** Writes the block's record at `at` of `out`. */
export function writeBlockHash(block: Uint8Array, out: Buffer, at: number): void {
  out.writeUInt32BE(crc32c(Buffer.from(block.buffer, block.byteOffset, block.byteLength)) >>> 0, at);
  out.writeBigUInt64BE(BigInt.asUintN(64, xxh64(block)), at + 4);
}

/** Block `b`'s CRC-32C in an index's hashes. */
export function indexCrc32c(hashes: Buffer, b: number): number {
  return hashes.readUInt32BE(BLOCK_HASH_LENGTH * b);
}

/** Whether `block` is block `b` of an index's hashes (both its checksums). */
export function matchesIndex(block: Uint8Array, hashes: Buffer, b: number): boolean {
  const at = BLOCK_HASH_LENGTH * b;
  return crc32c(Buffer.from(block.buffer, block.byteOffset, block.byteLength)) >>> 0 === hashes.readUInt32BE(at) && BigInt.asUintN(64, xxh64(block)) === hashes.readBigUInt64BE(at + 4);
}
