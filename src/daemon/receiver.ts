/**
 * One site's receiver: replication connection -> spool -> uploader, and the status updates
 * that let the server's slot forget WAL only once it is safe.
 *
 *   walsender --XLogData--> write queue --> SegmentSpool (NAME.partial, fsync, rename)
 *                                               | complete segment: ledger, then
 *                                               v
 *                                           Uploader --> Archive (verified) --> archived LSN
 *   status update: write = received, flush = archived (mode archive) | fsynced (mode sync)
 *
 * The write queue decouples the socket from disk: when it holds too much, the socket is
 * paused, while the status timer keeps answering the server so wal_sender_timeout never
 * fires during a pause.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { Archive, type ClusterInfo } from '../archive/archive';
import { fileSource } from '../archive/body-source';
import { encodePlainHeader, PLAIN_HEADER_LENGTH } from '../archive/envelope';
import type { SiteConfig } from '../config/config';
import { errorMessage, isWalvaultError, WalvaultError } from '../errors';
import { Ledger, type SiteRow } from '../ledger/ledger';
import type { StatusPositions, XLogDataHeader, Keepalive } from '../postgres/copy-both-messages';
import { serverVersionText } from '../postgres/server-version';
import {
  ReplicationConnection,
  type ServerFacts,
  type SystemIdentity,
} from '../postgres/replication-connection';
import type { StreamEnd, WalStreamSession } from '../postgres/wal-stream-session';
import { claimArchive } from '../archive/archive-settings';
import { openSiteArchive } from '../archive/site-archive';
import { formatLsn, historyFileName, maxLsn, segmentFileName, segmentNumber, segmentStart, type Lsn } from '../wal/lsn';
import { pageMagicForMajor, type PageCheckContext } from '../wal/page-header';
import { SegmentSpool, type CompletedSegment, type OpenSegment } from '../wal/segment-spool';
import { parseTimelineHistory, timelineOfLsn } from '../wal/timeline-history';
import { renderPrometheus, type Sample } from '../observe/metrics';
import { SlabCopier } from '../util/slab-copier';
import { backoffDelayMs, sleep, withTimeout } from '../util/timers';
import { archiveSealedSpool, reconcile, type ResumePoint } from './resume';
import { StateWrites } from './state-writes';
import { isDiskFull, stateDiskFullError } from '../util/disk-full';
import { StateLock } from './state-lock';
import { ArchiveLease, LEASE_HEARTBEAT_MS } from '../archive/archive-lease';
import { Uploader } from './uploader';
import { OutageLog } from './outage-log';
import { LEDGER_FILE, METRICS_FILE, SPOOL_DIR } from './state-dir';
import { writeDaemonState } from './daemon-state';

const QUEUE_HIGH_WATER = 8 * 1024 * 1024;
const QUEUE_LOW_WATER = 2 * 1024 * 1024;
const WRITE_BATCH_BYTES = 4 * 1024 * 1024;
const ALERT_LOG_INTERVAL_MS = 60000;

/** Errors after which retrying cannot help: the operator must act. */
const FATAL_CODES = new Set([
  'ARCHIVE_OTHER_CLUSTER',
  'ARCHIVE_LOCKED',
  'STATE_OTHER_CLUSTER',
  'STATE_DIR_UNWRITABLE',
  'PG_AUTH_FAILED',
  'PG_NO_REPLICATION_ROLE',
  'PG_HBA_REJECTED',
  'PG_UNSUPPORTED_VERSION',
  'PG_WAL_REMOVED',
  'WAL_BAD_PAGE',
  'CONFIG_INVALID',
  'LEDGER',
]);

/** Errors that end the site when they persist before it ever streamed. */
const STARTUP_ONLY_FATAL = new Set(['PG_SLOT_ACTIVE', 'PG_WALSENDERS_BUSY']);
const STARTUP_GRACE_MS = 5000;
/** A server that stays down: its reconnect failures are logged this often (as storage failures are). */
const RECONNECT_FAILURE_LOG_INTERVAL_MS = 30000;

type QueueItem =
  | { kind: 'data'; tli: number; start: Lsn; data: Buffer }
  | { kind: 'partial' }
  | { kind: 'sync' };

export interface ReceiverStatus {
  site: string;
  state: 'starting' | 'streaming' | 'reconnecting' | 'stopped';
  timeline: number;
  received: string | null;
  fsynced: string | null;
  archived: string | null;
  serverWalEnd: string | null;
  spoolQueueBytes: number;
  uploadQueue: number;
  lastError: string | null;
}

