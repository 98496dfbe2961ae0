/**
 * A receiver's numbers and health, from its positions and its uploader: the Prometheus samples
 * (for /metrics and STATE/metrics.prom), the problems in words with their fix, the spool alert,
 * and the metrics file. It reads the receiver through a view and changes nothing of it.
 */
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { SiteConfig } from '../config/config-types';
import { errorMessage } from '../errors';
import { renderPrometheus, type Sample } from '../observe/metrics';
import { formatLsn, type Lsn } from '../wal/lsn';
import { replaceFile } from '../wal/fsync-dir';
import { writeDaemonState } from './daemon-state';
import { METRICS_FILE } from './state-dir';
import type { SiteUploads } from './site-uploads';

const ALERT_LOG_INTERVAL_MS = 60000;

export type ReceiverState = 'starting' | 'streaming' | 'reconnecting' | 'stopped';

/** A receiver as `walvault run` reports it across threads (LSNs as text: they cross postMessage). */
export interface ReceiverStatus {
  site: string;
  state: ReceiverState;
  timeline: number;
  received: string | null;
  fsynced: string | null;
  archived: string | null;
  serverWalEnd: string | null;
  spoolQueueBytes: number;
  uploadQueue: number;
  lastError: string | null;
  /** Each archive of the site: its own archived position, upload queue and failure. */
  archives: ArchiveStatus[];
}

export interface ArchiveStatus {
  archive: string;
  archived: string | null;
  uploadQueue: number;
  /** How long writes to it have been failing (or stalled); null while they work. */
  storageFailingSeconds: number | null;
  lastError: string | null;
}

/** What the health of a receiver is computed from. */
export interface ReceiverView {
  state(): ReceiverState;
  lastError(): string | null;
  received(): Lsn;
  fsynced(): Lsn;
  serverWalEnd(): Lsn | null;
  /** The flush position last reported to the server (0 before the first report). */
  reportedFlush(): Lsn;
  reconnects(): number;
  uploader(): SiteUploads | null;
  /** How long writes to the state directory have failed for room; null while they work. */
  stateFullForMs(): number | null;
  archiveDescription(): string;
  timeline(): number;
  /** Bytes received and not yet written to the spool. */
  queuedBytes(): number;
  /** More samples of the site from its other duties (drills). */
  extraMetrics(): Sample[];
}

export class ReceiverHealth {
  /** (received position, when) samples, one per tick, for the lag in seconds. */
  private readonly receivedAt: Array<{ lsn: Lsn; at: number }> = [];
  private lastAlertLog = 0;
  private writeFailed = false;
  private metricsWrite: Promise<Error | null> = Promise.resolve(null);

  constructor(
    private readonly site: SiteConfig,
    private readonly view: ReceiverView,
    private readonly log: Logger,
  ) {}

  private get archived(): Lsn {
    return this.view.uploader()?.archivedLsn ?? 0n;
  }

  /** Where the spool's WAL starts: the lowest archive's position (the reported one, with a quorum, can be past it). */
  private get spooledFrom(): Lsn {
    return this.view.uploader()?.lowestLsn ?? 0n;
  }

  /** Each archive's own numbers, labelled by archive (one series with a single archive). */
  private archiveMetrics(): Sample[] {
    const out: Sample[] = [];
    for (const lane of this.view.uploader()?.lanes ?? []) {
      const labels = { site: this.site.name, archive: lane.description };
      const u = lane.uploader;
      const failingMs = u.failingForMs;
      out.push(
        { name: 'walvault_archive_archived_lsn_bytes', help: 'End of the WAL this archive holds without a gap, as a byte position', type: 'gauge', value: Number(u.archivedLsn), labels },
        { name: 'walvault_archive_storage_failing', help: 'Whether writes to this archive are failing or stalled (1) or not (0)', type: 'gauge', value: failingMs === null ? 0 : 1, labels },
        { name: 'walvault_archive_upload_queue_segments', help: 'Finished segments waiting to be stored in this archive', type: 'gauge', value: u.stats.queued, labels },
        { name: 'walvault_archive_storage_failures_total', help: 'Failed attempts to store an object in this archive', type: 'counter', value: u.stats.failures, labels },
      );
    }
    return out;
  }

