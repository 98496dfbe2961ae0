/**
 * Local-directory storage backend. Each key is a file under `root`; '/' in a key is a
 * directory separator.
 *
 * Access: objects get `fileMode` (default 0600: WAL is the database's contents) and the
 * directories walvault creates the matching 07x0 (0700, 0750 with group read, 0755 with
 * other read). Group access for another OS user (the postgres user running restore_command):
 * fileMode 0640 and an archive directory of a group that user is in, with the setgid bit,
 * so every file and directory created below it inherits that group. A hard-linked spool
 * file is given the same mode and group as a written object.
 *
 * Durability: a put is a temp file in the target's directory, fsynced, renamed over the
 * target, then the directory is fsynced. After `put` resolves the object survives a power
 * loss, and a crash at any earlier instant leaves the old object (or none), never a torn one.
 * Directories created on the way are made durable by fsyncing their parents.
 */
import { randomBytes } from 'node:crypto';
import { close as closeFd, closeSync, open as openFd, openSync, promises as fs, read as readFd, readSync, type Dirent } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { ensureDurableDir, errnoCode, fsyncDir, ioError, writeAndSync } from './local-files';
import { releasingChunks, type ListOptions, type ObjectBody, type ObjectInfo, type ReadInto, type Storage } from './storage';

/** `.<base>.tmp-<pid>-<hex>`: hidden, unique per process and attempt, never a valid key segment. */
const TEMP_NAME_RE = /^\..*\.tmp-\d+-[0-9a-f]+$/;

