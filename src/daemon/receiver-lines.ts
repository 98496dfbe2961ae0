/**
 * The receiver's lines for the operator at start and stop: where it starts and what it
 * archives to, the warning for a slot the server never bounds, and where it stopped with what
 * the slot holds on the server meanwhile. Each names the fix where there is one.
 */
import type { Logger } from 'pino';
import type { SiteConfig } from '../config/config-types';
import type { ServerFacts, SystemIdentity } from '../postgres/replication-connection';
import { serverVersionText } from '../postgres/server-version';
import { formatLsn, type Lsn } from '../wal/lsn';

function logStartLine(log: Logger, site: SiteConfig, o: { identity: SystemIdentity; facts: ServerFacts; start: Lsn; archive: string }): void {
  const { identity, facts } = o;
  log.info(
    {
      serverVersion: facts.versionNum,
      systemId: identity.systemId,
      timeline: identity.timeline,
      walSegmentSize: facts.walSegmentSize,
      slot: site.slot,
      startLsn: formatLsn(o.start),
      mode: site.mode,
      archive: o.archive,
      server: site.pgDescription,
    },
    `PostgreSQL ${serverVersionText(facts.versionNum)}, system ${identity.systemId}, timeline ${identity.timeline}, slot ${site.slot}, ` +
      `starting at ${formatLsn(o.start)}, archiving to ${o.archive}`,
  );
}

/**
 * Both choices lose something (an unbounded slot can fill the server's disk; a bounded one
 * can leave the archive a gap), so the operator should pick one knowingly.
 */
function logUnboundedSlot(log: Logger, site: SiteConfig): void {
  log.warn(
    { slot: site.slot, server: site.pgDescription, setting: 'max_slot_wal_keep_size' },
    `the server has no max_slot_wal_keep_size: while walvault is stopped or cannot archive, slot ${site.slot} keeps every byte of WAL ` +
      `until the server's disk is full; to bound it: ALTER SYSTEM SET max_slot_wal_keep_size = '64GB'; SELECT pg_reload_conf(); ` +
      `(past that much unarchived WAL the server drops it and the archive gets a gap: size it above the longest outage you accept). ` +
      'A site that stops for good: walvault slot drop',
  );
}

/** Where the site stopped, and what the server holds for it meanwhile. */
export function logStopLine(log: Logger, site: SiteConfig, o: { received: Lsn; archived: Lsn; reportedFlush: Lsn }): void {
  // Before any report the slot still holds from where the archive ends.
  const kept = o.reportedFlush > 0n ? o.reportedFlush : o.archived;
  log.info(
    { received: formatLsn(o.received), archived: formatLsn(o.archived), slot: site.slot, slotKeepsFrom: formatLsn(kept) },
    `stopped: received up to ${formatLsn(o.received)}, archived up to ${formatLsn(o.archived)}; ` +
      `slot ${site.slot} on ${site.pgDescription} now keeps the server's WAL from ${formatLsn(kept)} on, ` +
      'until walvault streams from it again or the slot is dropped',
  );
}

/**
 * The start's lines, in their order: the start line once the server accepts streaming (a start
 * it refuses says so in one line instead), then, once WAL flows, the unbounded-slot warning.
 * Each once a run.
 */
export class StartLines {
  private startLine: (() => void) | null = null;
  private unbounded = false;
  private armed = false;

  constructor(
    private readonly log: Logger,
    private readonly site: SiteConfig,
  ) {}

  prepare(o: { identity: SystemIdentity; facts: ServerFacts; start: Lsn; archive: string }, unboundedSlot: boolean): void {
    this.startLine = () => logStartLine(this.log, this.site, o);
    this.unbounded = unboundedSlot;
  }

  /** The server accepted streaming. */
  streaming(): void {
    if (!this.startLine) return;
    this.startLine();
    this.startLine = null;
    this.armed = this.unbounded;
  }

  /** WAL has arrived. */
  walFlowing(): void {
    if (!this.armed) return;
    this.armed = this.unbounded = false;
    logUnboundedSlot(this.log, this.site);
  }
}
