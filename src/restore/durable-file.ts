/**
 * A file written by way of a temporary name beside it, `.NAME.walvault-PID.tmp`, so readers
 * (PostgreSQL, the shell's `mv` in restore_command) only ever see it whole: written as its
 * bytes arrive, fsynced, renamed into place, the directory fsynced. Until commit() nothing is
 * at the final name; discard() removes the temporary file. Temporary names carry the pid, so
 * a later process can tell a dead writer's leftovers (the prefetcher removes them). Small
 * chunks (an object store's body arrives in pieces of a few KiB) are gathered into one
 * reused buffer, so a segment costs a few large writes rather than a thousand small ones.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { fsyncDir } from '../wal/fsync-dir';

const ZEROS = Buffer.alloc(1 << 20);
const GATHER = 1 << 20;

export class DurableFile {
  private gathered: Buffer | null = null;
  private filled = 0;

  private constructor(
    readonly file: string,
    private readonly tmp: string,
    private handle: fsp.FileHandle | null,
  ) {}

  static async create(file: string): Promise<DurableFile> {
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.walvault-${process.pid}.tmp`);
    try {
      return new DurableFile(file, tmp, await fsp.open(tmp, 'w', 0o600));
    } catch (err) {
      throw failed(file, err);
    }
  }

  /** Writes `chunk` (or takes a copy to write with the next ones); the caller may reuse it once this settles. */
  async write(chunk: Buffer): Promise<void> {
    if (this.filled === 0 && chunk.length >= GATHER / 4) return this.writeOut(chunk);
    for (let at = 0; at < chunk.length; ) {
      this.gathered ??= Buffer.allocUnsafeSlow(GATHER);
      const n = chunk.copy(this.gathered, this.filled, at);
      at += n;
      this.filled += n;
      if (this.filled === GATHER) await this.flush();
    }
  }

  private async flush(): Promise<void> {
    if (this.filled === 0) return;
    const n = this.filled;
    this.filled = 0;
    await this.writeOut(this.gathered!.subarray(0, n));
  }

  private async writeOut(bytes: Buffer): Promise<void> {
    try {
      for (let at = 0; at < bytes.length; ) at += (await this.handle!.write(bytes, at, bytes.length - at)).bytesWritten;
    } catch (err) {
      throw failed(this.file, err);
    }
  }

  /** `n` zero bytes, written (not a hole: PostgreSQL may write into the file later). */
  async writeZeros(n: number): Promise<void> {
    await this.flush();
    for (let left = n; left > 0; left -= ZEROS.length) await this.writeOut(left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left));
  }

  /** fsync, rename into place, fsync the directory. */
  async commit(): Promise<void> {
    await this.flush();
    try {
      await this.handle!.sync();
      await this.handle!.close();
      this.handle = null;
      await fsp.rename(this.tmp, this.file);
      await fsyncDir(path.dirname(this.file));
    } catch (err) {
      await this.discard();
      throw failed(this.file, err);
    }
  }

  async discard(): Promise<void> {
    await this.handle?.close().catch(() => undefined);
    this.handle = null;
    await fsp.rm(this.tmp, { force: true });
  }
}

/** A failure writing the destination (STORAGE_IO): not the store's, so not worth fetching again. */
export class DestinationWriteError extends WalvaultError {}

function failed(file: string, err: unknown): WalvaultError {
  return new DestinationWriteError('STORAGE_IO', `cannot write ${file}: ${(err as Error).message}`, { cause: err, local: true });
}
