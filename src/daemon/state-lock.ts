/**
 * One receiver per state directory: two processes rewriting the same spool would tear each
 * other's segments. The lock is a symbolic link whose target is the owner's PID; a lock whose
 * process is gone (kill -9, crash) is taken over.
 *
 * A symbolic link rather than a file holding the PID: creating it is atomic (EEXIST when
 * taken), and a target this short lives in the inode (tmpfs, ext4, xfs), so it needs no data
 * block. A receiver restarted on a full disk must take the lock before it can archive its spool
 * and make room. A lock file an older walvault left (a regular file with the PID) still reads.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { isDiskFull, stateDiskFullError } from '../util/disk-full';
import { processAlive } from '../util/process-alive';

const LOCK_FILE = 'walvault.lock';

export class StateLock {
  private constructor(private readonly file: string) {}

  /** The live process holding `stateDir`, if any (for `status`; it takes nothing). */
  static holder(stateDir: string): number | null {
    const owner = readOwner(path.join(stateDir, LOCK_FILE));
    return owner !== null && owner > 0 && processAlive(owner) ? owner : null;
  }

  static acquire(stateDir: string): StateLock {
    const file = path.join(stateDir, LOCK_FILE);
    for (let tries = 0; tries < 3; tries++) {
      try {
        fs.symlinkSync(String(process.pid), file);
        return new StateLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          if (isDiskFull(err)) throw stateDiskFullError(stateDir, 'taking the lock', err);
          throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot lock state directory ${stateDir}: ${(err as Error).message}`, {
            cause: err,
          });
        }
      }
      const owner = readOwner(file);
      if (owner !== null && owner !== process.pid && processAlive(owner)) {
        throw new WalvaultError(
          'STATE_DIR_UNWRITABLE',
          `state directory ${stateDir} is in use by walvault process ${owner}`, { fix: `stop it first, or give this site its own --state` },
        );
      }
      fs.rmSync(file, { force: true });
    }
    throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot lock state directory ${stateDir}: another process keeps taking it`);
  }

  release(): void {
    try {
      if (readOwner(this.file) === process.pid) fs.rmSync(this.file, { force: true });
    } catch {
      /* already gone */
    }
  }
}

/** The PID a lock names: a link's target, or an older walvault's file content; null if none. */
function readOwner(file: string): number | null {
  let text: string;
  try {
    text = fs.readlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') return null;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return null;
    }
  }
  const owner = Number.parseInt(text, 10);
  return Number.isInteger(owner) ? owner : null;
}