function tempNameFor(base: string): string {
  return `.${base}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Rejects keys that could escape the root, alias another key, or collide with our temp
 * files. Returns the key's segments.
 */
function keySegments(key: string, what = 'key'): string[] {
  const bad = (why: string) => new WalvaultError('STORAGE_IO', `invalid storage ${what} "${key}": ${why}`);
  if (key.length === 0) throw bad('it is empty');
  if (key.includes('\0')) throw bad('it contains a NUL byte');
  if (key.startsWith('/')) throw bad('it must be relative (no leading "/")');
  if (key.includes('\\')) throw bad('use "/" as the separator, not "\\"');
  const segments = key.split('/');
  for (const seg of segments) {
    if (seg === '') throw bad('it has an empty path segment');
    if (seg === '.' || seg === '..') throw bad(`it has a "${seg}" segment`);
    if (TEMP_NAME_RE.test(seg)) throw bad('it looks like a temporary file name');
  }
  return segments;
}

export interface LocalStorageOptions {
  /** Permission bits of objects: 0600 (default), 0640 or 0644 (owner read-write, others read at most). */
  fileMode?: number;
}

const DEFAULT_FILE_MODE = 0o600;

/** The directory mode that lets the same users list what `fileMode` lets read. */
function dirModeFor(fileMode: number): number {
  return 0o700 | (fileMode & 0o040 ? 0o050 : 0) | (fileMode & 0o004 ? 0o005 : 0);
}

/** Below this, a short read of a regular file means its end. */
const ONE_READ_MAX = 1 << 30;

/** The buffer a range read fills: `into` when it is large enough. */
const rangeBuffer = (length: number, into?: Buffer) => (into !== undefined && into.length >= length ? into : Buffer.allocUnsafe(length));

/** Whether a read that gave `n` of the `ask` bytes asked met the file's end (see getRange). */
const metEnd = (n: number, ask: number) => n === 0 || (n < ask && ask < ONE_READ_MAX);

/** getRange's reads, on the calling thread. */
function readRangeSync(fd: number, buf: Buffer, offset: number, length: number): Buffer {
  let done = 0;
  for (let ask = length; ask > 0; ask = length - done) {
    const n = readSync(fd, buf, done, ask, offset + done);
    done += n;
    if (metEnd(n, ask)) break;
  }
  return buf.subarray(0, done);
}

function missingAsNull<T>(file: string, open: () => T): T | null {
  try {
    return open();
  } catch (err) {
    if (isMissing(err)) return null;
    throw ioError('open', file, err);
  }
}

export class LocalStorage implements Storage {
  readonly root: string;
  readonly description: string;
  private readonly fileMode: number;
  private readonly dirMode: number;

  constructor(root: string, opts: LocalStorageOptions = {}) {
    this.root = path.resolve(root);
    this.description = `file://${this.root}`;
    this.fileMode = opts.fileMode ?? DEFAULT_FILE_MODE;
    this.dirMode = dirModeFor(this.fileMode);
  }

  private pathOf(key: string): string {
    return path.join(this.root, ...keySegments(key));
  }

  async put(key: string, body: ObjectBody): Promise<void> {
    const target = this.pathOf(key);
    const dir = path.dirname(target);
    await ensureDurableDir(dir, this.dirMode);

    const temp = path.join(dir, tempNameFor(path.basename(target)));
    try {
      await writeAndSync(temp, body, this.fileMode);
      try {
        await fs.rename(temp, target);
      } catch (err) {
        throw ioError('rename into place', `${temp} -> ${target}`, err);
      }
    } catch (err) {
      await fs.rm(temp, { force: true }).catch(() => undefined);
      throw err;
    }
    await fsyncDir(dir);
  }

  async adoptFile(key: string, file: string): Promise<'adopted' | 'exists' | 'unsupported'> {
    const target = this.pathOf(key);
    const dir = path.dirname(target);
    await ensureDurableDir(dir, this.dirMode);
    try {
      // link(2) creates the name only if it is free: the no-overwrite rule holds without a
      // temp file, and the object appears complete (the caller fsynced the file).
      await fs.link(file, target);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'EEXIST') return 'exists';
      if (code === 'EXDEV' || code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EMLINK') return 'unsupported';
      throw ioError('link into place', `${file} -> ${target}`, err);
    }
    // The spool file keeps its own mode and group through the link: give it what a written
    // object would get. Where that is not allowed, the object is written instead.
    try {
      await this.likeAWrittenObject(target, dir);
    } catch {
      await fs.unlink(target).catch(() => undefined);
      return 'unsupported';
    }
    await fsyncDir(dir);
    return 'adopted';
  }

  /** Mode `fileMode`, and the directory's group when it has the setgid bit (as a new file would). */
  private async likeAWrittenObject(file: string, dir: string): Promise<void> {
    const [st, dirSt] = await Promise.all([fs.stat(file), fs.stat(dir)]);
    if (dirSt.mode & 0o2000 && st.gid !== dirSt.gid) await fs.chown(file, st.uid, dirSt.gid);
    if ((st.mode & 0o7777) !== this.fileMode) await fs.chmod(file, this.fileMode);
  }

  async accessWarnings(): Promise<string[]> {
    const warnings: string[] = [];
    for (const dir of [this.root, path.join(this.root, 'wal'), path.join(this.root, 'backups')]) {
      let mode: number;
      try {
        mode = (await fs.stat(dir)).mode & 0o777;
      } catch {
        continue;
      }
      const extra = mode & 0o077 & ~this.dirMode;
      if (extra === 0) continue;
      warnings.push(
        `archive directory ${dir} has mode ${octal(mode)}, looser than the ${octal(this.dirMode)} that archive_file_mode ${octal(this.fileMode)} asks for: ` +
          `${extra & 0o007 ? 'every user' : 'its group'} can ${extra & 0o022 ? 'change' : 'read'} the archive there; chmod ${octal(this.dirMode)} ${dir} (and what is below), or set archive_file_mode if that access is wanted`,
      );
    }
    return warnings;
  }

  async get(key: string): Promise<Buffer | null> {
    const file = this.pathOf(key);
    try {
      return await fs.readFile(file);
    } catch (err) {
      if (isMissing(err)) return null;
      throw ioError('read', file, err);
    }
  }

  /** The object's file opened for reading, or null when there is no object. */
  private async openObject(key: string): Promise<{ file: string; handle: fs.FileHandle } | null> {
    const file = this.pathOf(key);
    try {
      return { file, handle: await fs.open(file, 'r') };
    } catch (err) {
      if (isMissing(err)) return null;
      throw ioError('open', file, err);
    }
  }

  /**
   * Through a file descriptor, not a FileHandle: a delta restore reads hundreds of parts, and
   * the FileHandle's promises cost that restore's busiest thread about a tenth of a second.
   * A read of a regular file that returns less than it asked for has met the file's end (Linux
   * caps one read just under 2 GiB), so a part takes an open and one read.
   */
  async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    const file = this.pathOf(key);
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) => openFd(file, 'r', (err, got) => (err ? reject(err) : resolve(got))));
    } catch (err) {
      if (isMissing(err)) return null;
      throw ioError('open', file, err);
    }
    try {
      const buf = rangeBuffer(length, into);
      let done = 0;
      while (done < length) {
        const ask = length - done;
        const n = await new Promise<number>((resolve, reject) => readFd(fd, buf, done, ask, offset + done, (err, got) => (err ? reject(err) : resolve(got))));
        done += n;
        if (metEnd(n, ask)) break;
      }
      return buf.subarray(0, done);
    } catch (err) {
      throw ioError('read', file, err);
    } finally {
      closeFd(fd, () => undefined);
    }
  }

  getRangeNow(key: string, offset: number, length: number, into?: Buffer): Buffer | null {
    const file = this.pathOf(key);
    const fd = missingAsNull(file, () => openSync(file, 'r'));
    if (fd === null) return null;
    try {
      return readRangeSync(fd, rangeBuffer(length, into), offset, length);
    } catch (err) {
      throw ioError('read', file, err);
    } finally {
      closeSync(fd);
    }
  }

  async openRead(key: string, into?: ReadInto): Promise<{ size: number; chunks: AsyncIterable<Buffer> } | null> {
    const opened = await this.openObject(key);
    if (opened === null) return null;
    const { file, handle } = opened;
    let size: number;
    try {
      size = (await handle.stat()).size;
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw ioError('stat', file, err);
    }
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        const reused = typeof into === 'function' ? null : (into ?? Buffer.allocUnsafe(Math.min(size, 1 << 20) || 1));
        // Past the announced size a read only proves the end (or that the file grew, which
        // the reader refuses): a caller's fresh buffer is not spent on it.
        let probe: Buffer | null = null;
        for (let offset = 0; ; ) {
          const buf = reused ?? (offset < size ? (into as () => Buffer)() : (probe ??= Buffer.allocUnsafe(4096)));
          let bytesRead: number;
          try {
            ({ bytesRead } = await handle.read(buf, 0, buf.length, offset));
          } catch (err) {
            throw ioError('read', file, err);
          }
          if (bytesRead === 0) return;
          offset += bytesRead;
          yield buf.subarray(0, bytesRead);
        }
      } finally {
        await handle.close().catch(() => undefined);
      }
    }
    return { size, chunks: releasingChunks(chunks(), () => handle.close().catch(() => undefined)) };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const file = this.pathOf(key);
    try {
      const st = await fs.stat(file);
      return st.isFile() ? { key, size: st.size, modified: st.mtime } : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw ioError('stat', file, err);
    }
  }

  async list(prefix: string, opts: ListOptions = {}): Promise<ObjectInfo[]> {
    // A prefix is a string prefix of keys, not a directory: walk the deepest directory it
    // fully names and filter the rest.
    if (prefix.includes('\0')) throw new WalvaultError('STORAGE_IO', `invalid storage prefix "${prefix}": it contains a NUL byte`);
    const cut = prefix.lastIndexOf('/');
    const dirKey = cut < 0 ? '' : prefix.slice(0, cut);
    const startDir = dirKey === '' ? this.root : path.join(this.root, ...keySegments(dirKey, 'prefix'));

    const files: Array<{ key: string; full: string }> = [];
    await this.walk(startDir, dirKey, prefix, files);
    const after = opts.startAfter;
    // Plain code-unit order, not locale order: keys are ASCII and callers rely on
    // segment names sorting like their LSNs.
    const wanted = (after === undefined ? files : files.filter((f) => f.key > after)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    // Only the files listed are stat'ed: a reader that asks for a few keys after a name
    // does not pay a stat for every file of a large directory.
    const found: ObjectInfo[] = [];
    for (const f of wanted) {
      if (opts.limit !== undefined && found.length >= opts.limit) break;
      try {
        const st = await fs.stat(f.full);
        if (st.isFile()) found.push({ key: f.key, size: st.size, modified: st.mtime });
      } catch (err) {
        // Deleted between readdir and stat: it is simply not there any more.
        if (!isMissing(err)) throw ioError('stat', f.full, err);
      }
    }
    return found;
  }

  private async walk(dir: string, dirKey: string, prefix: string, out: Array<{ key: string; full: string }>): Promise<void> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return;
      throw ioError('list', dir, err);
    }
    for (const entry of entries) {
      if (TEMP_NAME_RE.test(entry.name)) continue;
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        // Only descend where some key below could still match the prefix.
        if (key.startsWith(prefix) || prefix.startsWith(key + '/')) await this.walk(full, key, prefix, out);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        out.push({ key, full });
      }
    }
  }


  async delete(key: string): Promise<void> {
    const file = this.pathOf(key);
    try {
      await fs.unlink(file);
    } catch (err) {
      // A directory is not an object, so there is no object to delete at this key
      // (Linux says EISDIR, macOS says EPERM).
      if (isMissing(err) || (errnoCode(err) === 'EPERM' && (await isDirectory(file)))) return;
      throw ioError('delete', file, err);
    }
    await fsyncDir(path.dirname(file));
  }

  async close(): Promise<void> {
    // Nothing is held open between calls.
  }
}

/** ENOENT, or ENOTDIR when a parent "directory" is a file, or EISDIR: no object there. */
function isMissing(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

function octal(mode: number): string {
  return '0' + mode.toString(8).padStart(3, '0');
}
