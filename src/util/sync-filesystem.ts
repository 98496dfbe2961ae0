/**
 * Makes a delta restore's files durable: those it wrote, and those it kept, which were read,
 * not written, but may hold bytes still only in the page cache (written by a server that
 * crashed, say); the restore must not call them restored before they are on disk. One
 * syncfs(2) per file system (`sync -f DIR`, coreutils) does it in one call, where an fsync
 * per file costs a device flush each; without `sync -f`, each file is fsynced.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { promisify } from 'node:util';
import { runPool } from './run-pool';

const execFileP = promisify(execFile);

export async function syncFilesystems(roots: readonly string[], files: readonly string[]): Promise<void> {
  try {
    for (const root of new Set(roots)) await execFileP('sync', ['-f', root]);
    return;
  } catch {
    // No sync -f here (not Linux, or an old coreutils): one fsync per file instead.
  }
  await runPool(files, 8, async (file) => {
    const h = await fsp.open(file, 'r');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  });
}
