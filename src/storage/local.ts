/**
 * Local-directory storage backend. Each key is a file under `root`; '/' in a key is a
 * directory separator.
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
import { releasingChunks, type ListOptions, type ObjectBody, type ObjectInfo, type Storage } from './storage';

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
  return new WalvaultError('STORAGE_IO', `cannot ${action} ${file}: ${code} (${description})`, { cause: err });
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

export class LocalStorage implements Storage {
  readonly root: string;
  readonly description: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.description = `file://${this.root}`;
  }

  private pathOf(key: string): string {
    return path.join(this.root, ...keySegments(key));
  }

  async put(key: string, body: ObjectBody): Promise<void> {
    const target = this.pathOf(key);
    const dir = path.dirname(target);
    await ensureDurableDir(dir);

    const temp = path.join(dir, tempNameFor(path.basename(target)));
    try {
      await writeAndSync(temp, body);
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
    await ensureDurableDir(dir);
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
    await fsyncDir(dir);
    return 'adopted';
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

  async openRead(key: string, into?: Buffer): Promise<{ size: number; chunks: AsyncIterable<Buffer> } | null> {
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
        const buf = into ?? Buffer.allocUnsafe(Math.min(size, 1 << 20) || 1);
        for (let offset = 0; ; ) {
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

async function writeAndSync(file: string, body: ObjectBody): Promise<void> {
  let handle: fs.FileHandle;
  try {
    // 'wx': never follow or reuse something already at the temp name.
    handle = await fs.open(file, 'wx', 0o644);
  } catch (err) {
    throw ioError('create', file, err);
  }
  try {
    const parts: Iterable<Buffer> | AsyncIterable<Buffer> = Buffer.isBuffer(body) ? [body] : body;
    let position = 0;
    for await (const part of parts) {
      for (let done = 0; done < part.length; ) {
        const { bytesWritten } = await handle.write(part, done, part.length - done, position);
        done += bytesWritten;
        position += bytesWritten;
      }
    }
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
async function ensureDurableDir(dir: string): Promise<void> {
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
      await fs.mkdir(d, { mode: 0o755 });
    } catch (err) {
      // Another writer may create the same directory at the same time; that is fine.
      if (errnoCode(err) !== 'EEXIST') throw ioError('create directory', d, err);
    }
    await fsyncDir(path.dirname(d));
  }
}
