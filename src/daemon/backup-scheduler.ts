/**
 * The daemon's base-backup duties for one site, checked every 30 s (more often for short
 * intervals), whatever the schedule:
 *  1. finish backups whose stream was stored but whose push died while waiting for the WAL
 *     (metadata, no completion marker, no live backup lease): once the WAL through their
 *     stop LSN is archived, write the marker;
 *  2. take a backup when the newest complete one is older than the interval (or there is
 *     none), while the site streams and no other backup runs;
 *  3. apply the retention policy.
 * A failure is logged and tried again later; it never stops the receiver.
 */
import type { Logger } from 'pino';
import { ArchiveLease, BACKUP_LEASE, LEASE_TTL_MS } from '../archive/archive-lease';
import { openSiteArchive } from '../archive/site-archive';
import { readPendingMetadata, scanBackups, storeCompletion, type BackupMetadata } from '../backup/catalog';
import { describePlan, executeDeletion, planDeletion, planIsEmpty } from '../backup/retention';
import { takeBackup, waitForWal } from '../backup/take-backup';
import type { SiteConfig } from '../config/config';
import { errorMessage } from '../errors';
import type { Sample } from '../observe/metrics';
import { sleep } from '../util/timers';

/** Also how soon a backup whose push gave up waiting for its WAL gets completed. */
const TICK_MS = 30_000;
const RETRY_AFTER_FAILURE_MS = 5 * 60_000;
const WAL_WAIT_SECONDS = 3600;

export class BackupScheduler {
  private readonly stopController = new AbortController();
  private retryAt = 0;
  private backupRunning = false;

  constructor(
    private readonly site: SiteConfig,
    private readonly log: Logger,
    /** Whether the site's receiver is streaming now (a backup's WAL would not arrive otherwise). */
    private readonly streaming: () => boolean,
  ) {
    // Looked at four times per interval, at most every TICK_MS, at least once a second.
    this.tickMs = site.backupIntervalHours > 0 ? Math.min(TICK_MS, Math.max(1000, this.intervalMs() / 4)) : TICK_MS;
  }

  private readonly tickMs: number;

  private get retentionOn(): boolean {
    return this.site.retainBackups > 0 || this.site.recoveryWindowDays > 0;
  }

  stop(): void {
    this.stopController.abort();
  }

  private newestComplete: BackupMetadata | null = null;
  private completeCount: number | null = null;

  /** The newest complete backup, as of the last look at the archive, for the metrics. */
  metrics(): Sample[] {
    const labels = { site: this.site.name };
    if (this.completeCount === null) return [];
    const out: Sample[] = [{ name: 'walvault_backups_complete', help: 'Complete base backups in the archive', type: 'gauge', value: this.completeCount, labels }];
    const b = this.newestComplete;
    if (!b) return out;
    const start = Date.parse(b.startedAt) / 1000;
    const end = Date.parse(b.stoppedAt) / 1000;
    out.push(
      { name: 'walvault_backup_last_start_timestamp_seconds', help: 'When the newest complete base backup started (Unix time)', type: 'gauge', value: start, labels },
      { name: 'walvault_backup_last_end_timestamp_seconds', help: 'When the newest complete base backup ended (Unix time)', type: 'gauge', value: end, labels },
      { name: 'walvault_backup_last_duration_seconds', help: 'How long the newest complete base backup took', type: 'gauge', value: end - start, labels },
      { name: 'walvault_backup_last_size_bytes', help: 'Size of the newest complete base backup, uncompressed', type: 'gauge', value: b.rawBytes, labels },
      { name: 'walvault_backup_last_stored_bytes', help: 'Bytes the newest complete base backup takes in the archive', type: 'gauge', value: b.storedBytes, labels },
    );
    return out;
  }

  async run(): Promise<void> {
    const signal = this.stopController.signal;
    // Let the receiver connect first: the WAL of a backup taken now must reach the archive.
    await sleep(Math.min(this.tickMs, 5000), signal);
    while (!signal.aborted) {
      try {
        await this.tick(signal);
      } catch (err) {
        // A failed backup is an error; not reaching the archive to look is the receiver's
        // outage, which it already reports once per interval.
        const level = this.backupRunning ? 'error' : 'warn';
        this.log[level]({ err: errorMessage(err) }, this.backupRunning ? 'scheduled base backup failed; trying again later' : 'base backup duties could not reach the archive; trying again later');
        this.backupRunning = false;
        this.retryAt = Date.now() + Math.min(RETRY_AFTER_FAILURE_MS, this.intervalMs() || RETRY_AFTER_FAILURE_MS);
      }
      await sleep(this.tickMs, signal);
    }
  }

  private intervalMs(): number {
    return this.site.backupIntervalHours * 3_600_000;
  }

  private async tick(signal: AbortSignal): Promise<void> {
    const archive = openSiteArchive(this.site, 'write');
    try {
      const lease = new ArchiveLease(archive.storage, this.site.name, this.site.state, LEASE_TTL_MS, BACKUP_LEASE);
      const running = await lease.liveHolder();
      const entries = await scanBackups(archive);
      // 1. Pending backups whose push is gone.
      for (const e of entries.filter((x) => !x.complete && x.name !== running?.backup)) {
        const pending = await readPendingMetadata(archive, e.name);
        if (!pending) continue;
        try {
          await waitForWal(archive, pending.meta, { walWaitSeconds: 0 }, this.log);
        } catch {
          continue; // its WAL is not there yet
        }
        await storeCompletion(archive, pending.meta, pending.sha256);
        this.log.info({ backup: e.name }, 'base backup completed: its WAL is archived now');
      }
      // 2. The schedule.
      const complete = entries.filter((x) => x.complete).map((x) => x.metadata!) as BackupMetadata[];
      this.completeCount = complete.length;
      this.newestComplete = complete.reduce<BackupMetadata | null>((n, m) => (!n || Date.parse(m.stoppedAt) > Date.parse(n.stoppedAt) ? m : n), null);
      const newest = complete.reduce<number>((t, m) => Math.max(t, Date.parse(m.stoppedAt)), 0);
      const due = this.intervalMs() > 0 && Date.now() - newest >= this.intervalMs() && Date.now() >= this.retryAt;
      if (due && !running && this.streaming() && !signal.aborted) {
        this.log.info({ newest: newest ? new Date(newest).toISOString() : null }, 'scheduled base backup starting');
        this.backupRunning = true;
        await takeBackup({
          site: this.site,
          log: this.log,
          fastCheckpoint: this.site.backupFastCheckpoint,
          maxRateKiB: this.site.backupMaxRateKiB,
          walWaitSeconds: WAL_WAIT_SECONDS,
          signal,
        });
        this.backupRunning = false;
      }
      // 3. Retention.
      if (this.retentionOn && !signal.aborted) {
        const plan = await planDeletion(archive, {
          kind: 'policy',
          // A window alone still keeps the newest backup.
          retain: Math.max(1, this.site.retainBackups || 0),
          recoveryWindowDays: this.site.recoveryWindowDays,
        });
        if (!planIsEmpty(plan)) {
          this.log.info({ deleting: describePlan(plan) }, 'retention: deleting what no retained backup needs');
          await executeDeletion(archive, plan, this.log);
        }
      }
    } finally {
      await archive.close();
    }
  }
}
