/**
 * The archive's gap check on a schedule (`check_interval_hours`, default 6; 0 = off): the
 * daemon runs `walvault check` (./archive-check.ts) for the site and keeps the outcome
 * for the metrics, so monitoring learns of a gap or an unrestorable backup without anyone
 * running the command. A failed check is logged as an error; it never stops the receiver.
 * It lives beside the check it runs, not in daemon/, which never imports check/:
 * `walvault run` (../cli/run.ts) starts it next to the site's receiver.
 */
import type { Logger } from 'pino';
import { openSiteArchive } from '../archive/site-archive';
import type { CheckReport } from './archive-check';
import type { SiteConfig } from '../config/config-types';
import { errorMessage } from '../errors';
import type { Sample } from '../observe/metrics';
import { every } from '../util/timers';

/** The first check waits this long (or the interval, if shorter): the site settles first. */
const FIRST_DELAY_MS = 120_000;

export class CheckScheduler {
  private readonly stopController = new AbortController();
  private last: { report: CheckReport | null; error: string | null; at: Date } | null = null;

  constructor(
    private readonly site: SiteConfig,
    private readonly log: Logger,
  ) {}

  stop(): void {
    this.stopController.abort();
  }

  run(): Promise<void> {
    return every(this.site.checkIntervalHours * 3_600_000, FIRST_DELAY_MS, this.stopController.signal, () => this.checkOnce());
  }

  private async checkOnce(): Promise<void> {
    const { checkArchive } = await import('./archive-check');
    const archive = openSiteArchive(this.site, 'read');
    try {
      const report = await checkArchive(archive);
      this.last = { report, error: null, at: new Date() };
      if (report.ok && report.backups.length === 0 && report.backupRunning) this.log.info({ running: report.backupRunning }, 'archive check: no complete backup yet; the first is in progress');
      else if (report.ok) this.log.info({ backups: report.backups.length, newest: report.newest?.lsn }, 'archive check: clean');
      else this.log.error({ problems: report.problems }, 'archive check found problems; run walvault check for details');
    } catch (err) {
      this.last = { report: null, error: errorMessage(err), at: new Date() };
      this.log.warn({ err: errorMessage(err) }, 'archive check could not run; trying again at the next interval');
    } finally {
      await archive.close();
    }
  }

  metrics(): Sample[] {
    if (this.site.checkIntervalHours <= 0 || !this.last) return [];
    const labels = { site: this.site.name };
    const r = this.last.report;
    const gauge = (name: string, help: string, value: number): Sample => ({ name, help, type: 'gauge', value, labels });
    const out = [
      gauge('walvault_check_last_success', 'Whether the last archive check found the archive clean (1) or found problems or could not run (0)', r?.ok ? 1 : 0),
      gauge('walvault_check_last_timestamp_seconds', 'When the last archive check ran (Unix time)', Math.round(this.last.at.getTime() / 1000)),
    ];
    if (r) {
      out.push(
        gauge('walvault_check_missing_segments', 'Segments the last check found missing between the oldest backup and the newest WAL', r.missingSegments.reduce((n, m) => n + m.count, 0)),
        gauge('walvault_check_restorable_backups', 'Backups the last check found restorable', r.backups.filter((b) => b.restorable).length),
        gauge('walvault_check_unrestorable_backups', 'Backups the last check found not restorable', r.backups.filter((b) => !b.restorable).length),
      );
    }
    return out;
  }
}