  metrics(): Sample[] {
    const v = this.view;
    const labels = { site: this.site.name };
    const gauge = (name: string, help: string, value: number): Sample => ({ name, help, type: 'gauge', value, labels });
    const counter = (name: string, help: string, value: number): Sample => ({ name, help, type: 'counter', value, labels });
    const stats = v.uploader()?.stats;
    const failingMs = v.uploader()?.failingForMs ?? null;
    return [
      gauge('walvault_streaming', 'Whether the site is streaming from its server now (1) or starting, reconnecting or stopped (0)', v.state() === 'streaming' ? 1 : 0),
      gauge('walvault_received_lsn_bytes', 'End of the WAL received, as a byte position', Number(v.received())),
      gauge('walvault_fsynced_lsn_bytes', 'End of the WAL fsynced in the spool, as a byte position', Number(v.fsynced())),
      gauge('walvault_archived_lsn_bytes', 'End of the WAL archived without a gap, as a byte position', Number(this.archived)),
      gauge('walvault_unarchived_bytes', 'WAL received but not yet archived: held in the spool, and by the slot on the server', this.unarchivedBytes()),
      gauge('walvault_spool_alert', 'Whether unarchived WAL is past spool_alert_mib (1) or not (0)', this.spoolAlert() ? 1 : 0),
      gauge('walvault_state_disk_full', "Whether writes to the state directory fail for room (1) or not (0); the spool then waits and the slot holds the WAL", v.stateFullForMs() === null ? 0 : 1),
      gauge('walvault_storage_failing', 'Whether writes to the archive are failing now, or outstanding with none finishing for storage_stall_seconds (1), or not (0)', failingMs === null ? 0 : 1),
      gauge('walvault_storage_failing_seconds', 'How long writes to the archive have been failing (or making no progress); 0 while they work', failingMs === null ? 0 : failingMs / 1000),
      counter('walvault_storage_failures_total', 'Failed attempts to archive an object', stats?.failures ?? 0),
      counter('walvault_segments_archived_total', 'Segments archived by this process', stats?.archivedSegments ?? 0),
      counter('walvault_archive_conflicts_total', 'Refusals to replace an archived object with different bytes', stats?.conflicts ?? 0),
      counter('walvault_reconnects_total', 'Replication reconnects', v.reconnects()),
      gauge('walvault_server_wal_end_lsn_bytes', "End of the server's WAL as it last reported it, as a byte position", Number(v.serverWalEnd() ?? 0n)),
      gauge('walvault_archive_lag_bytes', "WAL the server has written that is not archived yet (server's end minus archived)", this.archiveLagBytes()),
      gauge('walvault_archive_lag_seconds', 'Age of the oldest WAL received and not yet archived; 0 when all is archived', this.archiveLagSeconds()),
      gauge('walvault_slot_retained_bytes', "WAL the slot keeps on the server: the server's end minus the flush position last reported to it", this.slotRetainedBytes()),
      gauge('walvault_upload_queue_segments', 'Finished segments waiting to be archived', stats?.queued ?? 0),
      gauge('walvault_last_archived_timestamp_seconds', 'When the last segment was archived (Unix time); 0 before the first', stats?.lastArchivedAt ? Math.round(stats.lastArchivedAt.getTime() / 1000) : 0),
      ...this.archiveMetrics(),
    ];
  }

  status(): ReceiverStatus {
    const v = this.view;
    const uploader = v.uploader();
    const lsn = (x: Lsn | null) => (x ? formatLsn(x) : null);
    return {
      site: this.site.name,
      state: v.state(),
      timeline: v.timeline(),
      received: lsn(v.received()),
      fsynced: lsn(v.fsynced()),
      archived: uploader ? formatLsn(uploader.archivedLsn) : null,
      serverWalEnd: v.serverWalEnd() === null ? null : formatLsn(v.serverWalEnd()!),
      spoolQueueBytes: v.queuedBytes(),
      uploadQueue: uploader?.stats.queued ?? 0,
      lastError: v.lastError(),
      archives: (uploader?.lanes ?? []).map((l) => {
        const failingMs = l.uploader.failingForMs;
        return {
          archive: l.description,
          archived: formatLsn(l.uploader.archivedLsn),
          uploadQueue: l.uploader.stats.queued,
          storageFailingSeconds: failingMs === null ? null : Math.round(failingMs / 1000),
          lastError: l.uploader.stats.lastError,
        };
      }),
    };
  }

  /** The site is streaming and archiving, or what is wrong, in words with the fix. */
  health(): { ok: boolean; problems: string[] } {
    const v = this.view;
    const problems: string[] = [];
    const lastError = v.lastError();
    if (v.state() !== 'streaming') problems.push(`not streaming from ${this.site.pgDescription} (${v.state()}${lastError ? `: ${lastError}` : ''})`);
    for (const { description, uploader } of v.uploader()?.lanes ?? []) {
      const failingMs = uploader.failingForMs;
      if (failingMs !== null && uploader.onlyStalled) {
        problems.push(`archiving to ${description} has made no progress for ${Math.round(failingMs / 1000)} s: the store does not answer; check the store and the network to it`);
      } else if (failingMs !== null) {
        problems.push(`archiving to ${description} has been failing for ${Math.round(failingMs / 1000)} s; check the store and its credentials`);
      }
    }
    if (this.spoolAlert()) problems.push(`unarchived WAL is past spool_alert_mib (${this.site.spoolAlertMiB} MiB)${this.laggingWords()}`);
    const fullMs = v.stateFullForMs();
    if (fullMs !== null) problems.push(`state directory ${this.site.state} has been full for ${Math.round(fullMs / 1000)} s; free space on its filesystem`);
    return { ok: problems.length === 0, problems };
  }

