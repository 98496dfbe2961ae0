/**
 * The fetching half of a delta restore by blocks (./delta-blocks.ts): the blocks of each
 * file that differ from the backup, taken out of the backup's parts and written in place.
 *
 * A block's bytes lie at the file's content offset in its tar (the block index says where)
 * plus the block's offset in the file; the parts' plaintext sizes (the metadata) say which
 * part holds them. Each part that holds some is read here, its layout and binding checked
 * and its header compared with the metadata's record of that part
 * (../archive/read/pick-frames.ts), then handed to a writer thread that decodes only the
 * frames holding needed bytes, checks every block against the index's CRC-32C and XXH64
 * and writes it in place (./file-writer-thread.ts, patchPart). A block that spans two parts
 * comes back in two pieces, assembled and checked here.
 *
 * It runs beside the check of the files there: files are decided (their runs known) in tar
 * order, and a part is fetched as soon as every file it holds bytes of is decided, so the
 * fetching of the first parts overlaps with the reading of the last files. Parts are read
 * PARTS_AT_ONCE at a time. A file the directory lacks is created when it is decided; at the
 * end every file fetched into is cut to its size.
 */
import { promises as fsp } from 'node:fs';
import type { Archive } from '../archive/archive';
import type { IndexMember as BlockIndexMember } from '../backup/block-index';
import type { BackupArchive } from '../backup/catalog';
import { WalvaultError } from '../errors';
import { BLOCK_HASH_LENGTH, indexCrc32c, matchesIndex } from '../util/block-hash';
import { runPool } from '../util/run-pool';
import type { PartWrite } from './file-writer-messages';
import type { FileWriterPool } from './file-writers';

const PARTS_AT_ONCE = 8;

/** What to fetch of one file. */
export interface FileRuns {
  file: string;
  mode: number;
  /** Which tar of the backup holds it. */
  tar: number;
  member: BlockIndexMember;
  /** Blocks [from, to) to fetch, in order. */
  runs: Array<[number, number]>;
  /** Bytes there now; null when the file is not there (it is created). */
  existingSize: number | null;
}

/** One run of one file in its tar's byte space. */
interface Need {
  f: FileRuns;
  from: number;
  to: number;
  start: number;
  end: number;
}

export class BlockFetcher {
  readonly stats = { blocks: 0, bytes: 0, patchedBytes: 0, fetchedBytes: 0 };
  /** Per tar: the needs decided, in tar order, and the next part to consider. */
  private readonly needs: Need[][];
  private readonly nextPart: number[];
  /** Per tar: the first need not yet passed by the parts fetched (needs before it end before them). */
  private readonly firstNeed: number[];
  private readonly partStarts: number[][];
  private readonly files: FileRuns[] = [];
  private readonly created: Array<Promise<void>> = [];
  private readonly queue: Array<() => Promise<void>> = [];
  private running = 0;
  private failure: Error | null = null;
  private idle: Array<() => void> = [];
  /** Buffers of shared memory that parts are read into, free for the next (at most PARTS_AT_ONCE). */
  private readonly slabs: Buffer[] = [];
  /** Their size: the largest part stored, and a byte (readFramed reads one more). */
  private readonly slabSize: number;
  /** Per file with blocks to fetch: the (run, part) pairs still to be written. */
  private readonly left = new Map<FileRuns, number>();
  /** Files all written, flushed one after another meanwhile (see flushEarly). */
  private flushing: Promise<void> = Promise.resolve();
  /** Blocks spanning two parts, as far as they have come. */
  private readonly pending = new Map<string, { f: FileRuns; b: number; buf: Buffer; filled: number }>();

  constructor(
    private readonly o: {
      archive: Archive;
      writers: FileWriterPool;
      tars: ReadonlyArray<{ tar: BackupArchive; blockSize: number }>;
      onFetched?: (bytes: number) => void;
    },
  ) {
    this.needs = o.tars.map(() => []);
    this.nextPart = o.tars.map(() => 0);
    this.firstNeed = o.tars.map(() => 0);
    this.slabSize = 1 + Math.max(0, ...o.tars.flatMap(({ tar }) => tar.parts.map((p) => p.storedSize)));
    this.partStarts = o.tars.map(({ tar }) => {
      let at = 0;
      return tar.parts.map((p) => ((at += p.size), at - p.size));
    });
  }

