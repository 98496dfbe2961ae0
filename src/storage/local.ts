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
import { promises as fs, type Dirent } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { writeFully } from '../util/write-fully';
import { releasingChunks, type ListOptions, type ObjectBody, type ObjectChunk, type ObjectInfo, type ReadInto, type Storage } from './storage';

/** `.<base>.tmp-<pid>-<hex>`: hidden, unique per process and attempt, never a valid key segment. */
const TEMP_NAME_RE = /^\..*\.tmp-\d+-[0-9a-f]+$/;

function tempNameFor(base: string): string {
  return `.${base}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function ioError(action: string, file: string, err: unknown): WalvaultError {
  const code = errnoCode(err) ?? 'unknown error';
  // Node's message repeats the code, syscall and paths; keep only its human description.
  const text = err instanceof Error ? err.message : String(err);
  const description = /^[A-Z0-9_]+: ([^,]+),/.exec(text)?.[1] ?? text;
  // Reading as another OS user (restore_command runs as the server's user) meets the
  // archive's default owner-only modes: say how to share it.
  const hint = code === 'EACCES' && ['read', 'open', 'stat', 'list'].includes(action)
    ? `; this user (uid ${process.getuid?.() ?? '?'}) may not read the archive: its objects are readable by their owner only unless archive_file_mode says "0640" with the archive directory in this user's group (docs/restore-runbook.md)`
    : '';
  return new WalvaultError('STORAGE_IO', `cannot ${action} ${file}: ${code} (${description})${hint}`, { cause: err });
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

  async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    const opened = await this.openObject(key);
    if (opened === null) return null;
    const { file, handle } = opened;
    try {
      const buf = into !== undefined && into.length >= length ? into : Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    } catch (err) {
      throw ioError('read', file, err);
    } finally {
      await handle.close().catch(() => undefined);
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

/** Streamed chunks under this (32 KiB frames compressed, not 1 MiB ones) are copied into writes of GATHER_SIZE. */
const GATHER_BELOW = 64 * 1024;
const GATHER_SIZE = 1024 * 1024;

async function writeAndSync(file: string, body: ObjectBody, mode: number): Promise<void> {
  let handle: fs.FileHandle;
  try {
    // 'wx': never follow or reuse something already at the temp name.
    handle = await fs.open(file, 'wx', mode);
  } catch (err) {
    throw ioError('create', file, err);
  }
  try {
    // Exactly `mode`, whatever the umask took away.
    await handle.chmod(mode);
    // A list (parts, or one streamed frame's pieces) goes down in one vectored write; small
    // chunks of a stream (a backup part's 32 KiB frames) are gathered first (GATHER_BELOW).
    const streamed = !Buffer.isBuffer(body) && !Array.isArray(body);
    const chunks: Iterable<ObjectChunk> | AsyncIterable<ObjectChunk> = streamed ? (body as AsyncIterable<ObjectChunk>) : [Buffer.isBuffer(body) ? body : (body as readonly Buffer[])];
    let position = 0;
    let staged: Buffer | null = null;
    let stagedLength = 0;
    const flush = async () => {
      if (stagedLength > 0) position = await writeFully(handle, [staged!.subarray(0, stagedLength)], position);
      stagedLength = 0;
    };
    for await (const chunk of chunks) {
      const pieces = Buffer.isBuffer(chunk) ? [chunk] : chunk;
      const length = pieces.reduce((sum, p) => sum + p.length, 0);
      if (!streamed || length >= GATHER_BELOW) {
        await flush();
        position = await writeFully(handle, pieces, position);
        continue;
      }
      if (stagedLength + length > GATHER_SIZE) await flush();
      staged ??= Buffer.allocUnsafe(GATHER_SIZE);
      for (const p of pieces) stagedLength += p.copy(staged, stagedLength);
    }
    await flush();
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    // A streamed body's own error (say, a checksum that no longer holds) is the cause to report.
    if (err instanceof WalvaultError) throw err;
    throw ioError('write', file, err);
  }
  try {
    await handle.close();
  } catch (err) {
    throw ioError('close', file, err);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(dir, 'r');
  } catch (err) {
    throw ioError('open directory', dir, err);
  }
  try {
    await handle.sync();
  } catch (err) {
    // Some filesystems cannot fsync a directory; their renames are as durable as they get.
    const code = errnoCode(err);
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw ioError('fsync directory', dir, err);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * mkdir -p, but each directory it creates is made durable by fsyncing its parent, so a
 * file renamed into it cannot vanish with its directory entry after a crash.
 */
async function ensureDurableDir(dir: string, mode: number): Promise<void> {
  const missing: string[] = [];
  let cur = dir;
  for (;;) {
    let isDir: boolean;
    try {
      isDir = (await fs.stat(cur)).isDirectory();
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw ioError('stat', cur, err);
      missing.push(cur);
      const parent = path.dirname(cur);
      if (parent === cur) break;
      cur = parent;
      continue;
    }
    if (!isDir) throw new WalvaultError('STORAGE_IO', `cannot create objects under ${cur}: ENOTDIR (it is a file, not a directory)`);
    break;
  }
  for (const d of missing.reverse()) {
    try {
      await fs.mkdir(d, { mode });
      // Exactly `mode` whatever the umask took away, keeping a setgid bit inherited from the
      // parent (it is what gives new objects the directory's group).
      const st = await fs.stat(d);
      if ((st.mode & 0o777) !== mode) await fs.chmod(d, mode | (st.mode & 0o2000));
    } catch (err) {
      // Another writer may create the same directory at the same time; that is fine.
      if (errnoCode(err) !== 'EEXIST') throw ioError('create directory', d, err);
    }
    await fsyncDir(path.dirname(d));
  }
}
