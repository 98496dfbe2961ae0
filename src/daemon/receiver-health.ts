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
import type { Uploader } from './uploader';

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
  uploader(): Uploader | null;
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
    };
  }

  /** The site is streaming and archiving, or what is wrong, in words with the fix. */
  health(): { ok: boolean; problems: string[] } {
    const v = this.view;
    const problems: string[] = [];
    const lastError = v.lastError();
    if (v.state() !== 'streaming') problems.push(`not streaming from ${this.site.pgDescription} (${v.state()}${lastError ? `: ${lastError}` : ''})`);
    const failingMs = v.uploader()?.failingForMs ?? null;
    if (failingMs !== null && v.uploader()?.onlyStalled) {
      problems.push(`archiving to ${v.archiveDescription()} has made no progress for ${Math.round(failingMs / 1000)} s: the store does not answer; check the store and the network to it`);
    } else if (failingMs !== null) {
      problems.push(`archiving to ${v.archiveDescription()} has been failing for ${Math.round(failingMs / 1000)} s; check the store and its credentials`);
    }
    if (this.spoolAlert()) problems.push(`unarchived WAL is past spool_alert_mib (${this.site.spoolAlertMiB} MiB)`);
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

  private unarchivedBytes(): number {
    const received = this.view.received();
    return received > this.archived ? Number(received - this.archived) : 0;
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
        'unarchived WAL is past spool_alert_mib: the spool grows and the slot holds WAL on the server until the archive catches up; ' +
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
