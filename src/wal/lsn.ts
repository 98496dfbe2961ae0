/**
 * WAL positions (LSNs) and segment arithmetic.
 *
 * An LSN is an unsigned 64-bit byte position in the WAL stream, kept as a BigInt because
 * positions past 2^53 are real on long-lived clusters. Its text form is `X/Y`: the upper and
 * lower 32 bits in upper-case hex without padding, exactly as the server prints it.
 *
 * Segment file names are 24 upper-case hex digits: timeline (8), "log" (8), "seg" (8), where
 * log/seg split the segment number by segments-per-4-GiB. The segment size is the server's
 * `wal_segment_size`, a power of two from 1 MiB to 1 GiB; nothing here assumes 16 MiB.
 */
import { WalvaultError } from '../errors';

export type Lsn = bigint;

const U32 = 0x1_0000_0000n;
const U64_MAX = (1n << 64n) - 1n;

export function parseLsn(text: string): Lsn {
  const m = /^\s*([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})\s*$/.exec(text);
  if (!m) throw new WalvaultError('PG_PROTOCOL', `not a WAL position: "${text}" (expected X/Y in hex, e.g. 0/16B3748)`);
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

export function formatLsn(lsn: Lsn): string {
  if (lsn < 0n || lsn > U64_MAX) throw new RangeError(`LSN out of range: ${lsn}`);
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

const MIN_SEGMENT_SIZE = 1 << 20;
const MAX_SEGMENT_SIZE = 1 << 30;

export function isValidSegmentSize(size: number): boolean {
  return Number.isInteger(size) && size >= MIN_SEGMENT_SIZE && size <= MAX_SEGMENT_SIZE && (size & (size - 1)) === 0;
}

/** Parses the text `SHOW wal_segment_size` prints ("16MB", "1GB", also "1024kB" or plain bytes). */
export function parseSegmentSizeSetting(text: string): number {
  const m = /^\s*(\d+)\s*(B|kB|MB|GB)?\s*$/.exec(text);
  if (!m) throw new WalvaultError('PG_PROTOCOL', `cannot read wal_segment_size "${text}"`);
  const unit = m[2] ?? 'B';
  const mult = unit === 'GB' ? 1 << 30 : unit === 'MB' ? 1 << 20 : unit === 'kB' ? 1 << 10 : 1;
  const size = Number(m[1]) * mult;
  if (!isValidSegmentSize(size)) {
    throw new WalvaultError('PG_PROTOCOL', `wal_segment_size ${text} is not a power of two between 1MB and 1GB`);
  }
  return size;
}

export function segmentNumber(lsn: Lsn, segSize: number): bigint {
  return lsn / BigInt(segSize);
}

export function segmentStart(lsn: Lsn, segSize: number): Lsn {
  return (lsn / BigInt(segSize)) * BigInt(segSize);
}

export function segmentOffset(lsn: Lsn, segSize: number): number {
  return Number(lsn % BigInt(segSize));
}

export function segmentStartOfNumber(segNo: bigint, segSize: number): Lsn {
  return segNo * BigInt(segSize);
}

export function segmentsPerLogId(segSize: number): bigint {
  return U32 / BigInt(segSize);
}

/** Eight upper-case hex digits, as a WAL file name spells a timeline or a segment number's halves. */
export function hex8(n: bigint | number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}

export function segmentFileName(tli: number, segNo: bigint, segSize: number): string {
  const per = segmentsPerLogId(segSize);
  return hex8(tli) + hex8(segNo / per) + hex8(segNo % per);
}

export function historyFileName(tli: number): string {
  return hex8(tli) + '.history';
}

export interface SegmentName {
  tli: number;
  segNo: bigint;
}

const SEGMENT_NAME_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;

export function isSegmentFileName(name: string): boolean {
  return SEGMENT_NAME_RE.test(name);
}

export function isHistoryFileName(name: string): boolean {
  return /^[0-9A-F]{8}\.history$/.test(name);
}

export function parseSegmentFileName(name: string, segSize: number): SegmentName {
  const m = SEGMENT_NAME_RE.exec(name);
  if (!m) throw new WalvaultError('WAL_BAD_NAME', `"${name}" is not a WAL segment name (24 upper-case hex digits)`);
  const per = segmentsPerLogId(segSize);
  const seg = BigInt('0x' + m[3]);
  if (seg >= per) {
    throw new WalvaultError('WAL_BAD_NAME', `"${name}" is not a valid segment name for ${segSize}-byte segments`);
  }
  return { tli: parseInt(m[1], 16), segNo: BigInt('0x' + m[2]) * per + seg };
}

export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return a > b ? a : b;
}

export function minLsn(a: Lsn, b: Lsn): Lsn {
  return a < b ? a : b;
}

/** PostgreSQL timestamps count microseconds from 2000-01-01 00:00:00 UTC. */
const PG_EPOCH_MS = 946684800000n;

export function pgNowMicros(nowMs: number = Date.now()): bigint {
  return (BigInt(nowMs) - PG_EPOCH_MS) * 1000n;
}

export function pgMicrosToUnixMs(micros: bigint): number {
  return Number(micros / 1000n + PG_EPOCH_MS);
}