  private archiveLagBytes(): number {
    const end = this.view.serverWalEnd() ?? this.view.received();
    return end > this.archived ? Number(end - this.archived) : 0;
  }

  /**
   * A physical slot's restart_lsn follows the flush position we report (the archived one in
   * archive mode, the fsynced one in sync mode), so this is what the server cannot recycle
   * because of us: the number to hold against max_slot_wal_keep_size and the server's disk.
   */
  private slotRetainedBytes(): number {
    const reported = this.view.reportedFlush();
    const flushed = reported > 0n ? reported : this.archived;
    const end = this.view.serverWalEnd() ?? this.view.received();
    return end > flushed ? Number(end - flushed) : 0;
  }

  private archiveLagSeconds(): number {
    const archived = this.archived;
    while (this.receivedAt.length > 0 && this.receivedAt[0].lsn <= archived) this.receivedAt.shift();
    if (this.view.received() <= archived) return 0;
    // The first sample past the archived position saw WAL that is still unarchived arrive.
    const first = this.receivedAt[0];
    return first ? (Date.now() - first.at) / 1000 : 0;
  }

  /** WAL the spool holds for an archive that lacks it (with a quorum, more than the slot holds). */
  private unarchivedBytes(): number {
    const received = this.view.received();
    return received > this.spooledFrom ? Number(received - this.spooledFrom) : 0;
  }

  /** A quorum below every archive lets the slot move on while one lags. */
  private slotMovesOn(): boolean {
    return this.site.archivedQuorum < this.site.archives.length;
  }

  /** With several archives, which one the spool waits for: ": archive X lags at P". */
  private laggingWords(): string {
    const uploader = this.view.uploader();
    if (!uploader || uploader.lanes.length < 2) return '';
    const lagging = uploader.lagging(this.view.received());
    if (lagging.length === 0) return '';
    const [first] = lagging;
    return `: archive ${first.description} lags most, holding WAL up to ${formatLsn(first.uploader.archivedLsn)}`;
  }

  private spoolAlert(): boolean {
    return this.site.spoolAlertMiB > 0 && this.unarchivedBytes() > this.site.spoolAlertMiB * 1024 * 1024;
  }

  /** One status interval: the spool alert's log line, a lag sample, the metrics file. */
  async tick(): Promise<void> {
    const alert = this.spoolAlert();
    if (alert && Date.now() - this.lastAlertLog >= ALERT_LOG_INTERVAL_MS) {
      this.lastAlertLog = Date.now();
      const failingMs = this.view.uploader()?.failingForMs ?? null;
      this.log.error(
        { unarchivedMiB: Math.round(this.unarchivedBytes() / 1048576), spoolAlertMiB: this.site.spoolAlertMiB, storageFailingSeconds: failingMs === null ? 0 : Math.round(failingMs / 1000) },
        this.slotMovesOn()
          ? `unarchived WAL is past spool_alert_mib${this.laggingWords()}: the spool keeps what that archive lacks (archived_quorum let the slot move on) until it catches up; ` +
              'if the state directory fills, the spool waits and the slot holds WAL again'
          : `unarchived WAL is past spool_alert_mib${this.laggingWords()}: the spool grows and the slot holds WAL on the server until the archive catches up; ` +
              "if the server's max_slot_wal_keep_size is reached, it drops that WAL and the archive gets a gap",
      );
    } else if (!alert) {
      this.lastAlertLog = 0;
    }
    const received = this.view.received();
    const last = this.receivedAt[this.receivedAt.length - 1];
    if (!last || received > last.lsn) this.receivedAt.push({ lsn: received, at: Date.now() });
    if (this.receivedAt.length > 10000) this.receivedAt.shift();
    const err = await this.writeMetricsFile();
    if (err && !this.writeFailed) this.log.warn({ file: this.metricsFile, err: errorMessage(err) }, 'cannot write the metrics file');
    this.writeFailed = err !== null;
  }

  get metricsFile(): string {
    return path.join(this.site.state, METRICS_FILE);
  }

  /**
   * Replaces STATE/metrics.prom with the metrics now (the error if it cannot). One write at
   * a time, so the stop's last write is the one that stays.
   */
  writeMetricsFile(): Promise<Error | null> {
    const file = this.metricsFile;
    const write = async () => {
      try {
        await replaceFile(file, await renderPrometheus([...this.metrics(), ...this.view.extraMetrics()]), { sync: false });
        // status reads this, not the Prometheus text: exact positions, and the stop's state.
        await writeDaemonState(this.site.state, { status: () => this.status(), metrics: () => this.metrics(), extraMetrics: () => this.view.extraMetrics() });
        return null;
      } catch (err) {
        return err as Error;
      }
    };
    this.metricsWrite = this.metricsWrite.then(write, write);
    return this.metricsWrite;
  }
}
