/**
 * Pure: what a delta restore's check reads of the files there (FileWriterPool.digestFiles),
 * request by request. Small files go together, up to DIGEST_BATCH_FILES and
 * DIGEST_BATCH_BYTES a request: a data directory holds about a thousand files, most of a few
 * pages, and a round trip to a thread each costs more than reading one. By blocks, a file
 * larger than DIGEST_RANGE is read in ranges that several lanes share, since one 1 GiB
 * segment would otherwise keep one lane busy while the others wait at the end. A file read in
 * ranges is done once every range is: its size the sum of theirs, its block hashes theirs in
 * order.
 */
import { DIGEST_BATCH_BYTES, DIGEST_BATCH_FILES, DIGEST_RANGE } from './file-writer-messages';
import type { WrittenFile } from './file-writers';

export interface DigestItem {
  files: number[];
  /** Of a single file, bytes [from, to); the last range runs to its end, whatever it is by then. */
  range?: [number, number];
}

export class DigestPlan {
  readonly items: DigestItem[] = [];
  private readonly ranges = new Map<number, { left: number; got: Array<WrittenFile | null> }>();

  constructor(count: number, sizes: readonly number[] | undefined, byBlocks: boolean) {
    let batch: DigestItem | null = null;
    let batchBytes = 0;
    for (let file = 0; file < count; file++) {
      const size = sizes?.[file] ?? 0;
      if (!byBlocks || size <= DIGEST_RANGE) {
        if (batch === null || batch.files.length >= DIGEST_BATCH_FILES || batchBytes + size > DIGEST_BATCH_BYTES) {
          this.items.push((batch = { files: [] }));
          batchBytes = 0;
        }
        batch.files.push(file);
        batchBytes += size;
        continue;
      }
      batch = null;
      const n = Math.ceil(size / DIGEST_RANGE);
      this.ranges.set(file, { left: n, got: new Array<WrittenFile | null>(n).fill(null) });
      for (let k = 0; k < n; k++) this.items.push({ files: [file], range: [k * DIGEST_RANGE, k === n - 1 ? Number.MAX_SAFE_INTEGER : (k + 1) * DIGEST_RANGE] });
    }
  }

  /** An item read (a fact per file of it): the files it made whole, with their facts. */
  done(item: DigestItem, facts: WrittenFile[]): Array<[number, WrittenFile]> {
    if (!item.range) return item.files.map((file, i) => [file, facts[i]]);
    const file = item.files[0];
    const r = this.ranges.get(file)!;
    r.got[item.range[0] / DIGEST_RANGE] = facts[0];
    if (--r.left > 0) return [];
    const parts = r.got as WrittenFile[];
    return [[file, { size: parts.reduce((sum, p) => sum + p.size, 0), checksum: '', blocks: Buffer.concat(parts.map((p) => p.blocks!)) }]];
  }
}
