/**
 * One receiver per state directory: two processes rewriting the same spool would tear each
 * other's segments. The lock is a file holding the owner's PID; a lock whose process is gone
 * (kill -9, crash) is taken over.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { processAlive } from '../util/process-alive';

const LOCK_FILE = 'walvault.lock';

export class StateLock {
  private constructor(private readonly file: string) {}

  /** The live process holding `stateDir`, if any (for `status`; it takes nothing). */
  static holder(stateDir: string): number | null {
    let owner: number;
    try {
      owner = Number.parseInt(fs.readFileSync(path.join(stateDir, LOCK_FILE), 'utf8'), 10);
    } catch {
      return null;
    }
    return Number.isInteger(owner) && owner > 0 && processAlive(owner) ? owner : null;
  }

  static acquire(stateDir: string): StateLock {
    const file = path.join(stateDir, LOCK_FILE);
    for (let tries = 0; tries < 3; tries++) {
      try {
        fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
        return new StateLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot lock state directory ${stateDir}: ${(err as Error).message}`, {
            cause: err,
          });
        }
      }
      const owner = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
      if (Number.isInteger(owner) && owner !== process.pid && processAlive(owner)) {
        throw new WalvaultError(
          'STATE_DIR_UNWRITABLE',
          `state directory ${stateDir} is in use by walvault process ${owner}; stop it first, or give this site its own --state`,
        );
      }
      fs.rmSync(file, { force: true });
    }
    throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot lock state directory ${stateDir}: another process keeps taking it`);
  }

  release(): void {
    try {
      const owner = Number.parseInt(fs.readFileSync(this.file, 'utf8'), 10);
      if (owner === process.pid) fs.rmSync(this.file, { force: true });
    } catch {
      /* already gone */
    }
  }
}

