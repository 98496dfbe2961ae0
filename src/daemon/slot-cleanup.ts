/**
 * A run that ends before it streamed into its state must not leave the slot it created:
 * nothing depends on it, and an inactive slot holds WAL on the server forever.
 */
import type { Logger } from 'pino';
import type { SiteConfig } from '../config/config-types';
import { errorMessage, isWalvaultError } from '../errors';
import type { ReplicationConnection } from '../postgres/replication-connection';
import { withTimeout } from '../util/timers';

const DROP_TIMEOUT_MS = 20000;

/**
 * Whether the slot a run created serves nothing: the run never streamed into its state, or it
 * ended on the server's word that the WAL at its start point is gone before any byte came
 * (the server says so only once streaming began, so the state may have been set up by then;
 * no byte can come, so nothing depends on the slot).
 */
export function slotServesNothing(run: { inUse: boolean; gotWal: boolean; endError: unknown }): boolean {
  return !run.inUse || (!run.gotWal && isWalvaultError(run.endError, 'PG_WAL_REMOVED'));
}

/** Drops the site's slot on a new connection; true when dropped, else a warning with the SQL to drop it. */
export async function dropSlotCreatedHere(openConnection: () => Promise<ReplicationConnection>, site: SiteConfig, log: Logger): Promise<boolean> {
  const slot = site.slot;
  try {
    const dropped = await withTimeout(
      (async () => {
        const conn = await openConnection();
        try {
          await conn.dropSlot(slot);
          return true;
        } finally {
          await conn.close();
        }
      })(),
      DROP_TIMEOUT_MS,
    );
    if (!dropped) throw new Error(`no answer from the server within ${DROP_TIMEOUT_MS / 1000} s`);
    log.debug({ slot }, 'dropped the replication slot this run created');
    return true;
  } catch (err) {
    log.warn(
      { slot, err: errorMessage(err) },
      `cannot drop replication slot "${slot}", created by this run that never streamed; it holds WAL on ${site.pgDescription} ` +
        `until dropped: SELECT pg_drop_replication_slot('${slot}')`,
    );
    return false;
  }
}
