/**
 * One site's receiver: run/stop and the wiring of its parts.
 *
 *   walsender --XLogData--> WalWriter (./wal-writer.ts: queue, spool, ledger rows, fsync, partials)
 *                               | complete segment
 *                               v
 *                           Uploader --> Archive (verified) --> archived LSN
 *   StatusReporter (./status-reporter.ts): write = received, flush = archived (mode archive) |
 *   fsynced (mode sync), never backwards. Start-up: ./site-connection-checks.ts, ./start-point.ts,
 *   ./site-state.ts; timelines: ./timeline-steps.ts; numbers and health: ./receiver-health.ts.
 */
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import type { SiteConfig } from '../config/config-types';
import { errorMessage, WalvaultError } from '../errors';
import type { XLogDataHeader, Keepalive } from '../postgres/copy-both-messages';
import type { ReplicationConnection, ServerFacts, SystemIdentity } from '../postgres/replication-connection';
import type { StreamEnd, WalStreamSession } from '../postgres/wal-stream-session';
import { openSiteArchive } from '../archive/site-archive';
import { formatLsn, maxLsn, segmentStart, type Lsn } from '../wal/lsn';
import type { Sample } from '../observe/metrics';
import { Backoff } from '../util/retry';
import { StateWrites } from './state-writes';
import { startLeaseHeartbeat } from './lease-heartbeat';
import { connectToSiteServer, openReplicationConnection, pageCheckContext } from './site-connection-checks';
import { StreamFailures } from './stream-failures';
import { StatusReporter } from './status-reporter';
import { WalWriter } from './wal-writer';
import { logStopLine, StartLines } from './receiver-lines';
import { dropSlotCreatedHere, slotServesNothing } from './slot-cleanup';
import { archiveHistory, checkTimelineSwitch, finishTimeline, namingTheGap, recordTimeline, timelineFor } from './timeline-steps';
import { checkStateDirUsable, closeSiteState, openSiteState, siteRegistered, type SiteStateHolder } from './site-state';
import { checkSiteArchives, chooseStart, prepareSlot } from './start-point';
import { ReceiverHealth, type ReceiverState, type ReceiverStatus } from './receiver-health';
export type { ReceiverStatus } from './receiver-health';

export class SiteReceiver {
  private conn: ReplicationConnection | null = null;
  private session: WalStreamSession | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  /** Set when the site must stop for an operator (the archive lease was lost). */
  private fatalError: Error | null = null;
  /** Every spool and ledger write that can meet a full disk goes through here. */
  private readonly writes: StateWrites;
  /** The first run's state setup failed: nothing to go on with. */
  private setupFailed: unknown = null;
  /** The site's archives, in its order: every one gets all of its WAL. */
  private readonly archives: Archive[];
  /** The archives as the site's lines name them. */
  private readonly archiveDescription: string;
  private identity!: SystemIdentity;
  private facts!: ServerFacts;
  private timeline = 0;
  private stopping = false;
  private readonly stopController = new AbortController();
  private statusTimer: NodeJS.Timeout | null = null;
  private healthTimer: NodeJS.Timeout | null = null;
  private reconnects = 0;
  private partialTimer: NodeJS.Timeout | null = null;
  private serverWalEnd: Lsn | null = null;
  private readonly reporter: StatusReporter;
  private readonly healthOf: ReceiverHealth;
  private readonly writer: WalWriter;
  private readonly failures: StreamFailures;
  private readonly lines: StartLines;
  /** The site's open state: lock, ledger, lease, spool, uploader, where streaming resumes. */
  private readonly held: SiteStateHolder = { lock: null, ledger: null, leases: [], spool: null, uploader: null, resume: null };
  private state: ReceiverState = 'starting';
  private lastError: string | null = null;
  private everStreamed = false;
  /** The slot was created by this run: dropped again if the run ends before it streamed into its state. */
  private slotCreatedHere = false;
  private slotInUse = false;
  /** Any WAL arrived in this run. */
  private gotWal = false;
  /** The error the run ended on, if it did. */
  private endError: unknown = null;

  constructor(
    private readonly site: SiteConfig,
    private readonly log: Logger,
  ) {
    this.archives = site.archives.map((a) => openSiteArchive(a, 'write'));
    this.archiveDescription = this.archives.map((a) => a.storage.description).join(', ');
    this.writes = new StateWrites(site.state, log, this.stopController.signal);
    this.failures = new StreamFailures(log);
    this.lines = new StartLines(log, site);
    this.writer = new WalWriter({
      site,
      writes: this.writes,
      segSize: () => this.facts.walSegmentSize,
      spool: () => this.held.spool!,
      ledger: () => this.held.ledger!,
      uploader: () => this.held.uploader!,
      stream: () => this.session,
      ready: () => this.setupDone,
      sendStatus: () => this.sendStatus(),
      fail: (err) => this.failStream(err),
      completed: (resume) => (this.held.resume = resume),
      log,
    });
    this.reporter = new StatusReporter(site.mode, { received: () => this.received, fsynced: () => this.fsynced, archived: () => this.held.uploader?.archivedLsn ?? 0n });
    this.healthOf = new ReceiverHealth(
      site,
      {
        state: () => this.state,
        lastError: () => this.lastError,
        received: () => this.received,
        fsynced: () => this.fsynced,
        serverWalEnd: () => this.serverWalEnd,
        reportedFlush: () => this.reporter.sent.flush,
        reconnects: () => this.reconnects,
        uploader: () => this.held.uploader,
        stateFullForMs: () => this.writes.fullForMs,
        archiveDescription: () => this.archiveDescription,
        timeline: () => this.timeline,
        queuedBytes: () => this.writer.queuedBytes,
        extraMetrics: () => this.extraMetrics(),
      },
      log,
    );
  }

