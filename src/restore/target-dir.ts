/** The directories a restore writes into: empty, absent, or emptied with --force. */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';

/** True when empty, false when it holds something, null when absent. */
export async function isEmptyDir(dir: string): Promise<boolean | null> {
  try {
    return (await fsp.readdir(dir)).length === 0;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ENOTDIR') throw new WalvaultError('CONFIG_INVALID', `${dir} is not a directory`, { fix: `choose a directory to restore into` });
    throw err;
  }
}

/** Empty or absent, or emptied with --force; never anything else. Created 0700 if absent. */
export async function prepareDir(dir: string, force: boolean, what: string): Promise<void> {
  const empty = await isEmptyDir(dir);
  if (empty === false) {
    if (!force) throw new WalvaultError('CONFIG_INVALID', `${what} ${dir} is not empty`, { fix: `choose an empty directory, or add --force to delete its contents first` });
    for (const name of await fsp.readdir(dir)) await fsp.rm(path.join(dir, name), { recursive: true, force: true });
  }
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  await fsp.chmod(dir, 0o700);
}
