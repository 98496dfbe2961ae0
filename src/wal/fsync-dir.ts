import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** A rename or a new file is durable only once its directory entry is fsynced too. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `file` with `text` so that a reader sees the old content or the new one, never a
 * torn mix: a temporary file written whole and renamed over `file`. With `sync`, the file and
 * its directory are fsynced too, so a crash cannot lose or tear it either; without, it is a
 * hint rewritten often (metrics, the daemon's state for `status`), and fsyncs on the state
 * disk would compete with the spool's, which commits may wait on. A failed write removes its
 * temporary file, which on a full disk would otherwise keep the room it took.
 */
export async function replaceFile(file: string, text: string, o: { sync: boolean; mode?: number }): Promise<void> {
  const tmp = `${file}.tmp`;
  try {
    const handle = await fsp.open(tmp, 'w', o.mode ?? 0o600);
    try {
      await handle.writeFile(text);
      if (o.sync) await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  if (o.sync) await fsyncDir(path.dirname(file));
}

/** replaceFile, fsynced: for what must survive a crash (a pinned key). */
export function replaceFileDurably(file: string, text: string, mode = 0o600): Promise<void> {
  return replaceFile(file, text, { sync: true, mode });
}
