/**
 * Renews a receiver's archive lease every LEASE_HEARTBEAT_MS. Losing it to another receiver
 * is fatal (two writers on one archive); storage trouble is only logged, once per spell: the
 * uploader reports it, and the lease stays ours until its TTL.
 */
import type { Logger } from 'pino';
import { LEASE_HEARTBEAT_MS, type ArchiveLease } from '../archive/archive-lease';
import { errorMessage, isWalvaultError } from '../errors';

/**
 * Starts the heartbeat of every lease `leases()` gives (read at each beat: none while none are
 * held), each archive's on its own, so a store that hangs holds back no other's; `lost` is
 * called once.
 */
export function startLeaseHeartbeat(leases: () => readonly ArchiveLease[], log: Logger, lost: (err: Error) => void): NodeJS.Timeout {
  const busy = new Set<ArchiveLease>();
  const failing = new Set<ArchiveLease>();
  let gone = false;
  const timer = setInterval(() => {
    for (const held of leases()) {
      if (busy.has(held) || gone) continue;
      busy.add(held);
      held
        .heartbeat()
        .then(() => {
          if (failing.delete(held)) log.info({ archive: held.description }, `archive lease heartbeat on ${held.description} works again`);
        })
        .catch((err) => {
          if (isWalvaultError(err, 'ARCHIVE_LOCKED')) {
            if (gone) return;
            gone = true;
            log.fatal({ err: errorMessage(err) }, 'lost the archive lease: stopping');
            lost(err);
          } else if (!failing.has(held)) {
            failing.add(held);
            log.warn({ archive: held.description, err: errorMessage(err) }, `cannot renew the archive lease on ${held.description}`);
          }
        })
        .finally(() => busy.delete(held));
    }
  }, LEASE_HEARTBEAT_MS);
  timer.unref();
  return timer;
}
