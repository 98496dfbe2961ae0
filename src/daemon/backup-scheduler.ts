/**
 * The daemon's base-backup duties for one site, checked every 30 s (more often for short
 * intervals), whatever the schedule:
 *  1. finish backups whose stream was stored but whose push died while waiting for the WAL
 *     (metadata, no completion marker, no live backup lease): once the WAL through their
 *     stop LSN is archived, write the marker;
 *  2. take a backup when the newest complete one is older than the interval (or there is
 *     none), while the site streams and no other backup runs: a full one or an incremental
 *     one as ../backup/schedule.ts decides; an incremental the server or the archive cannot
 *     give becomes a full one, with the reason logged once (again only when it changes);
 *  3. with several archives, copy each complete backup the others lack into them (the
 *     backup is taken into the first; `copyBackups`, given by the command: ../copy/);
 *  4. apply the retention policy, in each archive on its own.
 * A failure is logged and tried again later; it never stops the receiver.
 */
import type { Logger } from 'pino';
import { openSiteArchive } from '../archive/site-archive';
import { isIncremental, readPendingMetadata, scanBackups, storeCompletion, type BackupMetadata } from '../backup/catalog';
import { describePlan, executeDeletion, planDeletion, planIsEmpty } from '../backup/retention';
import { nextScheduledBackup } from '../backup/schedule';
import { takeBackup } from '../backup/take-backup';
import { waitForWal } from '../backup/wal-coverage';
import { runningBackup } from '../backup/running-backup';
import type { SiteConfig } from '../config/config-types';
import { errorMessage, isWalvaultError } from '../errors';
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
    /** A site with several archives: copies backups from the first to the others; resolves to what failed, in words, or null. */
    private readonly copyBackups: () => Promise<string | null> = async () => null,
  ) {
    // Looked at four times per interval, at most every TICK_MS, at least once a second.
    this.tickMs = site.backupIntervalHours > 0 ? Math.min(TICK_MS, Math.max(1000, this.intervalMs() / 4)) : TICK_MS;
  }

  private readonly tickMs: number;
  /** Why the last incremental could not be taken (logged when it changes). */
  private incrementalRefusal: string | null = null;

  private get retentionOn(): boolean {
    return this.site.retainBackups > 0 || this.site.recoveryWindowDays > 0;
  }

  stop(): void {
    this.stopController.abort();
  }

  private newestComplete: BackupMetadata | null = null;
  private newestOfKind: Record<'full' | 'incremental', BackupMetadata | null> = { full: null, incremental: null };
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
    for (const kind of ['full', 'incremental'] as const) {
      const k = this.newestOfKind[kind];
      if (k) out.push({ name: `walvault_backup_last_${kind}_end_timestamp_seconds`, help: `When the newest complete ${kind} base backup ended (Unix time)`, type: 'gauge', value: Date.parse(k.stoppedAt) / 1000, labels });
    }
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

  /**
   * Servers older than PostgreSQL 17 have no incremental backups: the schedule takes full
   * ones there without trying (the archive's cluster marker says which version it holds).
   */
  private async incrementalsImpossibleHere(archive: ReturnType<typeof openSiteArchive>): Promise<boolean> {
    const cluster = await archive.readCluster();
    return cluster !== null && cluster.pgVersionNum < 170000;
  }

  private intervalMs(): number {
    return this.site.backupIntervalHours * 3_600_000;
  }

  private async tick(signal: AbortSignal): Promise<void> {
    const archive = openSiteArchive(this.site, 'write');
    try {
      const running = await runningBackup(archive);
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
        this.copyDue = true;
        this.log.info({ backup: e.name }, 'base backup completed: its WAL is archived now');
      }
      // 2. The schedule.
      const complete = entries.filter((x) => x.complete).map((x) => x.metadata!) as BackupMetadata[];
      this.completeCount = complete.length;
      const newestOf = (list: BackupMetadata[]) => list.reduce<BackupMetadata | null>((n, m) => (!n || Date.parse(m.stoppedAt) > Date.parse(n.stoppedAt) ? m : n), null);
      this.newestComplete = newestOf(complete);
      this.newestOfKind = { full: newestOf(complete.filter((m) => !isIncremental(m))), incremental: newestOf(complete.filter(isIncremental)) };
      const decision = nextScheduledBackup(complete, Date.now(), this.site);
      if (decision.due && Date.now() >= this.retryAt && !running && this.streaming() && !signal.aborted) {
        const newest = this.newestComplete;
        this.log.info({ newest: newest?.stoppedAt ?? null, kind: decision.kind, why: decision.why }, 'scheduled base backup starting');
        this.backupRunning = true;
        const take = (incremental: boolean) =>
          takeBackup({
            site: this.site,
            log: this.log,
            // Someone setting walvault up waits for the first one: a spread checkpoint could take
            // checkpoint_timeout (30 min and more) before a byte moves.
            fastCheckpoint: this.site.backupFastCheckpoint || (complete.length === 0 && this.site.firstBackupFastCheckpoint),
            maxRateKiB: this.site.backupMaxRateKiB,
            walWaitSeconds: WAL_WAIT_SECONDS,
            signal,
            ...(incremental ? { incremental: {} } : {}),
          });
        if (decision.kind === 'incremental' && !(await this.incrementalsImpossibleHere(archive))) {
          try {
            await take(true);
            this.incrementalRefusal = null;
          } catch (err) {
            if (!isWalvaultError(err, 'BACKUP_INCREMENTAL_IMPOSSIBLE')) throw err;
            // Said once: a server that stays without summarize_wal would otherwise repeat it
            // at every backup.
            if (err.message !== this.incrementalRefusal) this.log.warn({ reason: err.message }, 'incremental backup not possible; taking a full backup instead');
            this.incrementalRefusal = err.message;
            await take(false);
          }
        } else {
          await take(false);
        }
        this.backupRunning = false;
        this.copyDue = true;
      }
      // 3. The other archives: every complete backup in each, once at the start (one an earlier
      // run missed), after each backup completed here, and again after a failure (listing
      // every archive each tick would be a request per archive every 30 s for nothing).
      if (this.site.archives.length > 1 && this.copyDue && Date.now() >= this.copyRetryAt && !signal.aborted) {
        const failed = await this.copyBackups();
        if (failed !== null && failed !== this.copyFailure) this.log.error({ code: 'ARCHIVE_INCOMPLETE' }, failed);
        this.copyFailure = failed;
        this.copyDue = failed !== null;
        this.copyRetryAt = failed === null ? 0 : Date.now() + RETRY_AFTER_FAILURE_MS;
      }
      // 4. Retention, in each archive by what that archive holds.
      if (this.retentionOn && !signal.aborted) {
        await this.applyRetention(archive);
        for (const other of this.site.archives.slice(1)) {
          const a = openSiteArchive(other, 'write');
          try {
            await this.applyRetention(a);
          } finally {
            await a.close();
          }
        }
      }
    } finally {
      await archive.close();
    }
  }

  /** The last copy failure logged (said again only when it changes). */
  private copyFailure: string | null = null;
  /** A backup completed that the other archives may lack. */
  private copyDue = true;
  private copyRetryAt = 0;

  private async applyRetention(archive: ReturnType<typeof openSiteArchive>): Promise<void> {
    const plan = await planDeletion(archive, {
      kind: 'policy',
      // A window alone still keeps the newest backup.
      retain: Math.max(1, this.site.retainBackups || 0),
      recoveryWindowDays: this.site.recoveryWindowDays,
    });
    if (!planIsEmpty(plan)) {
      const where = this.site.archives.length > 1 ? { archive: archive.storage.description } : {};
      this.log.info({ ...where, deleting: describePlan(plan) }, 'retention: deleting what no retained backup needs');
      await executeDeletion(archive, plan, this.log);
    }
  }
}
