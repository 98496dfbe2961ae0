/**
 * How a local archive's files are written and its directories made: durable before a put
 * resolves (./local.ts), and the errors they raise, named for the file and the fix.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { writeFully } from '../util/write-fully';
import type { ObjectBody, ObjectChunk } from './storage';

export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

export function ioError(action: string, file: string, err: unknown): WalvaultError {
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

/** Streamed chunks under this (32 KiB frames compressed, not 1 MiB ones) are copied into writes of GATHER_SIZE. */
const GATHER_BELOW = 64 * 1024;
const GATHER_SIZE = 1024 * 1024;

export async function writeAndSync(file: string, body: ObjectBody, mode: number): Promise<void> {
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

export async function fsyncDir(dir: string): Promise<void> {
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
export async function ensureDurableDir(dir: string, mode: number): Promise<void> {
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