  /** A file decided: what to fetch of it (runs may be none: then it is only cut to its size, or created empty). */
  add(f: FileRuns): void {
    this.files.push(f);
    if (f.existingSize === null) {
      // Created before any of its parts is written: the threads only open files as they are.
      const made = fsp.open(f.file, 'wx', f.mode).then((h) => h.close());
      made.catch(() => undefined); // awaited before its parts are fetched, and in finish()
      this.created.push(made);
    }
    const bs = this.o.tars[f.tar].blockSize;
    const list = this.needs[f.tar];
    for (const [from, to] of f.runs) {
      const start = f.member.offset + from * bs;
      const end = f.member.offset + Math.min(f.member.size, to * bs);
      // Decisions come nearly in tar order (two threads check side by side): insert in place.
      let i = list.length;
      while (i > 0 && list[i - 1].start > start) i--;
      list.splice(i, 0, { f, from, to, start, end });
      this.left.set(f, (this.left.get(f) ?? 0) + this.partsOver(f.tar, start, end));
      this.stats.blocks += to - from;
      this.stats.bytes += end - start;
      if (f.existingSize !== null) this.stats.patchedBytes += end - start;
    }
  }

  /** How many parts of tar `tar` hold bytes of [start, end). */
  private partsOver(tar: number, start: number, end: number): number {
    const starts = this.partStarts[tar];
    const partOf = (at: number) => {
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid] <= at) lo = mid;
        else hi = mid - 1;
      }
      return lo;
    };
    return partOf(end - 1) - partOf(start) + 1;
  }

  /**
   * A file whose blocks are all written is flushed now (fdatasync), while the check and the
   * fetching go on, not in the final syncfs: scattered blocks take the disk a while to take
   * in. One at a time, so the thread pool keeps room for the parts' reads.
   */
  private flushEarly(f: FileRuns): void {
    this.flushing = this.flushing.then(async () => {
      if (this.failure) return;
      const h = await fsp.open(f.file, 'r+');
      try {
        await h.datasync();
      } finally {
        await h.close();
      }
    });
    this.flushing.catch((err: Error) => void (this.failure ??= err));
  }

  /** Every file of tar `tar` whose content starts before `offset` is decided: the parts that end by then are fetched. */
  decidedTo(tar: number, offset: number): void {
    const parts = this.o.tars[tar].tar.parts;
    const list = this.needs[tar];
    while (this.nextPart[tar] < parts.length) {
      const i = this.nextPart[tar];
      const start = this.partStarts[tar][i];
      const end = start + parts[i].size;
      if (end > offset) break;
      this.nextPart[tar]++;
      // Needs are in tar order, and every one that starts before this part's end is decided
      // (inserted) by now; those ending before its start are passed for good.
      let k = this.firstNeed[tar];
      while (k < list.length && list[k].end <= start) k++;
      this.firstNeed[tar] = k;
      const here: Need[] = [];
      for (let j = k; j < list.length && list[j].start < end; j++) here.push(list[j]);
      if (here.length > 0) this.enqueue(() => this.part(tar, parts[i], start, here));
    }
  }

  /**
   * Fetches what is left once every file is decided; then each file is cut to its size. It is
   * not fsynced here: the caller makes every file durable in one syncfs
   * (../util/sync-filesystem.ts), where an fsync per file costs a journal commit each.
   */
  async finish(): Promise<void> {
    this.o.tars.forEach((_, t) => this.decidedTo(t, Infinity));
    while (this.running > 0 || this.queue.length > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    await this.flushing.catch(() => undefined);
    if (this.failure) throw this.failure;
    await Promise.all(this.created);
    if (this.pending.size > 0) throw new WalvaultError('INTERNAL', `${this.pending.size} blocks spanning parts were not completed`);
    // A file there at the backup's size has it still: every block past its end was written.
    await runPool(
      this.files.filter((f) => f.existingSize !== f.member.size),
      8,
      (f) => fsp.truncate(f.file, f.member.size),
    );
  }

  /** Stops taking parts (the restore failed elsewhere) and waits for those being fetched. */
  async abandon(): Promise<void> {
    this.queue.length = 0;
    while (this.running > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    await Promise.allSettled([...this.created, this.flushing]);
  }

  private enqueue(job: () => Promise<void>): void {
    // After a failure nothing more is fetched: finish() waits only for the parts running.
    if (this.failure) return;
    this.queue.push(job);
    this.pump();
  }

  private pump(): void {
    while (!this.failure && this.running < PARTS_AT_ONCE && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      job()
        .catch((err: Error) => {
          this.failure ??= err;
          this.queue.length = 0;
        })
        .finally(() => {
          this.running--;
          this.pump();
          if (this.running === 0 && this.queue.length === 0) for (const w of this.idle.splice(0)) w();
        });
    }
  }

  private async assemble(key: string, piece: Buffer, at: number): Promise<void> {
    const p = this.pending.get(key)!;
    p.filled += piece.copy(p.buf, at);
    if (p.filled < p.buf.length) return;
    this.pending.delete(key);
    if (!matchesIndex(p.buf, p.f.member.hashes, p.b)) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `block ${p.b} of ${p.f.file}, as the backup's parts hold it, does not match the backup's block index`, { fix: `restore without --delta, or another backup` });
    }
    const fh = await fsp.open(p.f.file, 'r+');
    try {
      for (let done = 0; done < p.buf.length; ) done += (await fh.write(p.buf, done, p.buf.length - done, p.b * this.o.tars[p.f.tar].blockSize + done)).bytesWritten;
    } finally {
      await fh.close();
    }
  }

  private async part(tarIndex: number, p: BackupArchive['parts'][number], partStart: number, partNeeds: Need[]): Promise<void> {
    // Read into memory kept from part to part and shared with the writer thread: a buffer
    // fresh for every part costs a page fault a page, dear in a VM, and a copy to the thread.
    const slab = this.slabs.pop() ?? Buffer.from(new SharedArrayBuffer(this.slabSize));
    try {
      await this.patch(tarIndex, p, partStart, partNeeds, slab);
    } finally {
      this.slabs.push(slab);
    }
  }

  private async patch(tarIndex: number, p: BackupArchive['parts'][number], partStart: number, partNeeds: Need[], slab: Buffer): Promise<void> {
    const { archive } = this.o;
    const bs = this.o.tars[tarIndex].blockSize;
    const partEnd = partStart + p.size;
    const read = await archive.readFramed(p.key, { size: p.storedSize, into: slab });
    if (!read) throw new WalvaultError('ARCHIVE_CORRUPT', `${p.key} in ${archive.storage.description} is missing`, { fix: `restore another backup` });
    if (read.header.plaintextSize !== p.size || read.header.sha256.toString('hex') !== p.sha256) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${p.key} in ${archive.storage.description} is not the part the backup's metadata records there (its size or SHA-256 differs)`, { fix: `the backup cannot be restored as it is` });
    }
    const writes: PartWrite[] = [];
    const offsets = new Map<string, number>();
    let bytes = 0;
    for (const n of partNeeds) {
      const first = Math.max(n.from, Math.floor((partStart - n.f.member.offset) / bs));
      for (let b = first; b < n.to; b++) {
        const bStart = n.f.member.offset + b * bs;
        const bEnd = n.f.member.offset + Math.min(n.f.member.size, (b + 1) * bs);
        if (bStart >= partEnd) break;
        const from = Math.max(bStart, partStart);
        const to = Math.min(bEnd, partEnd);
        if (from >= to) continue;
        bytes += to - from;
        if (from === bStart && to === bEnd) {
          const h = n.f.member.hashes;
          writes.push({ path: n.f.file, position: b * bs, start: from - partStart, end: to - partStart, hashes: [indexCrc32c(h, b), h.readBigUInt64BE(BLOCK_HASH_LENGTH * b + 4)] });
          continue;
        }
        const key = `${n.f.file}#${b}`;
        if (!this.pending.has(key)) this.pending.set(key, { f: n.f, b, buf: Buffer.alloc(bEnd - bStart), filled: 0 });
        offsets.set(key, from - bStart);
        writes.push({ path: n.f.file, position: b * bs, start: from - partStart, end: to - partStart, hashes: null, piece: key });
      }
    }
    const frames = read.frames.filter((f) => f.plainLength > 0 && writes.some((w) => w.start < f.plainAt + f.plainLength && f.plainAt < w.end));
    await Promise.all(this.created);
    const pieces = await this.o.writers.patchPart({ stored: read.stored, keys: read.keys, frames, writes });
    for (const piece of pieces) await this.assemble(piece.key, piece.bytes, offsets.get(piece.key)!);
    for (const n of partNeeds) {
      const left = this.left.get(n.f)! - 1;
      this.left.set(n.f, left);
      if (left === 0) this.flushEarly(n.f);
    }
    this.stats.fetchedBytes += bytes;
    this.o.onFetched?.(this.stats.fetchedBytes);
  }
}
