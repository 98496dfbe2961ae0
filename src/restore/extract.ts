/**
 * Writes the entries of one backup tar into a directory: directories and links here, files
 * by the writer threads (./file-writers.ts), which hash each file while writing it and fsync
 * it when complete, so the restore can be checked against the backup manifest without
 * reading anything back.
 *
 * The main archive's `global/pg_control` is written under a pending name: without it no
 * server starts on a half-restored directory, and it takes its place only once everything
 * is verified. Tablespace links in `pg_tblspc/` point at the mapped directories. A delta
 * restore's matching files (./delta.ts) are kept: their bytes in the tar are passed over.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import type { ChainPatcher } from './chain-patcher';
import type { DeltaVerdict } from './delta';
import type { FileWriterPool, WrittenFile } from './file-writers';
import { isIncrementalPath, nonIncrementalPath } from './incremental-file';
import type { ManifestChecksumAlgorithm } from './manifest-checksum';
import type { SlabRing } from './slab-ring';
import type { TarEntry, TarSink } from '../util/tar-reader';

export const PENDING_CONTROL_FILE = 'global/pg_control.walvault-restoring';

export type ExtractedFile = WrittenFile;

export interface ExtractOptions {
  /** Where this archive's entries go. */
  root: string;
  /** How paths of this archive are named in the manifest ('' or `pg_tblspc/<oid>/`). */
  manifestPrefix: string;
  /** The main archive: hold pg_control back, and map tablespace links. */
  isBase: boolean;
  /** OID -> directory, for the pg_tblspc links of the main archive. */
  tablespaceDirs: Map<string, string>;
  /** Collects every regular file written, keyed by manifest path. */
  files: Map<string, ExtractedFile>;
  /** Directories created, fsynced at the end. */
  dirs: Set<string>;
  writers: FileWriterPool;
  /** The slabs file contents are views of. */
  ring: SlabRing;
  onBytes?: (n: number) => void;
  /**
   * The newest backup of an incremental chain: its `INCREMENTAL.*` files become their real
   * files through the patcher (the older members supply the rest later).
   */
  chain?: { patcher: ChainPatcher; member: string; algorithm: ManifestChecksumAlgorithm };
  /**
   * A delta restore's verdicts on the files already in place, by manifest path (./delta.ts):
   * a file that matches the manifest is left as it is (its mode set), its bytes in the tar
   * passed over; a large one that differs ('patch') is written in place, only its pages that
   * differ; a small one that differs (null) has been removed, and is written.
   */
  keep?: ReadonlyMap<string, Promise<DeltaVerdict>>;
  /** Bytes of kept files passed over. */
  onKept?: (n: number) => void;
}

export class Extractor implements TarSink {
  /** The slab the tar reader is reading now: the contents it passes are views of it. */
  slab: Buffer | null = null;
  private current: TarEntry | null = null;
  private fileId: number | null = null;
  /** The current entry is an INCREMENTAL file going through the chain patcher. */
  private patching = false;
  /** The current entry is a file a delta restore keeps. */
  private keeping: ExtractedFile | null = null;
  private readonly closing: Array<Promise<void>> = [];

  constructor(private readonly o: ExtractOptions) {}

  private target(p: string): string {
    const rel = this.o.isBase && p === 'global/pg_control' ? PENDING_CONTROL_FILE : p;
    return path.join(this.o.root, rel);
  }

  private async ensureDir(dir: string, mode = 0o700): Promise<void> {
    if (this.o.dirs.has(dir)) return;
    await fsp.mkdir(dir, { recursive: true, mode });
    this.o.dirs.add(dir);
  }

  async entry(e: TarEntry): Promise<void> {
    this.current = e;
    const target = this.target(e.path);
    await this.ensureDir(path.dirname(target));
    if (e.type === 'directory') {
      await this.ensureDir(target, e.mode || 0o700);
      await fsp.chmod(target, e.mode || 0o700);
      return;
    }
    if (e.type === 'symlink') {
      const oid = this.o.isBase && /^pg_tblspc\/[0-9]+$/.test(e.path) ? e.path.slice('pg_tblspc/'.length) : null;
      const to = oid !== null ? (this.o.tablespaceDirs.get(oid) ?? e.linkTarget) : e.linkTarget;
      await fsp.symlink(to, target);
      return;
    }
    const pending = e.type === 'file' ? this.o.keep?.get(this.o.manifestPrefix + e.path) : undefined;
    const verdict = pending ? await pending : null;
    if (verdict) await fsp.chmod(target, e.mode || 0o600);
    if (verdict === 'patch') {
      this.fileId = this.o.writers.open(target, e.mode || 0o600, e.size, true);
      return;
    }
    if (verdict) {
      this.keeping = verdict;
      return;
    }
    const chain = this.o.chain;
    if (chain && e.type === 'file' && isIncrementalPath(e.path)) {
      this.patching = true;
      chain.patcher.beginNewest(chain.member, this.o.manifestPrefix + e.path, this.target(nonIncrementalPath(e.path)), e.mode || 0o600, e.size, chain.algorithm);
      return;
    }
    // Created exclusively: a restore never writes over something that is there.
    this.fileId = this.o.writers.open(target, e.mode || 0o600, e.size);
  }

  data(chunk: Buffer): void | Promise<void> {
    if (this.keeping) {
      this.o.onKept?.(chunk.length);
      this.o.onBytes?.(chunk.length);
      return;
    }
    if (this.patching) {
      this.o.chain!.patcher.data(chunk, this.slab!);
      this.o.onBytes?.(chunk.length);
      return;
    }
    const slab = this.slab;
    if (this.fileId === null || !slab || chunk.buffer !== slab.buffer) throw new WalvaultError('INTERNAL', 'tar data outside a file or its slab');
    this.o.ring.retain(slab);
    const n = chunk.length;
    this.o.writers.write(this.fileId, chunk, () => {
      this.o.ring.release(slab);
      this.o.onBytes?.(n);
    });
  }

  entryEnd(): void | Promise<void> {
    const e = this.current!;
    if (this.keeping) {
      this.o.files.set(this.o.manifestPrefix + e.path, this.keeping);
      this.keeping = null;
      this.current = null;
      return;
    }
    if (this.patching) {
      this.patching = false;
      this.current = null;
      return this.o.chain!.patcher.endNewest((w) => void this.o.files.set(this.o.manifestPrefix + e.path, w));
    }
    if (e.type === 'file' && this.fileId !== null) {
      const key = this.o.manifestPrefix + e.path;
      const done = this.o.writers.close(this.fileId).then((w) => void this.o.files.set(key, w));
      done.catch(() => undefined); // awaited in finish()
      this.closing.push(done);
      this.fileId = null;
    }
    this.current = null;
  }

  /** Every file of this archive written, fsynced and closed. */
  async finish(): Promise<void> {
    await Promise.all(this.closing);
  }
}

/** fsyncs each directory, deepest first, so every entry written is durable. */
export async function syncDirs(dirs: Iterable<string>): Promise<void> {
  const sorted = [...dirs].sort((a, b) => b.length - a.length);
  for (const d of sorted) {
    const h = await fsp.open(d, 'r');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  }
}
