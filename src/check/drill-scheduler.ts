/**
 * Scheduled restore drills for one site (`drill_interval_hours`; off by default): every
 * interval the daemon runs `walvault drill` (./drill.ts) against the site's archive and
 * keeps the outcome for the metrics file, so an alert can fire when the archive stops being
 * restorable, or when restoring it gets slow. A failed drill is logged as an error and
 * counted; it never stops the receiver. Like ./check-scheduler.ts it lives beside its duty,
 * since daemon/ never imports check/; `walvault run` (../cli/run.ts) starts it.
 */
import type { Logger } from 'pino';
import { openSiteArchive } from '../archive/site-archive';
import type { DrillResult } from './drill';
import type { SiteConfig } from '../config/config-types';
import { errorMessage } from '../errors';
import type { Sample } from '../observe/metrics';
import { every } from '../util/timers';
import { parseLsn } from '../wal/lsn';

/** The first drill waits this long (or the interval, if shorter): the receiver connects first. */
const FIRST_DELAY_MS = 60_000;

export class DrillScheduler {
  private readonly stopController = new AbortController();
  private last: { result: DrillResult; at: Date } | null = null;
  private runs = 0;
  private failures = 0;

  constructor(
    private readonly site: SiteConfig,
    private readonly log: Logger,
    /** restore_command for the drill's server: this walvault with the site's archive. */
    private readonly restoreCommand: string,
    private readonly binDirFor: (major: number) => string,
    private readonly osUser: (name: string) => { name: string; uid: number; gid: number } | undefined,
  ) {}

  stop(): void {
    this.stopController.abort();
  }

  run(): Promise<void> {
    const signal = this.stopController.signal;
    return every(this.site.drillIntervalHours * 3_600_000, FIRST_DELAY_MS, signal, () => this.drillOnce(signal));
  }

  private async drillOnce(signal: AbortSignal): Promise<void> {
    const { runDrill } = await import('./drill');
    const archive = openSiteArchive(this.site, 'read');
    try {
      this.log.info('scheduled restore drill starting');
      const result = await runDrill({
        archive,
        backup: 'LATEST',
        restoreCommand: this.restoreCommand,
        binDirFor: this.binDirFor,
        osUser: this.osUser(this.site.drillOsUser),
        dbUser: String(this.site.pg.user ?? 'postgres'),
        query: this.site.drillQuery,
        keep: false,
        timeoutMs: 6 * 3_600_000,
        log: this.log,
        signal,
      });
      if (signal.aborted && !result.ok) return; // abandoned for the stop: no verdict
      this.record(result);
    } catch (err) {
      this.record({ ok: false, backup: null, directory: '', archiveEnd: null, recoveredTo: null, phases: { totalSeconds: 0 }, queryRows: null, problem: errorMessage(err) });
    } finally {
      await archive.close();
    }
  }

  private record(result: DrillResult): void {
    this.last = { result, at: new Date() };
    this.runs++;
    if (result.ok) {
      this.log.info({ backup: result.backup, recoveredTo: result.recoveredTo, phases: result.phases }, 'restore drill succeeded');
    } else {
      this.failures++;
      this.log.error({ backup: result.backup, problem: result.problem, phases: result.phases }, 'restore drill FAILED: the archive may not be restorable');
    }
  }

  /** The last drill's outcome and the counters, for the metrics file. */
  metrics(): Sample[] {
    if (this.site.drillIntervalHours <= 0) return [];
    const labels = { site: this.site.name };
    const out: Sample[] = [
      { name: 'walvault_drills_total', help: 'Restore drills run by this process', type: 'counter', value: this.runs, labels },
      { name: 'walvault_drill_failures_total', help: 'Restore drills that failed', type: 'counter', value: this.failures, labels },
    ];
    if (!this.last) return out;
    const r = this.last.result;
    out.push(
      { name: 'walvault_drill_last_success', help: 'Whether the last restore drill succeeded (1) or failed (0)', type: 'gauge', value: r.ok ? 1 : 0, labels },
      { name: 'walvault_drill_last_end_timestamp_seconds', help: 'When the last restore drill ended (Unix time)', type: 'gauge', value: Math.round(this.last.at.getTime() / 1000), labels },
    );
    const phases: Array<[string, number | undefined]> = [
      ['restore', r.phases.restoreSeconds],
      ['start', r.phases.startSeconds],
      ['recovery', r.phases.recoverySeconds],
      ['query', r.phases.querySeconds],
      ['total', r.phases.totalSeconds],
    ];
    for (const [phase, v] of phases) {
      if (v !== undefined) out.push({ name: 'walvault_drill_last_duration_seconds', help: 'Time each phase of the last restore drill took (total: the recovery time objective, measured)', type: 'gauge', value: v, labels: { ...labels, phase } });
    }
    if (r.recoveredTo) out.push({ name: 'walvault_drill_last_recovered_lsn_bytes', help: 'Where the last restore drill recovered to, as a byte position', type: 'gauge', value: Number(parseLsn(r.recoveredTo.lsn)), labels });
    return out;
  }
}
