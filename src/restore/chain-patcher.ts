/**
 * Rebuilds the relation files of an incremental backup from its chain, straight from the
 * archive, in one pass over each member (no staging area, no pg_combinebackup).
 *
 * The newest backup is restored first, as any backup is; each of its `INCREMENTAL.<file>`
 * entries becomes `<file>`, at the final length its header gives (sparse: blocks no backup
 * has read are zeros), created by the first entry that writes to it, with the blocks it
 * carries written in place. Then the older members stream by,
 * newest to oldest (parent, ..., full backup), and each supplies the blocks still missing
 * from the files still pending, by the rules of ./incremental-file.ts (newest block wins; no
 * backup supplies a block at or past the truncation length of a newer incremental of that
 * file; a whole file ends the search for its file). Everything else in an older member is
 * read (its parts are verified as any restore's are) and passed over.
 *
 * Every entry used as a source is checked against its own backup's manifest as it streams
 * (size and checksum); a member lacking a file that is still pending breaks the chain.
 * Files that the newest backup no longer holds never come back: only its entries are pending.
 */
import * as fs from 'node:fs';
import { crc32c } from '@node-rs/crc32';
import { WalvaultError } from '../errors';
import { InFlight } from '../util/in-flight';
import { incrementalHeaderNeeds, isIncrementalPath, nonIncrementalPath, parseIncrementalHeader, type IncrementalHeader } from './incremental-file';
import { fileFacts, type FileFacts } from './chain-manifest';
import { crc32cHex, newChecksum, type IncrementalChecksum, type ManifestChecksumAlgorithm } from './manifest-checksum';
import { crcOfRuns, foldCrcs, mergeRuns, type Run } from './rebuilt-runs';
import { BLOCK_SIZE, cutPiece, isSet, setBit, type EntryLayout } from './chain-stretches';
import type { ParsedManifest } from './manifest-files';
import type { FileWriterPool, Placement } from './file-writers';
import type { SlabRing } from './slab-ring';
import type { TarEntry, TarSink } from '../util/tar-reader';

export { BLOCK_SIZE };
/** Rebuilt files checksummed at once at the end. */
const FINISH_CONCURRENCY = 4;
/** Entries whose writes may still be finishing (each holds its file open). */
const SETTLING = 64;

interface PendingFile {
  target: string;
  /** Its path in the manifest (and the restored directory's new one). */
  key: string;
  /** Output length in blocks. */
  blocks: number;
  /** Older members may supply blocks below this only. */
  limit: number;
  /** A bit for each block written (or scheduled): 16 KiB per GiB of relation. */
  filled: Uint8Array;
  /** A whole file supplied what was missing: older members are not asked. */
  resolved: boolean;
  mode: number;
  /**
   * Created by the first entry that writes to it (in whichever member), not when the
   * newest backup names it: most relation files get their bytes from the full backup, and
   * their creation (most of a millisecond of the kernel's, one directory at a time) then
   * overlaps with the full backup's long pass instead of stalling the newest's short one.
   */
  created: boolean;
  /** Made durable when its last writer closed it. */
  synced: boolean;
  /**
   * The writer thread every entry opens it on (null until first opened): one thread, so a
   * member's open comes after a newer member's create and writes without waiting for them.
   */
  lane: number | null;
  /** Pieces placed in it and not done: its runs are merged only when none is (their CRCs are all known). */
  placing: number;
  /** The last member whose tar held this file, in either form. */
  seenIn: string | null;
  /** What was written where, with its CRC-32C (null: the manifest's algorithm is not CRC32C). */
  runs: Run[] | null;
}

/** One entry being used as a source: where each of its bytes goes (EntryLayout), if anywhere. */
interface EntryWork extends EntryLayout {
  pending: PendingFile | null;
  member: string;
  manifestPath: string;
  size: number;
  /** Incremental entries: header bytes collected so far (then `header` is parsed from them). */
  headerBytes: Buffer[] | null;
  /** The rebuilt file (the writer pool's id), open while this entry writes to it. */
  file: number | null;
  /** Its writes and flushes not done yet. */
  inFlight: InFlight;
  /**
   * When its manifest uses CRC32C: the CRC-32C of each stretch of the entry, in order (filled
   * in as the writer threads take them), folded into the entry's at its end. Else null, and
   * `checksum` takes every byte.
   */
  crcs: Array<{ length: number; crc: number }> | null;
  checksum: IncrementalChecksum;
  at: number;
}

