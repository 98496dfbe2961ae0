/**
 * Prefetch for restore_command. PostgreSQL runs restore_command once per segment and waits
 * for it; a fetch from object storage per call would make recovery as slow as the store's
 * latency. So each wal-fetch call leaves a background prefetcher behind that keeps the next
 * segments ready, verified, in `pg_wal/walvault-prefetch/`; a call whose segment is there
 * only renames it into place, without opening the archive at all.
 *
 * Only finished segments are prefetched: they are immutable, so a copy taken earlier is the
 * same object. Partials change and are always fetched fresh.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fsyncDir } from '../wal/fsync-dir';
import { processAlive } from '../util/process-alive';

export const PREFETCH_DIR = 'walvault-prefetch';
const LOCK_FILE = '.prefetcher.pid';

/** Where prefetched segments for restore_command's destination `dest` (%p) live. */
export function prefetchDirFor(dest: string): string {
  return path.join(path.dirname(path.resolve(dest)), PREFETCH_DIR);
}

/** Moves a prefetched `name` to `dest`; false when it is not there. Touches no archive. */
export async function takePrefetched(name: string, dest: string): Promise<boolean> {
  const file = path.join(prefetchDirFor(dest), name);
  try {
    await fsp.rename(file, dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  await fsyncDir(path.dirname(path.resolve(dest)));
  return true;
}


/**
 * Takes the prefetch directory's lock for this process; false when a live prefetcher has
 * it. A lock left by a dead one is taken over.
 */
export async function lockPrefetchDir(dir: string): Promise<boolean> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const lock = path.join(dir, LOCK_FILE);
  for (let i = 0; i < 2; i++) {
    try {
      await fsp.writeFile(lock, String(process.pid), { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(await fsp.readFile(lock, 'utf8').catch(() => ''));
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) return false;
      await fsp.rm(lock, { force: true });
    }
  }
  return false;
}

export async function unlockPrefetchDir(dir: string): Promise<void> {
  const lock = path.join(dir, LOCK_FILE);
  const pid = Number(await fsp.readFile(lock, 'utf8').catch(() => ''));
  if (pid === process.pid) await fsp.rm(lock, { force: true });
}

/**
 * Starts `walvault wal-prefetch` in the background for the segments after `name`, detached
 * from PostgreSQL's restore_command (its output goes nowhere; failures only mean the next
 * call fetches for itself).
 */
export function startPrefetcher(walvault: string, archiveArgs: string[], name: string, dir: string, count: number): void {
  const child = spawn(process.execPath, [walvault, 'wal-prefetch', ...archiveArgs, '--count', String(count), '--dir', dir, name], {
    detached: true,
    stdio: 'ignore',
  });
  child.on('error', () => undefined);
  child.unref();
}
