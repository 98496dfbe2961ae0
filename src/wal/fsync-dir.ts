import { promises as fsp } from 'node:fs';

/** A rename or a new file is durable only once its directory entry is fsynced too. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
