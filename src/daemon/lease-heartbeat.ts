/**
 * Renews a receiver's archive lease every LEASE_HEARTBEAT_MS. Losing it to another receiver
 * is fatal (two writers on one archive); storage trouble is only logged, once per spell: the
 * uploader reports it, and the lease stays ours until its TTL.
 */
import type { Logger } from 'pino';
import { LEASE_HEARTBEAT_MS, type ArchiveLease } from '../archive/archive-lease';
import { errorMessage, isWalvaultError } from '../errors';

/** Starts the heartbeat; `lease()` is read at each beat (null: none held); `lost` is called once. */
export function startLeaseHeartbeat(lease: () => ArchiveLease | null, log: Logger, lost: (err: Error) => void): NodeJS.Timeout {
  let busy = false;
  let failing = false;
  const timer = setInterval(() => {
    const held = lease();
    if (busy || !held) return;
    busy = true;
    held
      .heartbeat()
      .then(() => {
        if (failing) log.info('archive lease heartbeat works again');
        failing = false;
      })
      .catch((err) => {
        if (isWalvaultError(err, 'ARCHIVE_LOCKED')) {
          log.fatal({ err: errorMessage(err) }, 'lost the archive lease: stopping');
          lost(err);
        } else if (!failing) {
          failing = true;
          log.warn({ err: errorMessage(err) }, 'cannot renew the archive lease');
        }
      })
      .finally(() => (busy = false));
  }, LEASE_HEARTBEAT_MS);
  timer.unref();
  return timer;
}
