/**
 * `walvault wal-fetch WALFILENAME DEST`, the restore_command form (`%f %p`).
 * Exit 0: DEST written atomically. Exit 1, silently: the archive does not have the file
 * (PostgreSQL probes for files that may not exist). Anything else: a message and exit 2+.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Archive } from '../archive/archive';
import { WalvaultError } from '../errors';
import { isHistoryFileName, isSegmentFileName } from '../wal/lsn';
import { fsyncDir } from '../wal/fsync-dir';
import { archiveFromOptions } from './archive-option';
import { reportAndExit } from './fail';

export async function walFetchCommand(
  walFileName: string,
  dest: string,
  opts: { config?: string; site?: string; archive?: string; privateKey?: string },
): Promise<number> {
  try {
    if (!isSegmentFileName(walFileName) && !isHistoryFileName(walFileName) && !/^[0-9A-F]{24}\.partial$/.test(walFileName)) {
      throw new WalvaultError(
        'WAL_BAD_NAME',
        `"${walFileName}" is not a WAL file name (24 upper-case hex digits, or TTTTTTTT.history); pass %f from restore_command`,
      );
    }
    const { openSiteArchive } = await import('../archive/site-archive');
    const archive = openSiteArchive(archiveFromOptions(opts), 'read');
    // Nothing is written unless the whole object decoded and matched its checksum.
    const data = await archive.get(Archive.walKey(walFileName));
    if (data === null) return 1;
    await writeAtomically(dest, data);
    return 0;
  } catch (err) {
    reportAndExit(err);
    return typeof process.exitCode === 'number' && process.exitCode > 1 ? process.exitCode : 2;
  }
}

async function writeAtomically(dest: string, data: Buffer): Promise<void> {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.walvault-${process.pid}.tmp`);
  try {
    const handle = await fsp.open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, dest);
    await fsyncDir(path.dirname(dest));
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw new WalvaultError('STORAGE_IO', `cannot write ${dest}: ${(err as Error).message}`, { cause: err });
  }
}
