/**
 * `walvault slot drop (--config FILE [--site NAME] | --pg CONNINFO --state DIR [--slot NAME])
 * [--confirm]`: removes the site's replication slot from its server, for a site that stops
 * for good. An inactive slot keeps every byte of WAL written after it, so a site that was
 * only tried can fill the primary's disk weeks later. Refused while this host's receiver for
 * the site runs (its state directory's lock), and, by the server, while any receiver streams
 * from it. A dry run unless --confirm.
 */
import { configFromOptions, loadConfigFile, selectSite } from '../config/config';
import type { SiteConfig } from '../config/config-types';
import { isWalvaultError, WalvaultError } from '../errors';
import { StateLock } from '../daemon/state-lock';
import { connectSite } from '../postgres/site-connection';
import { slotHold } from './server-view';
import type { SiteOptions } from './site-options';

export interface SlotDropOptions extends Omit<SiteOptions, 'archive'> {
  confirm?: boolean;
}

function slotSite(o: SlotDropOptions): SiteConfig {
  const oneSite = [o.pg, o.state, o.slot].some((v) => v !== undefined);
  if (o.config && oneSite) throw new WalvaultError('CONFIG_INVALID', 'give either --config or the one-site options (--pg, --state, --slot), not both');
  if (o.config) return selectSite(loadConfigFile(o.config), o.site);
  if (!o.pg || !o.state) {
    throw new WalvaultError('CONFIG_INVALID', 'no site given', { fix: 'pass --config FILE [--site NAME], or --pg CONNINFO --state DIR [--slot NAME] (as walvault run was given them)' });
  }
  // The archive is not touched here; the one-site form names it only because run needs it.
  return configFromOptions({ pg: o.pg, archive: o.state, state: o.state, slot: o.slot }).sites[0];
}

export async function slotDropCommand(o: SlotDropOptions): Promise<void> {
  const site = slotSite(o);
  const holder = StateLock.holder(site.state);
  if (holder !== null) {
    throw new WalvaultError(
      'PG_SLOT_ACTIVE',
      `walvault (pid ${holder}) is running for this site and streams from slot ${site.slot}: stop it first (Ctrl-C, or SIGTERM to pid ${holder}), then drop the slot`,
    );
  }
  const conn = await connectSite(site, 'slot_drop');
  try {
    const facts = await conn.serverFacts();
    const slot = await slotHold(conn, site.slot, facts.major, (await conn.identifySystem()).xlogPos);
    if (slot.exists === false) {
      process.stdout.write(`slot ${site.slot} does not exist on ${site.pgDescription}: nothing to drop\n`);
      return;
    }
    const keeps = slot.restartLsn !== null ? ` (it keeps the server's WAL from ${slot.restartLsn} on: ${Math.round((slot.retainedBytes ?? 0) / 1048576)} MiB)` : '';
    if (!o.confirm) {
      process.stdout.write(`would drop slot ${site.slot} on ${site.pgDescription}${keeps}\ndry run: nothing was dropped; run again with --confirm to drop it\n`);
      return;
    }
    // No wait: a walsender still holding it is a receiver elsewhere, which must be stopped.
    try {
      await conn.dropSlot(site.slot, 0);
    } catch (err) {
      if (!isWalvaultError(err, 'PG_SLOT_ACTIVE')) throw err;
      throw new WalvaultError('PG_SLOT_ACTIVE', `slot ${site.slot} on ${site.pgDescription} is in use by a receiver (walvault elsewhere, or another tool); nothing was dropped`, { fix: `stop that receiver, then drop the slot`, cause: err });
    }
    process.stdout.write(
      `dropped slot ${site.slot} on ${site.pgDescription}${keeps.replace('it keeps', 'it kept')}: the server no longer keeps WAL for walvault. ` +
        'A later walvault run creates the slot again from the server\'s position then: the WAL in between is not archived, so take a new base backup after it starts\n',
    );
  } finally {
    await conn.close();
  }
}