/** The entry's checksum as its manifest writes it; only once its writes are done. */
function entryDigest(w: EntryWork): string {
  return w.crcs === null ? w.checksum.digest() : crc32cHex(foldCrcs(w.crcs));
}

export interface ChainMember {
  name: string;
  manifest: ParsedManifest;
}

export class ChainPatcher {
  private readonly pending = new Map<string, PendingFile>();
  private work: EntryWork | null = null;
  private readonly expected = new Map<string, Map<string, { size: number; checksum: string }>>();

  constructor(
    private readonly ring: SlabRing,
    private readonly writers: FileWriterPool,
    /** The chain below the newest backup: parent first, full backup last. */
    older: readonly ChainMember[],
  ) {
    for (const m of older) this.expected.set(m.name, new Map(m.manifest.files.map((f) => [f.path, { size: f.size, checksum: f.checksum }])));
  }

  /** How many files are being rebuilt. */
  get files(): number {
    return this.pending.size;
  }

  // ---- the newest backup: its INCREMENTAL entries -----------------------------------------

  /** An `INCREMENTAL.*` entry of the newest backup, to be written as `target` (its real name). */
  beginNewest(member: string, manifestPath: string, target: string, mode: number, size: number, algorithm: ParsedManifest['algorithm']): void {
    this.newestAlgorithm = algorithm;
    this.work = this.newWork(null, member, manifestPath, size, algorithm, true);
    this.newestTarget = { path: target, mode };
  }

  private newestTarget = { path: '', mode: 0o600 };
  private newestAlgorithm: ParsedManifest['algorithm'] = 'NONE';

  // ---- older members ---------------------------------------------------------------------

  /** A sink for one tar of an older member: `prefix` is how its paths are named in manifests. */
  memberSink(member: ChainMember, prefix: string): TarSink & { slab: Buffer | null } {
    const self = this;
    return {
      slab: null,
      entry(e: TarEntry) {
        if (e.type !== 'file') return;
        const key = prefix + nonIncrementalPath(e.path);
        const p = self.pending.get(key);
        if (!p || p.resolved) return;
        p.seenIn = member.name;
        self.work = self.newWork(p, member.name, prefix + e.path, e.size, member.manifest.algorithm, isIncrementalPath(e.path));
        if (!isIncrementalPath(e.path)) {
          // A whole file: every block it has, below the limit, that nothing newer supplied.
          self.work.fullLimit = Math.min(p.limit, Math.floor(e.size / BLOCK_SIZE));
          p.resolved = true;
        }
      },
      data(chunk: Buffer) {
        return self.data(chunk, this.slab!);
      },
      entryEnd() {
        return self.endOlder();
      },
    };
  }

  /**
   * After every tar of `member`: a pending file it did not hold breaks the chain. Its writes
   * may still be going on: the next member starts at once (each file's writes go to one
   * thread, in order, and write blocks no other member writes), and finish() waits for all.
   */
  endMember(member: string, isFull: boolean): void {
    for (const [key, p] of this.pending) {
      if (p.resolved) continue;
      if (p.seenIn !== member) {
        throw new WalvaultError(
          'ARCHIVE_CORRUPT',
          `${key} is incremental in a newer backup but backup ${member} of the chain does not hold it: the chain is broken and ${key} cannot be rebuilt`,
        );
      }
      if (isFull) throw new WalvaultError('ARCHIVE_CORRUPT', `${key} is incremental in full backup ${member}: a full backup holds whole files only`);
    }
  }

  /** Makes every rebuilt file durable; its size and checksum, by manifest path, for the new manifest. */
  async finish(algorithm: ManifestChecksumAlgorithm): Promise<Map<string, FileFacts>> {
    await this.settled();
    const facts = new Map<string, FileFacts>();
    const queue = [...this.pending.values()];
    const one = async (p: PendingFile) => {
      if (!p.created || !p.synced) {
        // No source wrote to it (its blocks are all zeros), or its last one was incremental.
        const h = await fs.promises.open(p.target, p.created ? 'r+' : 'wx', p.mode);
        try {
          if (!p.created) await h.truncate(p.blocks * BLOCK_SIZE);
          await h.sync();
        } finally {
          await h.close();
        }
      }
      facts.set(p.key, p.runs && algorithm === 'CRC32C' ? { size: p.blocks * BLOCK_SIZE, checksum: crc32cHex(crcOfRuns(p.runs, p.blocks * BLOCK_SIZE)) } : await fileFacts(p.target, algorithm));
    };
    await Promise.all(
      Array.from({ length: FINISH_CONCURRENCY }, async () => {
        for (let p = queue.shift(); p; p = queue.shift()) await one(p);
      }),
    );
    return facts;
  }

