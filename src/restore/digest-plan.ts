/**
 * Pure: what a delta restore's check reads of the files there (FileWriterPool.digestFiles).
 * Whole files; but by blocks, a file larger than DIGEST_RANGE is read in ranges that several
 * lanes share, since one 1 GiB segment would otherwise keep one lane busy while the others
 * wait at the end. A file read in ranges is done once every range is: its size the sum of
 * theirs, its block hashes theirs in order.
 */
import { DIGEST_RANGE } from './file-writer-messages';
import type { WrittenFile } from './file-writers';

export interface DigestItem {
  file: number;
  /** Bytes [from, to) of the file; the last range runs to its end, whatever it is by then. */
  range?: [number, number];
}

export class DigestPlan {
  readonly items: DigestItem[] = [];
  private readonly ranges = new Map<number, { left: number; got: Array<WrittenFile | null> }>();

  constructor(count: number, sizes: readonly number[] | undefined, byBlocks: boolean) {
    for (let file = 0; file < count; file++) {
      const size = sizes?.[file] ?? 0;
      if (!byBlocks || size <= DIGEST_RANGE) {
        this.items.push({ file });
        continue;
      }
      const n = Math.ceil(size / DIGEST_RANGE);
      this.ranges.set(file, { left: n, got: new Array<WrittenFile | null>(n).fill(null) });
      for (let k = 0; k < n; k++) this.items.push({ file, range: [k * DIGEST_RANGE, k === n - 1 ? Number.MAX_SAFE_INTEGER : (k + 1) * DIGEST_RANGE] });
    }
  }

  /** An item read: the file's facts once it is whole, else null (ranges of it are still out). */
  done(item: DigestItem, facts: WrittenFile): WrittenFile | null {
    if (!item.range) return facts;
    const r = this.ranges.get(item.file)!;
    r.got[item.range[0] / DIGEST_RANGE] = facts;
    if (--r.left > 0) return null;
    const parts = r.got as WrittenFile[];
    return { size: parts.reduce((sum, p) => sum + p.size, 0), checksum: '', blocks: Buffer.concat(parts.map((p) => p.blocks!)) };
  }
}
