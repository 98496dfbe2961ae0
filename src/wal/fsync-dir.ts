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
 * Replaces `file` with `text` so that a reader, or a crash, sees the old content or the new
 * one, never a torn mix: a temporary file written whole and fsynced, renamed over `file`,
 * the directory fsynced. A failed write removes its temporary file, which on a full disk
 * would otherwise keep the room it took.
 */
export async function replaceFileDurably(file: string, text: string, mode = 0o600): Promise<void> {
  const tmp = `${file}.tmp`;
  try {
    const handle = await fsp.open(tmp, 'w', mode);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(file));
}