  // ---- shared entry machinery ------------------------------------------------------------

  private newWork(p: PendingFile | null, member: string, manifestPath: string, size: number, algorithm: ParsedManifest['algorithm'], incremental: boolean): EntryWork {
    return {
      pending: p,
      member,
      manifestPath,
      size,
      headerBytes: incremental ? [] : null,
      header: null,
      fullLimit: 0,
      wanted: null,
      file: null,
      inFlight: new InFlight(),
      crcs: algorithm === 'CRC32C' ? [] : null,
      checksum: newChecksum(algorithm),
      at: 0,
    };
  }

  /**
   * Takes the bytes of the current entry (a view of `slab`). Files are opened (created, by
   * the first entry that writes to them) by the writer threads, and this one goes on
   * meanwhile: creating a file can cost the kernel most of a millisecond, and the newest
   * backup's pass, which then created every relation file, took 3.5 times as long as an
   * older incremental's of the same size while this thread waited for each.
   */
  data(chunk: Buffer, slab: Buffer): void {
    const w = this.work;
    if (!w) return;
    if (w.crcs === null) w.checksum.update(chunk);
    let piece = chunk;
    if (w.headerBytes !== null && w.header === null) {
      piece = this.collectHeader(w, chunk);
      if (w.header === null) return;
    }
    if (piece.length === 0) return;
    if (w.file === null) {
      const p = w.pending!;
      // Created exclusively: a restore never writes over something that is there.
      w.file = p.created ? this.writers.openAt(p.target, 'r+', p.mode, null, p.lane) : this.writers.openAt(p.target, 'wx', p.mode, p.blocks * BLOCK_SIZE, p.lane);
      p.lane = this.writers.laneOf(w.file);
      p.created = true;
    }
    this.writeWanted(w, piece, w.at, slab);
    w.at += piece.length;
  }

  /** Adds header bytes; once the header is whole, parses it and returns the rest of `chunk`. */
  private collectHeader(w: EntryWork, chunk: Buffer): Buffer {
    const parts = w.headerBytes!;
    let rest = chunk;
    for (;;) {
      const have = Buffer.concat(parts);
      const need = incrementalHeaderNeeds(have, BLOCK_SIZE, { path: w.manifestPath });
      if (have.length >= need) break;
      if (rest.length === 0) return rest;
      const take = Math.min(need - have.length, rest.length);
      w.crcs?.push({ length: take, crc: crc32c(rest.subarray(0, take)) >>> 0 });
      parts.length = 0;
      parts.push(Buffer.concat([have, rest.subarray(0, take)]));
      rest = rest.subarray(take);
      w.at += take;
    }
    const header = parseIncrementalHeader(Buffer.concat(parts), BLOCK_SIZE, { path: w.manifestPath, fileSize: w.size });
    w.header = header;
    if (w.pending === null) this.createFromNewest(w, header);
    const p = w.pending!;
    // Which images this entry writes: the newest writes all; an older one, those below the
    // limit of every newer incremental that nothing newer supplied.
    const wanted = new Uint8Array(header.blockCount);
    for (let i = 0; i < header.blockCount; i++) {
      const b = header.blocks[i];
      if (b < p.blocks && (p.seenIn === null || b < p.limit) && !isSet(p.filled, b)) {
        wanted[i] = 1;
        setBit(p.filled, b);
      }
    }
    w.wanted = wanted;
    return rest;
  }

  private createFromNewest(w: EntryWork, header: IncrementalHeader): void {
    let last = header.truncationBlockLength;
    for (const b of header.blocks) last = Math.max(last, b + 1);
    const target = this.newestTarget.path;
    const p: PendingFile = { target, key: nonIncrementalPath(w.manifestPath), blocks: last, limit: header.truncationBlockLength, filled: new Uint8Array((last + 7) >>> 3), resolved: false, mode: this.newestTarget.mode, created: false, synced: false, lane: null, placing: 0, seenIn: null, runs: this.newestAlgorithm === 'CRC32C' ? [] : null };
    this.pending.set(nonIncrementalPath(w.manifestPath), p);
    w.pending = p;
  }

