/**
 * Where the bytes of a chain member's entry go in the file being rebuilt: a piece of the
 * entry cut into stretches that each go to one contiguous place in the file, or nowhere.
 *
 * An incremental entry (PostgreSQL 17's INCREMENTAL.<file>: header, then block images in the
 * order of its block list) places image i at block blocks[i], if `wanted[i]`. A whole file
 * places block b at b * BLOCK_SIZE, below `fullLimit` and not filled by a newer member; it
 * marks the block filled once its last byte is placed.
 */
import type { IncrementalHeader } from './incremental-file';

/** BLCKSZ of the default build; the incremental headers are checked against it. */
export const BLOCK_SIZE = 8192;

/** [from, to) of the entry, and where it starts in the file (null: nowhere). */
export interface Stretch {
  from: number;
  to: number;
  fileAt: number | null;
}

/** How an entry places its bytes. */
export interface EntryLayout {
  /** Incremental entries: the parsed header (null: a whole file). */
  header: IncrementalHeader | null;
  /** Incremental entries: which images go into the file. */
  wanted: Uint8Array | null;
  /** Whole files: blocks below this are wanted (if not filled before this entry). */
  fullLimit: number;
}

/** One bit per block of the file: 16 KiB per GiB. */
export function isSet(bits: Uint8Array, b: number): boolean {
  return (bits[b >>> 3] & (1 << (b & 7))) !== 0;
}

export function setBit(bits: Uint8Array, b: number): void {
  bits[b >>> 3] |= 1 << (b & 7);
}

/** The `length` bytes of the entry from `from` on, cut where their destination changes. */
export function cutPiece(entry: EntryLayout, filled: Uint8Array, length: number, from: number): Stretch[] {
  const out: Stretch[] = [];
  const add = (a: number, b: number, fileAt: number | null) => {
    const last = out[out.length - 1];
    const follows = last !== undefined && last.to === a && (fileAt === null ? last.fileAt === null : last.fileAt !== null && last.fileAt + (last.to - last.from) === fileAt);
    if (follows) last.to = b;
    else out.push({ from: a, to: b, fileAt });
  };
  const end = from + length;
  if (entry.header) {
    const h = entry.header;
    // Images follow the header in list order; consecutive block numbers make one stretch.
    let i = Math.floor((from - h.headerSize) / BLOCK_SIZE);
    for (let at = from; at < end; ) {
      const imageStart = h.headerSize + i * BLOCK_SIZE;
      const stop = Math.min(end, imageStart + BLOCK_SIZE);
      add(at, stop, entry.wanted![i] ? h.blocks[i] * BLOCK_SIZE + (at - imageStart) : null);
      at = stop;
      if (at === imageStart + BLOCK_SIZE) i++;
    }
    return out;
  }
  // A whole file: block b lies at b * BLOCK_SIZE in both.
  for (let at = from; at < end; ) {
    const b = Math.floor(at / BLOCK_SIZE);
    const stop = Math.min(end, (b + 1) * BLOCK_SIZE);
    const want = b < entry.fullLimit && !isSet(filled, b);
    add(at, stop, want ? at : null);
    // A block split across pieces stays wanted until its last byte is placed.
    if (want && stop === (b + 1) * BLOCK_SIZE) setBit(filled, b);
    at = stop;
  }
  return out;
}
