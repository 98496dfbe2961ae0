/**
 * Writes the entries of one backup tar into a directory: files with the modes the server
 * gave them, each hashed (SHA-256) while written and fsynced when complete, so the restore
 * can be checked against the backup manifest without reading anything back.
 *
 * The main archive's `global/pg_control` is written under a pending name: without it no
 * server starts on a half-restored directory, and it takes its place only once everything
 * is verified. Tablespace links in `pg_tblspc/` point at the mapped directories.
 */
import { createHash, type Hash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import type { TarEntry, TarSink } from './tar-reader';

export const PENDING_CONTROL_FILE = 'global/pg_control.walvault-restoring';

export interface ExtractedFile {
  size: number;
  sha256: string;
}

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
  onBytes?: (n: number) => void;
}

export class Extractor implements TarSink {
  private handle: fsp.FileHandle | null = null;
  private hash: Hash | null = null;
  private current: TarEntry | null = null;
  private written = 0;
  private position = 0;

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
    // 'wx': a restore never writes over something that is there.
    this.handle = await fsp.open(target, 'wx', e.mode || 0o600);
    this.hash = createHash('sha256');
    this.written = 0;
    this.position = 0;
  }

  async data(chunk: Buffer): Promise<void> {
    const h = this.handle;
    if (!h) throw new WalvaultError('INTERNAL', 'tar data outside a file');
    this.hash!.update(chunk);
    let at = 0;
    while (at < chunk.length) {
      const { bytesWritten } = await h.write(chunk, at, chunk.length - at, this.position);
      at += bytesWritten;
      this.position += bytesWritten;
    }
    this.written += chunk.length;
    this.o.onBytes?.(chunk.length);
  }

  async entryEnd(): Promise<void> {
    const e = this.current!;
    if (e.type === 'file') {
      const h = this.handle;
      if (h) {
        await h.sync();
        await h.close();
        this.handle = null;
      }
      this.o.files.set(this.o.manifestPrefix + e.path, { size: this.written, sha256: this.hash!.digest('hex') });
      this.hash = null;
    }
    this.current = null;
  }

  /** Closes a file left open by a failure. */
  async abort(): Promise<void> {
    await this.handle?.close().catch(() => undefined);
    this.handle = null;
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