  /**
   * Writes the parts of `piece` (entry bytes from `from` on) that go into the file. Each
   * stretch of the piece (one going to a contiguous place in the file, or one passed over) is
   * CRC'd once: the CRC goes into the entry's, and a written one is kept with its place, so
   * the rebuilt file's CRC comes out of the pieces without reading it back. Writing and
   * CRC are done by the writer threads: this thread parses the archive, and the thread
   * pool stays free for its reads.
   */
  private writeWanted(w: EntryWork, piece: Buffer, from: number, slab: Buffer): void {
    const p = w.pending!;
    const places: Placement[] = [];
    const slots: Array<{ run: Run | null; stretch: { length: number; crc: number } | null }> = [];
    for (const s of cutPiece(w, p.filled, piece.length, from)) {
      const length = s.to - s.from;
      const run = s.fileAt !== null && p.runs ? { at: s.fileAt, length, crc: 0 } : null;
      const stretch = w.crcs ? { length, crc: 0 } : null;
      if (s.fileAt === null && stretch === null) continue;
      if (run) p.runs!.push(run);
      if (stretch) w.crcs!.push(stretch);
      places.push({ from: s.from - from, to: s.to - from, at: s.fileAt });
      slots.push({ run, stretch });
    }
    if (places.length === 0) return;
    this.ring.retain(slab);
    p.placing++;
    const file = w.file!;
    // The writer thread flushes the file's pages as it goes (as it does a restored file's).
    w.inFlight.track((done) =>
      this.writers.place(file, p.target, piece, places, p.runs !== null || w.crcs !== null, (err, crcs) => {
        this.ring.release(slab);
        p.placing--;
        if (err) return done(err);
        for (let i = 0; i < slots.length; i++) {
          const x = slots[i];
          if (x.run) x.run.crc = crcs[i];
          if (x.stretch) x.stretch.crc = crcs[i];
        }
        done(null);
      }),
    );
  }

  /**
   * Ends the newest backup's INCREMENTAL entry; `checked` gets its size and checksum, for the
   * manifest check, once its writes are done (failures come from settled()).
   */
  async endNewest(checked: (facts: { size: number; checksum: string }) => void): Promise<void> {
    const w = this.work!;
    this.work = null;
    if (w.header === null) throw new WalvaultError('ARCHIVE_CORRUPT', `${w.manifestPath} of backup ${w.member} ends inside its incremental header`);
    await this.settleLater(w, () => checked({ size: w.at, checksum: entryDigest(w) }));
  }

  private async endOlder(): Promise<void> {
    const w = this.work;
    if (!w) return;
    this.work = null;
    if (w.headerBytes !== null) {
      if (w.header === null) throw new WalvaultError('ARCHIVE_CORRUPT', `${w.manifestPath} of backup ${w.member} ends inside its incremental header`);
      // Blocks at or past this file's truncation length did not exist when it was taken:
      // no older backup may supply them.
      w.pending!.limit = Math.min(w.pending!.limit, w.header.truncationBlockLength);
    }
    const want = this.expected.get(w.member)?.get(w.manifestPath);
    if (!want) throw new WalvaultError('ARCHIVE_CORRUPT', `${w.manifestPath} is in backup ${w.member} but not in its manifest`);
    await this.settleLater(w, () => {
      const checksum = entryDigest(w);
      if (want.size !== w.size || (checksum !== '' && checksum !== want.checksum)) {
        throw new WalvaultError('ARCHIVE_CORRUPT', `${w.manifestPath} of backup ${w.member} does not match that backup's manifest (size or checksum)`, { fix: `the chain cannot be restored` });
      }
    });
  }

  /**
   * An entry's writes finish (and its file is closed) while the tar stream goes on, as the
   * restore's writers close files, and then `after` runs (its checksum is known only then);
   * at most SETTLING entries at once, each holding a file open.
   */
  private async settleLater(w: EntryWork, after: () => void): Promise<void> {
    const done = (async () => {
      try {
        await w.inFlight.drain();
      } finally {
        if (w.file !== null) {
          // A whole file was the last source: nothing writes to it after this entry.
          const last = w.pending!.resolved;
          await this.writers.closeAt(w.file, w.pending!.target, last);
          if (last) w.pending!.synced = true;
        }
      }
      if (w.pending?.runs && w.pending.placing === 0) w.pending.runs = mergeRuns(w.pending.runs);
      after();
    })();
    done.catch(() => undefined); // awaited in settled()
    this.settling.push(done);
    while (this.settling.length > SETTLING) await this.settling.shift();
  }

  private settling: Array<Promise<void>> = [];

  /** Every write so far done, and its file closed; the first failure thrown. */
  async settled(): Promise<void> {
    const all = this.settling.splice(0);
    await Promise.all(all);
  }
}