export class SiteReceiver {
  private conn: ReplicationConnection | null = null;
  private session: WalStreamSession | null = null;
  private ledger: Ledger | null = null;
  private lease: ArchiveLease | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  /** Set when the site must stop for an operator (the archive lease was lost). */
  private fatalError: Error | null = null;
  private lock: StateLock | null = null;
  /** Every spool and ledger write that can meet a full disk goes through here. */
  private readonly writes: StateWrites;
  /** The first run's state setup failed: nothing to go on with. */
  private setupFailed: unknown = null;
  private spool: SegmentSpool | null = null;
  private uploader: Uploader | null = null;
  private archive: Archive;
  private identity!: SystemIdentity;
  private facts!: ServerFacts;
  private timeline = 0;
  private resume: ResumePoint | null = null;
  private stopping = false;
  private readonly stopController = new AbortController();
  private statusTimer: NodeJS.Timeout | null = null;
  private healthTimer: NodeJS.Timeout | null = null;
  private reconnects = 0;
  /** Reconnect failures since the stream last ran: logged once per interval. */
  private readonly outage = new OutageLog(RECONNECT_FAILURE_LOG_INTERVAL_MS);
  private partialTimer: NodeJS.Timeout | null = null;
  private lastPartialBytes = -1;
  private lastPartialName = '';
  private lastRequestedPartial = 0;
  private serverWalEnd: Lsn | null = null;
  private sent: StatusPositions = { write: 0n, flush: 0n, apply: 0n };
  private fsynced: Lsn = 0n;
  private received: Lsn = 0n;
  private readonly queue: QueueItem[] = [];
  /** Received payloads live in recycled slabs from arrival until they are written. */
  private readonly copier = new SlabCopier();
  private queueBytes = 0;
  private writerRunning = false;
  private writerError: unknown = null;
  private writerIdleWaiters: Array<() => void> = [];
  private syncPending = false;
  private state: ReceiverStatus['state'] = 'starting';
  private lastError: string | null = null;
  private everStreamed = false;
  /** The slot was created by this run: dropped again if the run ends before it streamed into its state. */
  private slotCreatedHere = false;
  private slotInUse = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly site: SiteConfig,
    private readonly log: Logger,
  ) {
    this.archive = openSiteArchive(site, 'write');
    this.writes = new StateWrites(site.state, log, this.stopController.signal);
  }

  private get spoolDir(): string {
    return path.join(this.site.state, SPOOL_DIR);
  }

  private get ledgerPath(): string {
    return path.join(this.site.state, LEDGER_FILE);
  }

  /** Streams until stop() is called. Rejects when the site cannot go on without an operator. */
  async run(): Promise<void> {
    try {
      await this.startUp();
      this.startHealthTimer();
      let attempt = 0;
      while (!this.stopping) {
        try {
          if (!this.conn) await this.connect();
          if (await this.streamUntilInterrupted()) attempt = 0;
        } catch (err) {
          this.lastError = errorMessage(err);
          if (isWalvaultError(err) && FATAL_CODES.has(err.code)) throw err;
          if (this.setupFailed) throw this.setupFailed;
          // Before the first stream a busy slot or walsender is most likely a misconfiguration
          // (two receivers on one slot): say so and stop. The grace period covers the server
          // not yet having noticed that a killed predecessor is gone.
          if (
            !this.everStreamed &&
            isWalvaultError(err) &&
            STARTUP_ONLY_FATAL.has(err.code) &&
            Date.now() - this.startedAt > STARTUP_GRACE_MS
          ) {
            throw err;
          }
          if (!this.stopping) {
            // Before the first stream, a failure that ends the run is reported once, as the
            // command's error line; retries stay out of the way at debug level. After it, a
            // server that stays down is logged once per interval, not on every attempt.
            if (!this.everStreamed) {
              this.log.debug({ err: errorMessage(err) }, 'replication failed; reconnecting');
            } else if (this.outage.failed()) {
              this.log.error(
                { err: errorMessage(err), failures: this.outage.failures, failingForMs: this.outage.failingForMs(), loggedEveryMs: this.outage.intervalMs },
                'replication failed; reconnecting',
              );
            } else {
              this.log.debug({ err: errorMessage(err), failures: this.outage.failures }, 'replication failed; reconnecting');
            }
          }
        }
        await this.closeConnection();
        if (this.stopping) break;
        this.state = 'reconnecting';
        this.reconnects++;
        await sleep(backoffDelayMs(attempt++, 500, 30000), this.stopController.signal);
      }
    } finally {
      await this.shutDown();
    }
    if (this.fatalError) throw this.fatalError;
  }

  /** More of the site's numbers for the metrics file, from its other duties (drills). */
  extraMetrics: () => Sample[] = () => [];

  /** The site's numbers, for the metrics file (and a scrape endpoint later). */
  metrics(): Sample[] {
    const labels = { site: this.site.name };
    const gauge = (name: string, help: string, value: number): Sample => ({ name, help, type: 'gauge', value, labels });
    const counter = (name: string, help: string, value: number): Sample => ({ name, help, type: 'counter', value, labels });
    const stats = this.uploader?.stats;
    const failingMs = this.uploader?.failingForMs ?? null;
    return [
      gauge('walvault_streaming', 'Whether the site is streaming from its server now (1) or starting, reconnecting or stopped (0)', this.state === 'streaming' ? 1 : 0),
      gauge('walvault_received_lsn_bytes', 'End of the WAL received, as a byte position', Number(this.received)),
      gauge('walvault_fsynced_lsn_bytes', 'End of the WAL fsynced in the spool, as a byte position', Number(this.fsynced)),
      gauge('walvault_archived_lsn_bytes', 'End of the WAL archived without a gap, as a byte position', Number(this.uploader?.archivedLsn ?? 0n)),
      gauge('walvault_unarchived_bytes', 'WAL received but not yet archived: held in the spool, and by the slot on the server', this.unarchivedBytes()),
      gauge('walvault_spool_alert', 'Whether unarchived WAL is past spool_alert_mib (1) or not (0)', this.spoolAlert() ? 1 : 0),
      gauge('walvault_state_disk_full', "Whether writes to the state directory fail for room (1) or not (0); the spool then waits and the slot holds the WAL", this.writes.fullForMs === null ? 0 : 1),
      gauge('walvault_storage_failing', 'Whether writes to the archive are failing now, or outstanding with none finishing for storage_stall_seconds (1), or not (0)', failingMs === null ? 0 : 1),
      gauge('walvault_storage_failing_seconds', 'How long writes to the archive have been failing (or making no progress); 0 while they work', failingMs === null ? 0 : failingMs / 1000),
      counter('walvault_storage_failures_total', 'Failed attempts to archive an object', stats?.failures ?? 0),
      counter('walvault_segments_archived_total', 'Segments archived by this process', stats?.archivedSegments ?? 0),
      counter('walvault_archive_conflicts_total', 'Refusals to replace an archived object with different bytes', stats?.conflicts ?? 0),
      counter('walvault_reconnects_total', 'Replication reconnects', this.reconnects),
      gauge('walvault_server_wal_end_lsn_bytes', "End of the server's WAL as it last reported it, as a byte position", Number(this.serverWalEnd ?? 0n)),
      gauge('walvault_archive_lag_bytes', "WAL the server has written that is not archived yet (server's end minus archived)", this.archiveLagBytes()),
      gauge('walvault_archive_lag_seconds', 'Age of the oldest WAL received and not yet archived; 0 when all is archived', this.archiveLagSeconds()),
      gauge('walvault_slot_retained_bytes', "WAL the slot keeps on the server: the server's end minus the flush position last reported to it", this.slotRetainedBytes()),
      gauge('walvault_upload_queue_segments', 'Finished segments waiting to be archived', stats?.queued ?? 0),
      gauge('walvault_last_archived_timestamp_seconds', 'When the last segment was archived (Unix time); 0 before the first', stats?.lastArchivedAt ? Math.round(stats.lastArchivedAt.getTime() / 1000) : 0),
    ];
  }

  /** The site is streaming and archiving, or what is wrong, in words with the fix. */
  health(): { ok: boolean; problems: string[] } {
    const problems: string[] = [];
    if (this.state !== 'streaming') problems.push(`not streaming from ${this.site.pgDescription} (${this.state}${this.lastError ? `: ${this.lastError}` : ''})`);
    const failingMs = this.uploader?.failingForMs ?? null;
    if (failingMs !== null && this.uploader?.onlyStalled) {
      problems.push(`archiving to ${this.archive.storage.description} has made no progress for ${Math.round(failingMs / 1000)} s: the store does not answer; check the store and the network to it`);
    } else if (failingMs !== null) {
      problems.push(`archiving to ${this.archive.storage.description} has been failing for ${Math.round(failingMs / 1000)} s; check the store and its credentials`);
    }
    if (this.spoolAlert()) problems.push(`unarchived WAL is past spool_alert_mib (${this.site.spoolAlertMiB} MiB)`);
    const fullMs = this.writes.fullForMs;
    if (fullMs !== null) problems.push(`state directory ${this.site.state} has been full for ${Math.round(fullMs / 1000)} s; free space on its filesystem`);
    return { ok: problems.length === 0, problems };
  }

  private archiveLagBytes(): number {
    const archived = this.uploader?.archivedLsn ?? 0n;
    const end = this.serverWalEnd ?? this.received;
    return end > archived ? Number(end - archived) : 0;
  }

  /**
   * A physical slot's restart_lsn follows the flush position we report (the archived one in
   * archive mode, the fsynced one in sync mode), so this is what the server cannot recycle
   * because of us: the number to hold against max_slot_wal_keep_size and the server's disk.
   */
  private slotRetainedBytes(): number {
    const flushed = this.sent.flush > 0n ? this.sent.flush : (this.uploader?.archivedLsn ?? 0n);
    const end = this.serverWalEnd ?? this.received;
    return end > flushed ? Number(end - flushed) : 0;
  }

  /** (received position, when) samples, one per health tick, for the lag in seconds. */
  private readonly receivedAt: Array<{ lsn: Lsn; at: number }> = [];

  private archiveLagSeconds(): number {
    const archived = this.uploader?.archivedLsn ?? 0n;
    while (this.receivedAt.length > 0 && this.receivedAt[0].lsn <= archived) this.receivedAt.shift();
    if (this.received <= archived) return 0;
    // The first sample past the archived position saw WAL that is still unarchived arrive.
    const first = this.receivedAt[0];
    return first ? (Date.now() - first.at) / 1000 : 0;
  }

  private unarchivedBytes(): number {
    const archived = this.uploader?.archivedLsn ?? 0n;
    return this.received > archived ? Number(this.received - archived) : 0;
  }

  private spoolAlert(): boolean {
    return this.site.spoolAlertMiB > 0 && this.unarchivedBytes() > this.site.spoolAlertMiB * 1024 * 1024;
  }

  /** Writes the metrics file and raises the spool alert, on the status interval, for the whole run. */
  private startHealthTimer(): void {
    const file = path.join(this.site.state, METRICS_FILE);
    let lastAlertLog = 0;
    let writeFailed = false;
    const tick = async () => {
      // A start that fails (bad input, a busy slot) must leave the state directory as it was.
      if (!this.everStreamed) return;
      if (this.spoolAlert() && Date.now() - lastAlertLog >= ALERT_LOG_INTERVAL_MS) {
        lastAlertLog = Date.now();
        const failingMs = this.uploader?.failingForMs ?? null;
        this.log.error(
          { unarchivedMiB: Math.round(this.unarchivedBytes() / 1048576), spoolAlertMiB: this.site.spoolAlertMiB, storageFailingSeconds: failingMs === null ? 0 : Math.round(failingMs / 1000) },
          'unarchived WAL is past spool_alert_mib: the spool grows and the slot holds WAL on the server until the archive catches up; ' +
            "if the server's max_slot_wal_keep_size is reached, it drops that WAL and the archive gets a gap",
        );
      } else if (!this.spoolAlert()) {
        lastAlertLog = 0;
      }
      if (this.received > 0n && this.pendingWarning) {
        this.pendingWarning();
        this.pendingWarning = null;
      }
      const last = this.receivedAt[this.receivedAt.length - 1];
      if (!last || this.received > last.lsn) this.receivedAt.push({ lsn: this.received, at: Date.now() });
      if (this.receivedAt.length > 10000) this.receivedAt.shift();
      const err = await this.writeMetricsFile();
      if (err && !writeFailed) this.log.warn({ file, err: errorMessage(err) }, 'cannot write the metrics file');
      writeFailed = err !== null;
    };
    this.healthTimer = setInterval(() => void tick(), this.site.statusIntervalSeconds * 1000);
    this.healthTimer.unref();
    void tick();
  }

  private metricsWrite: Promise<Error | null> = Promise.resolve(null);

  /**
   * Replaces STATE/metrics.prom with the metrics now (the error if it cannot). One write at
   * a time, so the stop's last write is the one that stays.
   */
  private writeMetricsFile(): Promise<Error | null> {
    const file = path.join(this.site.state, METRICS_FILE);
    const write = async () => {
      try {
        await fs.promises.writeFile(`${file}.tmp`, renderPrometheus([...this.metrics(), ...this.extraMetrics()]), { mode: 0o600 });
        await fs.promises.rename(`${file}.tmp`, file);
        return null;
      } catch (err) {
        // A full disk leaves a torn temp file: it must not hold on to the room.
        await fs.promises.rm(`${file}.tmp`, { force: true }).catch(() => undefined);
        return err as Error;
      }
    };
    this.metricsWrite = this.metricsWrite.then(write, write);
    return this.metricsWrite;
  }

  /** Renews the archive lease; losing it to another receiver stops this one. */
  private startLeaseHeartbeat(): void {
    let busy = false;
    let failing = false;
    this.leaseTimer = setInterval(() => {
      if (busy || !this.lease) return;
      busy = true;
      this.lease
        .heartbeat()
        .then(() => {
          if (failing) this.log.info('archive lease heartbeat works again');
          failing = false;
        })
        .catch((err) => {
          if (isWalvaultError(err, 'ARCHIVE_LOCKED')) {
            this.log.fatal({ err: errorMessage(err) }, 'lost the archive lease: stopping');
            this.fatalError = err;
            this.lease = null;
            this.stop();
          } else if (!failing) {
            // Storage trouble: the uploader reports it; the lease stays ours until its TTL.
            failing = true;
            this.log.warn({ err: errorMessage(err) }, 'cannot renew the archive lease');
          }
        })
        .finally(() => (busy = false));
    }, LEASE_HEARTBEAT_MS);
    this.leaseTimer.unref();
  }

  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.stopController.abort();
    this.session?.stop(this.positions());
  }

  status(): ReceiverStatus {
    return {
      site: this.site.name,
      state: this.state,
      timeline: this.timeline,
      received: this.received ? formatLsn(this.received) : null,
      fsynced: this.fsynced ? formatLsn(this.fsynced) : null,
      archived: this.uploader ? formatLsn(this.uploader.archivedLsn) : null,
      serverWalEnd: this.serverWalEnd === null ? null : formatLsn(this.serverWalEnd),
      spoolQueueBytes: this.queueBytes,
      uploadQueue: this.uploader?.stats.queued ?? 0,
      lastError: this.lastError,
    };
  }

  // ---- start-up -------------------------------------------------------------------------

  private openConnection(): Promise<ReplicationConnection> {
    return ReplicationConnection.connect({
      pg: this.site.pg as Record<string, unknown>,
      applicationName: this.site.applicationName,
      target: { description: this.site.pgDescription, user: String(this.site.pg.user ?? process.env.PGUSER ?? 'postgres'), slot: this.site.slot },
    });
  }

  private async connect(): Promise<void> {
    const conn = await this.openConnection();
    try {
      const identity = await conn.identifySystem();
      const facts = await conn.serverFacts();
      if (this.identity && identity.systemId !== this.identity.systemId) {
        throw new WalvaultError(
          'ARCHIVE_OTHER_CLUSTER',
          `the server at ${this.site.pgDescription} is now database system ${identity.systemId}, but this site archives ${this.identity.systemId}; fix the connection settings`,
        );
      }
      pageMagicForMajor(facts.major);
      if (facts.major < 13) {
        throw new WalvaultError('PG_UNSUPPORTED_VERSION', `PostgreSQL ${serverVersionText(facts.versionNum)} is too old: walvault supports 13 to 18`);
      }
      this.identity = identity;
      this.facts = facts;
      this.conn = conn;
    } catch (err) {
      await conn.close();
      throw err;
    }
  }

  private checkContext = (tli: number, name: string): PageCheckContext => ({
    magic: pageMagicForMajor(this.facts.major),
    systemId: BigInt(this.identity.systemId),
    segSize: this.facts.walSegmentSize,
    blockSize: this.facts.walBlockSize,
    fileTli: tli,
    label: `WAL segment ${name}`,
  });

  private async startUp(): Promise<void> {
    await this.connect();
    const { identity, facts } = this;
    const cluster = await this.archive.readCluster();
    const ours: ClusterInfo = {
      systemId: identity.systemId,
      pgVersionNum: facts.versionNum,
      walSegmentSize: facts.walSegmentSize,
    };
    if (cluster && cluster.systemId !== ours.systemId) {
      throw new WalvaultError(
        'ARCHIVE_OTHER_CLUSTER',
        `archive ${this.archive.storage.description} belongs to database system ${cluster.systemId}, but the server at ${this.site.pgDescription} is ${ours.systemId}; use a separate archive for each cluster`,
      );
    }
    checkStateDirUsable(this.site.state);
    // Every refusal comes before anything is created on the server (the slot below): another
    // receiver's archive is refused here, another cluster's state when the ledger opens.
    await new ArchiveLease(this.archive.storage, this.site.name, this.site.state).check();
    const firstRun = !fs.existsSync(this.ledgerPath);
    if (!firstRun) await this.openState();

    let slotRestart: { lsn: Lsn; tli: number | null } | null = null;
    if (this.site.createSlot) {
      const created = await this.conn!.createPhysicalSlot(this.site.slot, facts.major);
      if (created) {
        this.slotCreatedHere = true;
        this.log.info({ slot: this.site.slot }, 'created physical replication slot');
      }
    }
    const slot = await this.conn!.readSlot(this.site.slot, facts.major);
    if (slot && !slot.exists) {
      throw new WalvaultError(
        'CONFIG_INVALID',
        `replication slot "${this.site.slot}" does not exist on ${this.site.pgDescription}; create it, or set create_slot = true`,
      );
    }
    if (slot?.restartLsn) slotRestart = { lsn: slot.restartLsn, tli: slot.restartTli };

    if (!this.resume) {
      const fromArchive = cluster ? await this.resumeFromArchive() : null;
      if (fromArchive) {
        this.resume = fromArchive;
      } else if (slotRestart) {
        this.resume = { lsn: segmentStart(slotRestart.lsn, facts.walSegmentSize), tli: slotRestart.tli ?? 0 };
      } else {
        this.resume = { lsn: segmentStart(identity.xlogPos, facts.walSegmentSize), tli: identity.timeline };
      }
    }
    const startLsn = this.resume.lsn;
    const unboundedSlot = !this.warnedUnboundedSlot && (await this.conn!.show('max_slot_wal_keep_size')) === '-1';
    // Logged once the server accepts streaming: a start that fails says so in one line.
    this.startupLine = () => {
      this.log.info(
        {
          serverVersion: facts.versionNum,
          systemId: identity.systemId,
          timeline: identity.timeline,
          walSegmentSize: facts.walSegmentSize,
          slot: this.site.slot,
          startLsn: formatLsn(startLsn),
          mode: this.site.mode,
          archive: this.archive.storage.description,
          server: this.site.pgDescription,
        },
        `PostgreSQL ${serverVersionText(facts.versionNum)}, system ${identity.systemId}, timeline ${identity.timeline}, slot ${this.site.slot}, ` +
          `starting at ${formatLsn(startLsn)}, archiving to ${this.archive.storage.description}`,
      );
      // Once WAL flows (a start the server refuses says so in one line), once a run: both
      // choices lose something, and the operator should pick one knowingly.
      if (unboundedSlot) this.pendingWarning = () => {
        this.warnedUnboundedSlot = true;
        this.log.warn(
          { slot: this.site.slot, server: this.site.pgDescription, setting: 'max_slot_wal_keep_size' },
          `the server has no max_slot_wal_keep_size: while walvault is stopped or cannot archive, slot ${this.site.slot} keeps every byte of WAL ` +
            `until the server's disk is full; to bound it: ALTER SYSTEM SET max_slot_wal_keep_size = '64GB'; SELECT pg_reload_conf(); ` +
            `(past that much unarchived WAL the server drops it and the archive gets a gap: size it above the longest outage you accept). ` +
            'A site that stops for good: walvault slot drop',
        );
      };
    };
    if (firstRun) this.deferredSetup = () => this.openState();
  }

  private deferredSetup: (() => Promise<void>) | null = null;
  private startupLine: (() => void) | null = null;
  private warnedUnboundedSlot = false;
  private pendingWarning: (() => void) | null = null;

  /** Creates or opens the state directory, ledger and spool, and reconciles them. */
  private async openState(): Promise<void> {
    // Another receiver on this archive: refuse before anything is created or written.
    const lease = new ArchiveLease(this.archive.storage, this.site.name, this.site.state);
    await lease.check();
    this.createStateDirs();
    this.lock = StateLock.acquire(this.site.state);
    const row = await this.makingRoom(lease, () => this.openLedger());
    // Every start: a crash on the first run may have come before the marker was written.
    {
      await claimArchive(
        this.archive,
        { systemId: this.identity.systemId, pgVersionNum: this.facts.versionNum, walSegmentSize: this.facts.walSegmentSize },
        this.log,
        this.site.state,
      );
    }
    if (!this.lease) {
      await lease.acquire();
      this.lease = lease;
    }
    this.startLeaseHeartbeat();
    this.spool = new SegmentSpool({
      dir: this.spoolDir,
      segSize: this.facts.walSegmentSize,
      checkContext: this.checkContext,
      // A completed spool file is an archive object already (see Archive.putSealedFile).
      headerRoom: PLAIN_HEADER_LENGTH,
      seal: (size, digest) => encodePlainHeader(size, digest),
      waitForRoom: (err, file) => this.writes.waitForRoom(err, `writing spool file ${file}`),
    });
    const ledger = this.ledger!;
    const result = await this.makingRoom(lease, () =>
      reconcile({
        site: this.site.name,
        ledger,
        archive: this.archive,
        spoolDir: this.spoolDir,
        segSize: this.facts.walSegmentSize,
        checkContext: this.checkContext,
        log: this.log,
      }),
    );
    if (result.resume) this.resume = result.resume;
    const lowest = ledger.allSegments(this.site.name).reduce<Lsn | null>(
      (min, r) => (min === null || r.startLsn < min ? r.startLsn : min),
      null,
    );
    // Never assume more is archived than the ledger proves.
    const initialArchived = result.archivedThrough > 0n ? result.archivedThrough : (lowest ?? this.resume?.lsn ?? 0n);
    if (result.archivedThrough > row.archivedLsn) {
      this.writes.may('recording the archived position', () => ledger.advancePositions(this.site.name, { archived: result.archivedThrough }));
    }
    this.uploader = new Uploader({
      site: this.site.name,
      archive: this.archive,
      ledger,
      writes: this.writes,
      spoolDir: this.spoolDir,
      segSize: this.facts.walSegmentSize,
      concurrency: this.site.uploadConcurrency,
      log: this.log,
      stallMs: this.site.storageStallSeconds * 1000,
      initialArchived,
      onAdvance: () => {
        if (this.site.mode === 'archive') this.sendStatus(false);
      },
    });
    for (const job of result.toUpload) this.uploader.enqueue(job.seg, job.sha256);
    this.received = this.resume?.lsn ?? 0n;
    this.fsynced = this.received;
  }

  /**
   * The state directory and spool hold plaintext WAL (also with encryption on): 0700, as
   * PostgreSQL keeps pg_wal, their files 0600. Directories that exist already are left as
   * they are, with a warning when others can get in; so is a local archive looser than
   * archive_file_mode asks.
   */
  private createStateDirs(): void {
    for (const dir of [this.site.state, this.spoolDir]) {
      let mode: number;
      try {
        mode = fs.statSync(dir).mode & 0o777;
      } catch {
        continue;
      }
      if (mode & 0o077) {
        this.log.warn(
          { dir, mode: mode.toString(8) },
          `${dir === this.spoolDir ? 'spool' : 'state'} directory ${dir} has mode 0${mode.toString(8)}: other users can read the WAL in it; chmod 700 ${dir}`,
        );
      }
    }
    fs.mkdirSync(this.spoolDir, { recursive: true, mode: 0o700 });
    void this.archive.storage.accessWarnings?.().then(
      (warnings) => warnings.forEach((w) => this.log.warn(w)),
      () => undefined,
    );
  }

  /** Opens the ledger and registers the site (again: a failed attempt's connection is closed first). */
  private openLedger(): SiteRow {
    this.ledger?.close();
    this.ledger = null;
    const ledger = Ledger.open(this.ledgerPath);
    try {
      const row = ledger.transaction(() => {
        const registered = ledger.registerSite({
          site: this.site.name,
          systemId: this.identity.systemId,
          timeline: this.resume?.tli || this.identity.timeline,
          walSegmentSize: this.facts.walSegmentSize,
          serverVersionNum: this.facts.versionNum,
        });
        // On the first start the archive is complete up to where streaming begins: record that
        // with the site, so a crash before the first upload cannot leave the position unknown.
        if (registered.archivedLsn === 0n && this.resume) {
          return ledger.advancePositions(this.site.name, { archived: this.resume.lsn });
        }
        return registered;
      });
      this.ledger = ledger;
      return row;
    } catch (err) {
      ledger.close();
      throw err;
    }
  }

  /**
   * Runs a start-up step that writes the ledger. On a full state disk it first archives the
   * sealed spool files, which needs no ledger and frees their room (see archiveSealedSpool),
   * then tries again; with nothing to archive, or the archive failing too, the start ends with
   * the operator's line.
   */
  private async makingRoom<T>(lease: ArchiveLease, step: () => T | Promise<T>): Promise<T> {
    for (;;) {
      try {
        return await step();
      } catch (err) {
        if (!isDiskFull(err)) throw err;
        let archived = 0;
        let error: unknown = null;
        try {
          // Writing to the archive: hold its lease first.
          if (!this.lease) {
            await lease.acquire();
            this.lease = lease;
          }
          ({ archived, error } = await archiveSealedSpool({
            archive: this.archive,
            spoolDir: this.spoolDir,
            segSize: this.facts.walSegmentSize,
            checkContext: this.checkContext,
            log: this.log,
          }));
        } catch (e) {
          if (isWalvaultError(e, 'ARCHIVE_LOCKED')) throw e;
          error = e;
        }
        if (archived === 0) {
          const full = stateDiskFullError(this.site.state, 'starting', err);
          if (error === null) throw full;
          throw new WalvaultError('STATE_DISK_FULL', `${full.message}; archiving the spool to make room failed too: ${errorMessage(error)}`, { cause: err });
        }
        this.log.warn({ archived, stateDir: this.site.state }, `state directory ${this.site.state} is full: archived ${archived} spool files to make room`);
      }
    }
  }

  /** With no ledger but an archive of this cluster: continue after its newest segment. */
  private async resumeFromArchive(): Promise<ResumePoint | null> {
    const { parseSegmentFileName, isSegmentFileName, segmentStartOfNumber } = await import('../wal/lsn');
    let best: ResumePoint | null = null;
    for (const name of await this.archive.listWal()) {
      if (!isSegmentFileName(name)) continue;
      const { tli, segNo } = parseSegmentFileName(name, this.facts.walSegmentSize);
      const end = segmentStartOfNumber(segNo + 1n, this.facts.walSegmentSize);
      if (!best || end > best.lsn || (end === best.lsn && tli > best.tli)) best = { lsn: end, tli };
    }
    return best;
  }

  // ---- streaming ------------------------------------------------------------------------

  /** Which timeline holds `lsn` on this server (its history decides for older timelines). */
  private async timelineFor(lsn: Lsn, hint: number): Promise<number> {
    const serverTli = this.identity.timeline;
    if (hint === serverTli) return hint;
    if (serverTli === 1) return 1;
    const { content } = await this.conn!.timelineHistory(serverTli);
    return timelineOfLsn(parseTimelineHistory(content.toString('utf8')), serverTli, lsn);
  }

  /** Returns true when streaming got going (for backoff), after a clean end or a timeline switch chain. */
  private async streamUntilInterrupted(): Promise<boolean> {
    let got = false;
    if (this.spool) {
      // What a dead connection left queued is dropped: the open segment is received again
      // from its start, like after a restart.
      this.queue.length = 0;
      this.queueBytes = 0;
      await this.writerIdle().catch(() => undefined);
      const open = await this.spool.closeOpen();
      if (open) this.resume = { lsn: open.startLsn, tli: open.tli };
    }
    let start = this.resume!.lsn;
    let tli = await this.timelineFor(start, this.resume!.tli);
    while (!this.stopping) {
      if (tli > 1 && this.ledger && !this.ledger.hasHistory(this.site.name, tli)) await this.archiveHistory(tli);
      this.timeline = tli;
      const end = await this.streamTimeline(tli, start);
      got = true;
      if (end.kind !== 'end-of-timeline') {
        if (end.kind === 'server-shutdown') {
          this.log.warn('the server shut down the replication stream; reconnecting');
          throw new WalvaultError('PG_SERVER_ERROR', 'server shut down the replication connection');
        }
        return got;
      }
      const received = this.spool?.receivedLsn ?? start;
      if (end.nextTli <= tli || end.nextTliStart > maxLsn(received, start)) {
        throw new WalvaultError(
          'PG_PROTOCOL',
          `server ended timeline ${tli} with next timeline ${end.nextTli} at ${formatLsn(end.nextTliStart)}, which does not follow what was received (${formatLsn(received)})`,
        );
      }
      this.log.info(
        { from: tli, to: end.nextTli, switchpoint: formatLsn(end.nextTliStart) },
        `timeline ${tli} ended; following timeline ${end.nextTli}`,
      );
      await this.finishTimeline();
      await this.archiveHistory(end.nextTli);
      if (end.nextTli > this.ledger!.getSite(this.site.name)!.timeline) {
        await this.writes.must(`recording timeline ${end.nextTli} in the ledger`, () => this.ledger!.switchTimeline(this.site.name, end.nextTli, end.nextTliStart));
      }
      // Bytes past the switch point were the old timeline's only (a torn record at most):
      // nothing past it may be reported as held on the new one.
      const clamp = (v: Lsn) => (v > end.nextTliStart ? end.nextTliStart : v);
      this.sent = { write: clamp(this.sent.write), flush: clamp(this.sent.flush), apply: clamp(this.sent.apply) };
      this.received = clamp(this.received);
      this.fsynced = clamp(this.fsynced);
      this.uploader!.clampTo(end.nextTliStart);
      tli = end.nextTli;
      start = segmentStart(end.nextTliStart, this.facts.walSegmentSize);
      this.resume = { lsn: start, tli };
      this.identity = { ...this.identity, timeline: Math.max(this.identity.timeline, tli) };
    }
    return got;
  }

  private streamTimeline(tli: number, start: Lsn): Promise<StreamEnd> {
    const session = this.conn!.startReplication(
      { slot: this.site.slot, start, timeline: tli },
      {
        onStart: () => {
          this.state = 'streaming';
          this.everStreamed = true;
          this.startupLine?.();
          this.startupLine = null;
          const back = this.outage.recovered();
          if (back) this.log.warn(back, `the replication connection is back after ${Math.round(back.failingForMs / 1000)} s`);
          this.log.info({ timeline: tli, start: formatLsn(start), slot: this.site.slot }, 'starting replication');
          if (this.deferredSetup) {
            const setup = this.deferredSetup;
            this.deferredSetup = null;
            this.setupDone = setup();
            this.setupDone.then(
              () => (this.slotInUse = true),
              (err) => {
                this.setupFailed = err;
                this.failStream(err);
              },
            );
          } else {
            this.slotInUse = true;
          }
          this.startTimers();
        },
        onXLogData: (h, payload) => this.onXLogData(tli, h, payload),
        onKeepalive: (k) => this.onKeepalive(k),
        finalPositions: () => this.positions(),
      },
    );
    this.session = session;
    return new Promise<StreamEnd>((resolve, reject) => {
      this.failStream = (err) => {
        reject(err);
        void this.closeConnection();
      };
      session.done.then(
        async (end) => {
          try {
            this.stopTimers();
            await this.setupDone;
            await this.writerIdle();
            resolve(end);
          } catch (err) {
            reject(err);
          }
        },
        (err) => {
          this.stopTimers();
          reject(this.namingTheGap(err, tli, start));
        },
      );
    }).finally(() => {
      this.session = null;
    });
  }

  /**
   * The server's words for missing WAL do not always say where (PostgreSQL 16+ names only the
   * invalidated slot): the operator needs the position the archive stops at.
   */
  private namingTheGap(err: unknown, tli: number, start: Lsn): unknown {
    if (!isWalvaultError(err) || err.code !== 'PG_WAL_REMOVED') return err;
    const segment = segmentFileName(tli, segmentNumber(start, this.facts.walSegmentSize), this.facts.walSegmentSize);
    // Nothing can fill this gap, and this archive cannot go on past it (its end is where
    // streaming resumes): the way on is a new archive with a new backup, the old one kept.
    const slot = this.site.slot;
    return new WalvaultError(
      'PG_WAL_REMOVED',
      `cannot continue at ${formatLsn(start)} on timeline ${tli} (segment ${segment}): ${err.message}; the archive has a gap from there ` +
        `and its backups restore only up to it. To archive again: drop the slot if the server invalidated it ` +
        `(SELECT pg_drop_replication_slot('${slot}')), give site "${this.site.name}" a new archive location and a new state directory, ` +
        `restart walvault and take a new base backup (walvault backup push); keep the old archive for restores up to the gap ` +
        `(docs/postgresql-setup.md, "When the server removed WAL the archive needs"). ` +
        `To avoid this, raise max_slot_wal_keep_size or keep the receiver running so the slot holds WAL`,
      { cause: err },
    );
  }

  private setupDone: Promise<void> = Promise.resolve();
  private failStream: (err: unknown) => void = () => undefined;

  private onXLogData(tli: number, h: XLogDataHeader, payload: Buffer): void {
    this.serverWalEnd = h.walEnd;
    if (payload.length === 0) return;
    this.queue.push({ kind: 'data', tli, start: h.dataStart, data: this.copier.copy(payload) });
    this.queueBytes += payload.length;
    if (this.queueBytes > QUEUE_HIGH_WATER) this.session?.pause();
    this.kickWriter();
  }

  private onKeepalive(k: Keepalive): void {
    this.serverWalEnd = k.walEnd;
    if (!k.replyRequested) return;
    if (this.site.mode === 'sync' && this.fsynced < this.received) {
      // Answer once what was written is durable: the reply is what releases commits.
      this.requestSync();
      return;
    }
    this.sendStatus(false);
    // A server shutting down waits until we confirm everything it sent; in archive mode that
    // means archiving the tail now instead of at the next partial interval.
    if (this.site.mode === 'archive' && this.uploader && this.uploader.archivedLsn < this.received) {
      const now = Date.now();
      if (now - this.lastRequestedPartial >= 1000) {
        this.lastRequestedPartial = now;
        this.queue.push({ kind: 'partial' });
        this.kickWriter();
      }
    }
  }

  private requestSync(): void {
    if (this.syncPending) return;
    this.syncPending = true;
    this.queue.push({ kind: 'sync' });
    this.kickWriter();
  }

  private kickWriter(): void {
    if (this.writerRunning) return;
    this.writerRunning = true;
    void this.runWriter();
  }

  private async runWriter(): Promise<void> {
    try {
      await this.setupDone;
      while (this.queue.length > 0) {
        const item = this.queue.shift()!;
        if (item.kind === 'data') {
          // Everything queued behind it on the same timeline goes down in one vectored write.
          const parts = [item.data];
          let bytes = item.data.length;
          while (bytes < WRITE_BATCH_BYTES && this.queue[0]?.kind === 'data' && this.queue[0].tli === item.tli) {
            const next = this.queue.shift() as { data: Buffer };
            parts.push(next.data);
            bytes += next.data.length;
          }
          this.queueBytes -= bytes;
          await this.writeData(item.tli, item.start, parts, bytes);
          for (const p of parts) this.copier.release(p);
          if (this.session?.isPaused && this.queueBytes < QUEUE_LOW_WATER) this.session.resume();
          // In sync mode every batch is made durable and reported at once: commits wait on it.
          if (this.site.mode === 'sync' && this.queue.length === 0) await this.syncAndReport();
        } else if (item.kind === 'sync') {
          this.syncPending = false;
          await this.syncAndReport();
        } else {
          await this.snapshotPartial();
        }
      }
    } catch (err) {
      // What waiting cannot fix on a full disk (a failed fsync: the bytes are received again
      // after the reconnect) still gets the operator's line.
      this.writerError = isDiskFull(err) ? stateDiskFullError(this.site.state, 'writing the spool', err) : err;
      this.queue.length = 0;
      this.queueBytes = 0;
      this.failStream(this.writerError);
    } finally {
      this.writerRunning = false;
      for (const w of this.writerIdleWaiters.splice(0)) w();
    }
  }

  private async writerIdle(): Promise<void> {
    if (this.writerRunning) await new Promise<void>((resolve) => this.writerIdleWaiters.push(resolve));
    if (this.writerError) {
      const err = this.writerError;
      this.writerError = null;
      throw err;
    }
  }

  private async writeData(tli: number, start: Lsn, parts: Buffer[], bytes: number): Promise<void> {
    await this.spool!.write(
      tli,
      start,
      parts,
      (seg) => this.onSegmentOpen(seg),
      (seg) => this.onSegmentComplete(seg),
    );
    this.writes.worked();
    this.received = start + BigInt(bytes);
  }

  private async onSegmentOpen(seg: OpenSegment): Promise<void> {
    await this.writes.must(`recording segment ${seg.name} in the ledger`, () =>
      this.ledger!.upsertReceiving(this.site.name, {
        timeline: seg.tli,
        segNo: seg.segNo,
        name: seg.name,
        startLsn: seg.startLsn,
        size: this.facts.walSegmentSize,
      }),
    );
  }

  /**
   * The complete row is durable before anything about the segment is reported or queued for
   * upload: the ledger then knows every segment the server was told about, which lets later
   * records (archived, positions) lag on a full disk without a restart losing track.
   */
  private async onSegmentComplete(seg: CompletedSegment): Promise<void> {
    const end = seg.startLsn + BigInt(this.facts.walSegmentSize);
    await this.writes.must(`recording segment ${seg.name} as complete in the ledger`, () =>
      this.ledger!.transaction(() => {
        this.ledger!.markComplete(this.site.name, seg.tli, seg.segNo, seg.sha256);
        this.ledger!.advancePositions(this.site.name, { received: end, fsynced: end });
      }),
    );
    this.fsynced = maxLsn(this.fsynced, end);
    this.resume = { lsn: end, tli: seg.tli };
    this.uploader!.enqueue({ tli: seg.tli, segNo: seg.segNo, name: seg.name, startLsn: seg.startLsn }, seg.sha256, seg.crc32c);
    this.log.debug({ segment: seg.name }, 'segment complete');
  }

  private async syncAndReport(): Promise<void> {
    const synced = await this.spool!.fsync();
    if (synced !== null) this.fsynced = maxLsn(this.fsynced, synced);
    this.sendStatus(false);
  }

  /** Uploads what the open segment holds so far as NAME.partial (runs inside the writer). */
  private async snapshotPartial(): Promise<void> {
    const spool = this.spool!;
    const open = spool.open;
    if (!open || open.received === 0) return;
    if (open.name === this.lastPartialName && open.received === this.lastPartialBytes) return;
    if (this.uploader!.partialBusy) return;
    // Taken with `open`: the spool's hash of exactly those bytes.
    const sha256 = spool.openDigest() ?? undefined;
    const synced = await spool.fsync();
    if (synced !== null) this.fsynced = maxLsn(this.fsynced, synced);
    this.lastPartialName = open.name;
    this.lastPartialBytes = open.received;
    // Not awaited: the writer goes on while the upload reads the fsynced prefix of the file
    // (bytes that do not change); partials upload one at a time.
    void this.uploader!.uploadPartial(open, fileSource(spool.partialPath(open.name), open.received, spool.headerRoom), { sha256 }).catch(() => undefined);
  }

  /** Closes the ended timeline's last segment as a permanent .partial in the archive. */
  private async finishTimeline(): Promise<void> {
    const spool = this.spool!;
    const sha256 = spool.openDigest() ?? undefined;
    const open = await spool.closeOpen();
    if (!open || open.received === 0) return;
    await this.uploader!.uploadPartial(open, fileSource(spool.partialPath(open.name), open.received, spool.headerRoom), { final: true, sha256 });
    await fs.promises.rm(spool.partialPath(open.name), { force: true });
  }

  private async archiveHistory(tli: number): Promise<void> {
    const { fileName, content } = await this.conn!.timelineHistory(tli);
    if (fileName !== historyFileName(tli)) {
      throw new WalvaultError('PG_PROTOCOL', `TIMELINE_HISTORY ${tli} returned file ${fileName}`);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await this.archive.putImmutable(Archive.walKey(fileName), content);
        break;
      } catch (err) {
        if (isWalvaultError(err, 'ARCHIVE_CONFLICT') || this.stopping) throw err;
        this.log.error({ file: fileName, err: errorMessage(err) }, 'archiving a timeline history file failed; retrying');
        await sleep(backoffDelayMs(attempt), this.stopController.signal);
      }
    }
    const { createHash } = await import('node:crypto');
    const ledger = this.ledger;
    // Not recorded (a full disk): archived again next time, the same bytes, a no-op.
    if (ledger) this.writes.may(`recording ${fileName}`, () => ledger.recordHistory(this.site.name, tli, fileName, createHash('sha256').update(content).digest('hex')));
    this.log.info({ file: fileName }, 'archived timeline history file');
  }

  // ---- status updates -------------------------------------------------------------------

  private positions(): StatusPositions {
    const flush = this.site.mode === 'sync' ? this.fsynced : (this.uploader?.archivedLsn ?? 0n);
    // Never report more than was received, never less than was reported before.
    const write = maxLsn(this.sent.write, this.received);
    const f = maxLsn(this.sent.flush, flush < write ? flush : write);
    return { write, flush: f, apply: f };
  }

  private sendStatus(replyRequested: boolean): void {
    const session = this.session;
    if (!session || !session.streaming) return;
    const p = this.positions();
    try {
      session.sendStatus(p, replyRequested);
      this.sent = p;
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not send a status update');
    }
  }

  private startTimers(): void {
    this.stopTimers();
    this.statusTimer = setInterval(() => {
      try {
        this.sendStatus(false);
        const ledger = this.ledger;
        if (ledger && this.received > 0n) {
          this.writes.may('recording positions', () => ledger.advancePositions(this.site.name, { received: this.received, fsynced: this.fsynced }));
        }
      } catch (err) {
        // A throw from a timer would end the process with a stack: the stream ends with it
        // instead, and the run loop decides (a LEDGER error stops the site with its line).
        this.failStream(err);
      }
    }, this.site.statusIntervalSeconds * 1000);
    if (this.site.partialIntervalSeconds > 0) {
      this.partialTimer = setInterval(() => {
        this.queue.push({ kind: 'partial' });
        this.kickWriter();
      }, this.site.partialIntervalSeconds * 1000);
    }
  }

  private stopTimers(): void {
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.partialTimer) clearInterval(this.partialTimer);
    this.statusTimer = this.partialTimer = null;
  }

  // ---- shutdown -------------------------------------------------------------------------

  private async closeConnection(): Promise<void> {
    this.stopTimers();
    const conn = this.conn;
    this.conn = null;
    this.session = null;
    if (conn) await conn.close();
  }

  private async shutDown(): Promise<void> {
    this.stopTimers();
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.healthTimer = null;
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    this.leaseTimer = null;
    try {
      await this.writerIdle().catch(() => undefined);
      // With the lease lost, another receiver owns the archive: write nothing more to it.
      if (this.spool && this.uploader && !this.writerError && !this.fatalError) {
        // Leave the freshest possible partial in the archive: the loss window is what is not there.
        const open = this.spool.open;
        const sha256 = this.spool.openDigest() ?? undefined;
        if (open && open.received > 0) {
          await this.spool.fsync();
          const upload = this.uploader.uploadPartial(open, fileSource(this.spool.partialPath(open.name), open.received, this.spool.headerRoom), { sha256 });
          await withTimeout(upload, 30000);
        }
        await withTimeout(this.uploader.idle(), 30000);
      }
      await this.spool?.closeOpen();
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'error while stopping');
    } finally {
      this.uploader?.stop();
      await this.closeConnection();
      if (this.ledger) {
        if (this.received > 0n) {
          try {
            this.ledger.advancePositions(this.site.name, { received: this.received, fsynced: this.fsynced });
          } catch {
            /* best effort */
          }
        }
        this.ledger.close();
      }
      if (this.lease) await this.lease.release().catch((err) => this.log.warn({ err: errorMessage(err) }, 'cannot release the archive lease'));
      if (this.slotCreatedHere && !this.slotInUse) await this.dropSlotCreatedHere();
      this.state = 'stopped';
      if (this.everStreamed) {
        // Textfile monitoring must not see a stopped site as streaming.
        const err = await this.writeMetricsFile();
        if (err) this.log.warn({ file: path.join(this.site.state, METRICS_FILE), err: errorMessage(err) }, 'cannot write the metrics file');
        this.stoppedLine();
      }
      this.lock?.release();
    }
  }

  /** Where the site stopped, and what the server holds for it meanwhile. */
  private stoppedLine(): void {
    const archived = this.uploader?.archivedLsn ?? 0n;
    const kept = this.sent.flush > 0n ? this.sent.flush : archived;
    this.log.info(
      { received: formatLsn(this.received), archived: formatLsn(archived), slot: this.site.slot, slotKeepsFrom: formatLsn(kept) },
      `stopped: received up to ${formatLsn(this.received)}, archived up to ${formatLsn(archived)}; ` +
        `slot ${this.site.slot} on ${this.site.pgDescription} now keeps the server's WAL from ${formatLsn(kept)} on, ` +
        'until walvault streams from it again or the slot is dropped',
    );
  }

  /**
   * A run that ends before it streamed into its state must not leave the slot it created:
   * nothing depends on it, and an inactive slot holds WAL on the server forever.
   */
  private async dropSlotCreatedHere(): Promise<void> {
    const slot = this.site.slot;
    try {
      const dropped = await withTimeout(
        (async () => {
          const conn = await this.openConnection();
          try {
            await conn.dropSlot(slot);
            return true;
          } finally {
            await conn.close();
          }
        })(),
        20000,
      );
      if (!dropped) throw new Error('no answer from the server within 20 s');
      this.slotCreatedHere = false;
      this.log.debug({ slot }, 'dropped the replication slot this run created');
    } catch (err) {
      this.log.warn(
        { slot, err: errorMessage(err) },
        `cannot drop replication slot "${slot}", created by this run that never streamed; it holds WAL on ${this.site.pgDescription} ` +
          `until dropped: SELECT pg_drop_replication_slot('${slot}')`,
      );
    }
  }
}

/** Fails early, before anything is written, when the state directory cannot be used. */
function checkStateDirUsable(dir: string): void {
  let probe = path.resolve(dir);
  for (;;) {
    let st: fs.Stats | null = null;
    try {
      st = fs.statSync(probe);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOTDIR: a file stands somewhere on the path; walking up finds and names it.
      if (code !== 'ENOENT' && code !== 'ENOTDIR') {
        throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot use state directory ${dir}: ${(err as Error).message}; choose another --state`);
      }
    }
    if (st) {
      if (!st.isDirectory()) {
        throw new WalvaultError(
          'STATE_DIR_UNWRITABLE',
          `cannot use state directory ${dir}: ${probe} is not a directory; choose another --state`,
        );
      }
      try {
        fs.accessSync(probe, fs.constants.W_OK | fs.constants.X_OK);
      } catch {
        throw new WalvaultError(
          'STATE_DIR_UNWRITABLE',
          `cannot write state directory ${dir}: ${probe} is not writable by this user; fix its permissions or choose another --state`,
        );
      }
      return;
    }
    const parent = path.dirname(probe);
    if (parent === probe) return;
    probe = parent;
  }
}
