/**
 * Synthetic but well-formed WAL segments for unit tests: little-endian pages with the
 * headers PostgreSQL writes (long header on page 0), pseudo-random record bytes in the bodies.
 */
import { createHash } from 'node:crypto';
import type { PageCheckContext } from '../../src/wal/page-header';
import { xorshift32 } from './seeded-random';

export const FIXTURE_SEG_SIZE = 1 << 20;
export const FIXTURE_BLCKSZ = 8192;
const FIXTURE_MAGIC = 0xd113; // PostgreSQL 16
export const FIXTURE_SYSID = 7412345678901234567n;

/** A segment of `segSize` bytes (FIXTURE_SEG_SIZE unless given: benches build larger ones). */
export function buildSegment(segNo: bigint, tli = 1, seed = Number(segNo) + 1, segSize = FIXTURE_SEG_SIZE): Buffer {
  const start = segNo * BigInt(segSize);
  const buf = Buffer.alloc(segSize);
  const next = xorshift32(seed);
  for (let off = 0, p = 0; off < segSize; off += FIXTURE_BLCKSZ, p++) {
    const cont = p > 0 && p % 4 !== 0;
    buf.writeUInt16LE(FIXTURE_MAGIC, off);
    buf.writeUInt16LE((cont ? 0x0001 : 0) | (p === 0 ? 0x0002 | 0x0004 : 0), off + 2);
    buf.writeUInt32LE(tli, off + 4);
    buf.writeBigUInt64LE(start + BigInt(off), off + 8);
    buf.writeUInt32LE(cont ? (next() % 5000) + 1 : 0, off + 16);
    let body = off + 24;
    if (p === 0) {
      buf.writeBigUInt64LE(FIXTURE_SYSID, 24);
      buf.writeUInt32LE(segSize, 32);
      buf.writeUInt32LE(FIXTURE_BLCKSZ, 36);
      body = 40;
    }
    for (let i = body; i < off + FIXTURE_BLCKSZ; i += 4) buf.writeUInt32LE(next(), i);
  }
  return buf;
}

export function fixtureCheckContext(tli: number, name: string): PageCheckContext {
  return {
    magic: FIXTURE_MAGIC,
    systemId: FIXTURE_SYSID,
    segSize: FIXTURE_SEG_SIZE,
    blockSize: FIXTURE_BLCKSZ,
    fileTli: tli,
    label: `WAL segment ${name}`,
  };
}

export function sha256hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
