/**
 * The CRC-32C of a file rebuilt from an incremental chain, from the CRCs of the stretches
 * written into it (each taken once, as it was written), by CRC combination: no read-back.
 */
import { crc32cCombine, crc32cOfZeros } from '../util/crc32c-combine';

/** Bytes written at `at` of a rebuilt file, with their CRC-32C. */
export interface Run {
  at: number;
  length: number;
  crc: number;
}

/** The CRC-32C of a file of `size` bytes holding these runs, and zeros between them. */
export function crcOfRuns(runs: Run[], size: number): number {
  const sorted = [...runs].sort((a, b) => a.at - b.at);
  let crc = 0;
  let at = 0;
  for (const r of sorted) {
    if (r.at > at) crc = crc32cCombine(crc, crc32cOfZeros(r.at - at), r.at - at);
    crc = crc32cCombine(crc, r.crc, r.length);
    at = r.at + r.length;
  }
  if (size > at) crc = crc32cCombine(crc, crc32cOfZeros(size - at), size - at);
  return crc;
}

/**
 * The runs, those that meet merged into one (their CRCs combined), so what is kept for each
 * file while a chain streams is a few ranges, not a record per piece and block written.
 * Only when every run has its CRC (no write of the file in flight).
 */
export function mergeRuns(runs: Run[]): Run[] {
  if (runs.length < 2) return runs;
  const sorted = [...runs].sort((a, b) => a.at - b.at);
  const out: Run[] = [sorted[0]];
  for (let i = 1; i < sorted.length; i++) {
    const last = out[out.length - 1];
    const r = sorted[i];
    if (last.at + last.length === r.at) out[out.length - 1] = { at: last.at, length: last.length + r.length, crc: crc32cCombine(last.crc, r.crc, r.length) };
    else out.push(r);
  }
  return out;
}

/** The CRC-32C of consecutive stretches, from theirs. */
export function foldCrcs(stretches: ReadonlyArray<{ length: number; crc: number }>): number {
  let crc = 0;
  for (const s of stretches) crc = crc32cCombine(crc, s.crc, s.length);
  return crc;
}