  private get received(): Lsn {
    return this.writer.received;
  }

  private get fsynced(): Lsn {
    return this.writer.fsynced;
  }

  /** Streams until stop() is called. Rejects when the site cannot go on without an operator. */
  async run(): Promise<void> {
    try {
      await this.startUp();
      this.startHealthTimer();
      const backoff = new Backoff(500, 30000);
      while (!this.stopping) {
        try {
          if (!this.conn) await this.connect();
          if (await this.streamUntilInterrupted()) backoff.reset();
        } catch (err) {
          this.lastError = errorMessage(err);
          this.endError = err;
          if (this.failures.isFatal(err)) throw err;
          if (this.setupFailed) throw this.setupFailed;
          if (this.failures.mustStop(err, { everStreamed: this.everStreamed, stopping: this.stopping })) throw err;
        }
        await this.closeConnection();
        if (this.stopping) break;
        this.state = 'reconnecting';
        this.reconnects++;
        await backoff.wait(this.stopController.signal);
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
    return this.healthOf.metrics();
  }

  /** The site is streaming and archiving, or what is wrong, in words with the fix. */
  health(): { ok: boolean; problems: string[] } {
    return this.healthOf.health();
  }

  /** Writes the metrics file and raises the spool alert, on the status interval, for the whole run. */
  private startHealthTimer(): void {
    const tick = async () => {
      // A start that fails (bad input, a busy slot) must leave the state directory as it was.
      if (!this.everStreamed) return;
      if (this.received > 0n) this.lines.walFlowing();
      await this.healthOf.tick();
    };
    this.healthTimer = setInterval(() => void tick(), this.site.statusIntervalSeconds * 1000);
    this.healthTimer.unref();
    void tick();
  }

  /** Renews the archive lease; losing it to another receiver stops this one. */
  private startLeaseHeartbeat(): void {
    this.leaseTimer = startLeaseHeartbeat(() => this.held.leases, this.log, (err) => {
      this.fatalError = err;
      this.held.leases = [];
      this.stop();
    });
  }

  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.stopController.abort();
    this.session?.stop(this.reporter.positions());
  }

  status(): ReceiverStatus {
    return this.healthOf.status();
  }

  // ---- start-up -------------------------------------------------------------------------

  private async connect(): Promise<void> {
    const { conn, identity, facts } = await connectToSiteServer(this.site, this.identity);
    this.identity = identity;
    this.facts = facts;
    this.conn = conn;
  }

  private async startUp(): Promise<void> {
    await this.connect();
    const { identity, facts } = this;
    checkStateDirUsable(this.site.state);
    // Every refusal comes before anything is created on the server (the slot below): another
    // cluster's or receiver's archive is refused here, another cluster's state when the ledger opens.
    const withCluster = await checkSiteArchives(this.archives, identity, this.site);
    const firstRun = !siteRegistered(this.site);
    if (!firstRun) await this.openState();

    const slot = await prepareSlot(this.conn!, this.site, facts.major, this.log);
    if (slot.created) this.slotCreatedHere = true;
    this.held.resume ??= await chooseStart({ archives: withCluster, slot: slot.restart, identity, segSize: facts.walSegmentSize });
    const unboundedSlot = (await this.conn!.show('max_slot_wal_keep_size')) === '-1';
    this.lines.prepare({ identity, facts, start: this.held.resume.lsn, archive: this.archiveDescription }, unboundedSlot);
    if (firstRun) this.deferredSetup = () => this.openState();
  }

  private deferredSetup: (() => Promise<void>) | null = null;

  /** Creates or opens the state directory, ledger and spool, and reconciles them (./site-state.ts). */
  private async openState(): Promise<void> {
    const { site, archives, identity, facts, writes, log } = this;
    await openSiteState(this.held, {
      site, archives, identity, facts, writes, log,
      checkContext: (tli, name) => pageCheckContext(this.identity, this.facts, tli, name),
      leaseHeld: () => this.startLeaseHeartbeat(),
      // In archive mode what was archived is what the server may forget.
      archivedMore: () => site.mode === 'archive' && this.sendStatus(),
    });
    this.writer.startAt(this.held.resume?.lsn ?? 0n);
  }

  // ---- streaming ------------------------------------------------------------------------

  private archiveHistory(tli: number): Promise<void> {
    const { archives, writes, site, log } = this;
    return archiveHistory(tli, { conn: this.conn!, archives, ledger: this.held.ledger, writes, site, log, signal: this.stopController.signal });
  }

  /** Returns true when streaming got going (for backoff), after a clean end or a timeline switch chain. */
  private async streamUntilInterrupted(): Promise<boolean> {
    let got = false;
    if (this.held.spool) {
      // What a dead connection left queued is dropped: the open segment is received again
      // from its start, like after a restart.
      this.writer.drop();
      await this.writer.idle().catch(() => undefined);
      const open = await this.held.spool.closeOpen();
      if (open) this.held.resume = { lsn: open.startLsn, tli: open.tli };
    }
    let start = this.held.resume!.lsn;
    let tli = await timelineFor(this.conn!, this.identity.timeline, start, this.held.resume!.tli);
    while (!this.stopping) {
      if (tli > 1 && this.held.ledger && !this.held.ledger.hasHistory(this.site.name, tli)) await this.archiveHistory(tli);
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
      checkTimelineSwitch(tli, end, maxLsn(this.held.spool?.receivedLsn ?? start, start), this.log);
      await finishTimeline(this.held.spool!, this.held.uploader!);
      await this.archiveHistory(end.nextTli);
      await recordTimeline(this.held.ledger!, this.writes, this.site.name, end);
      // Bytes past the switch point were the old timeline's only (a torn record at most):
      // nothing past it may be reported as held on the new one.
      this.reporter.clampTo(end.nextTliStart);
      this.writer.clampTo(end.nextTliStart);
      this.held.uploader!.clampTo(end.nextTliStart);
      tli = end.nextTli;
      start = segmentStart(end.nextTliStart, this.facts.walSegmentSize);
      this.held.resume = { lsn: start, tli };
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
          this.lines.streaming();
          this.failures.streaming();
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
        finalPositions: () => this.reporter.positions(),
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
            await this.writer.idle();
            resolve(end);
          } catch (err) {
            reject(err);
          }
        },
        (err) => {
          this.stopTimers();
          reject(namingTheGap(err, this.site, tli, start, this.facts.walSegmentSize));
        },
      );
    }).finally(() => {
      this.session = null;
    });
  }

  private setupDone: Promise<void> = Promise.resolve();
  private failStream: (err: unknown) => void = () => undefined;

  private onXLogData(tli: number, h: XLogDataHeader, payload: Buffer): void {
    this.serverWalEnd = h.walEnd;
    if (payload.length === 0) return;
    this.gotWal = true;
    this.writer.push(tli, h.dataStart, payload);
  }

  private onKeepalive(k: Keepalive): void {
    this.serverWalEnd = k.walEnd;
    if (!k.replyRequested) return;
    if (this.reporter.keepaliveAnswer() === 'after-fsync') {
      // Answer once what was written is durable: the reply is what releases commits.
      this.writer.requestSync();
      return;
    }
    this.sendStatus();
    if (this.site.mode === 'archive' && this.held.uploader) this.writer.requestTail();
  }

  /** Tells the server the positions now; a send that fails is followed by the next one's. */
  private sendStatus(): void {
    const session = this.session;
    if (!session?.streaming) return;
    try {
      this.reporter.report((p) => session.sendStatus(p, false));
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not send a status update');
    }
  }

  private startTimers(): void {
    this.stopTimers();
    this.statusTimer = setInterval(() => {
      try {
        this.sendStatus();
        if (this.held.ledger) this.writer.recordPositions();
      } catch (err) {
        // A throw from a timer would end the process with a stack: the stream ends with it
        // instead, and the run loop decides (a LEDGER error stops the site with its line).
        this.failStream(err);
      }
    }, this.site.statusIntervalSeconds * 1000);
    if (this.site.partialIntervalSeconds > 0) {
      this.partialTimer = setInterval(() => this.writer.requestPartial(), this.site.partialIntervalSeconds * 1000);
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
      await this.writer.idle().catch(() => undefined);
      // With the lease lost, another receiver owns the archive: write nothing more to it.
      if (this.held.spool && this.held.uploader && !this.writer.failed && !this.fatalError) await this.writer.archiveTailForStop(30000);
      await this.held.spool?.closeOpen();
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'error while stopping');
    } finally {
      await this.closeConnection();
      await closeSiteState(this.held, { received: this.received, fsynced: this.fsynced }, this.site, this.log, async () => {
        const unused = slotServesNothing({ inUse: this.slotInUse, gotWal: this.gotWal, endError: this.endError });
        if (this.slotCreatedHere && unused && (await dropSlotCreatedHere(() => openReplicationConnection(this.site), this.site, this.log))) this.slotCreatedHere = false;
        this.state = 'stopped';
        if (this.everStreamed) {
          // Textfile monitoring must not see a stopped site as streaming.
          const err = await this.healthOf.writeMetricsFile();
          if (err) this.log.warn({ file: this.healthOf.metricsFile, err: errorMessage(err) }, 'cannot write the metrics file');
          logStopLine(this.log, this.site, { received: this.received, archived: this.held.uploader?.archivedLsn ?? 0n, reportedFlush: this.reporter.sent.flush });
        }
      });
    }
  }
}
