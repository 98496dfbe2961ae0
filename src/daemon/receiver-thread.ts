/**
 * A site's receiver on its own thread. A daemon with many sites runs each receiver in a worker
 * thread so that one site's work cannot hold up another's: a ledger write waiting on a locked
 * state directory, a long synchronous hash, a burst of WAL to copy all stall one event loop,
 * and a stalled loop sends no status updates (the server's wal_sender_timeout then cuts the
 * stream) and takes no WAL. Threads also let the daemon use more than one core.
 *
 * The main thread keeps what is shared: signals, the HTTP listener, the duties (backups,
 * checks, drills) and their metrics. It sees a threaded receiver through the same calls as an
 * in-process one (run, stop, status, metrics, health), answered from the snapshot the thread
 * posts every SNAPSHOT_MS and whenever it ends, so a scrape never waits on a busy site.
 *
 * Messages (structured clone over the worker's port):
 *   main -> thread  { type: 'stop' }                      end the stream and stop cleanly
 *                   { type: 'extra', samples }            the duties' metrics, for the metrics file
 *   thread -> main  { type: 'snapshot', status, metrics, health }
 *                   { type: 'done' }                      run() resolved
 *                   { type: 'failed', error }             run() rejected: code, what, fix, message
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { SiteConfig } from '../config/config-types';
import { WalvaultError, type ErrorCode } from '../errors';
import { createLogger, routeConsoleTo } from '../observe/logger';
import type { Sample } from '../observe/metrics';
import { setSdkLogSink } from '../storage/sdk-log';
import { SiteReceiver, type ReceiverStatus } from './receiver';

const ROLE = 'walvault-site-receiver';
const SNAPSHOT_MS = 250;

/** What the daemon needs of a site's receiver, wherever it runs. */
export interface SiteRunner {
  run(): Promise<void>;
  stop(): void;
  status(): ReceiverStatus;
  metrics(): Sample[];
  health(): { ok: boolean; problems: string[] };
  /** More of the site's numbers for its metrics file, from its other duties. */
  extraMetrics: () => Sample[];
}

interface Snapshot {
  status: ReceiverStatus;
  metrics: Sample[];
  health: { ok: boolean; problems: string[] };
}

interface SentError {
  code?: ErrorCode;
  /** A WalvaultError's cause and its own fix, if it named one. */
  what?: string;
  fix?: string;
  message: string;
  stack?: string;
}

type ToThread = { type: 'stop' } | { type: 'extra'; samples: Sample[] };
type FromThread = ({ type: 'snapshot' } & Snapshot) | { type: 'done' } | { type: 'failed'; error: SentError };

interface ThreadData {
  role: typeof ROLE;
  site: SiteConfig;
  logLevel: string;
  /** The main thread's choice: a thread's stderr is a pipe to it, never a terminal itself. */
  logFormat: 'json' | 'pretty';
}

/** The main thread's handle on a receiver running in a worker thread. */
export class ThreadedReceiver implements SiteRunner {
  private snapshot: Snapshot;
  private worker: Worker | null = null;
  private stopRequested = false;
  extraMetrics: () => Sample[] = () => [];

  constructor(
    private readonly site: SiteConfig,
    private readonly logLevel: string,
  ) {
    this.snapshot = {
      status: {
        site: site.name,
        state: 'starting',
        timeline: 0,
        received: null,
        fsynced: null,
        archived: null,
        serverWalEnd: null,
        spoolQueueBytes: 0,
        uploadQueue: 0,
        lastError: null,
        archives: [],
      },
      metrics: [],
      health: { ok: false, problems: [`not streaming from ${site.pgDescription} (starting)`] },
    };
  }

  run(): Promise<void> {
    const data: ThreadData = { role: ROLE, site: this.site, logLevel: this.logLevel, logFormat: process.stderr.isTTY ? 'pretty' : 'json' };
    const worker = new Worker(__filename, { workerData: data });
    this.worker = worker;
    if (this.stopRequested) this.send({ type: 'stop' });
    return new Promise<void>((resolve, reject) => {
      let outcome: { ok: true } | { ok: false; err: Error } | null = null;
      // Once run() has settled in the thread, nothing of the site is left to finish there: its
      // idle handles (keep-alive sockets, codec workers) must not keep the thread alive.
      const ended = (o: NonNullable<typeof outcome>) => {
        outcome ??= o;
        void worker.terminate();
      };
      worker.on('message', (m: FromThread) => {
        if (m.type === 'snapshot') {
          this.snapshot = { status: m.status, metrics: m.metrics, health: m.health };
          // The duties' numbers go back with each snapshot: the thread writes the metrics file.
          this.send({ type: 'extra', samples: this.extraMetrics() });
        } else if (m.type === 'done') {
          ended({ ok: true });
        } else {
          ended({ ok: false, err: received(m.error) });
        }
      });
      worker.on('error', (err) => ended({ ok: false, err }));
      worker.on('exit', (code) => {
        this.worker = null;
        const err = outcome?.ok ? null : (outcome?.err ?? new WalvaultError('INTERNAL', `site ${this.site.name}: its receiver thread ended (exit code ${code}) without saying why`));
        this.snapshot = stoppedSnapshot(this.snapshot, this.site, err);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  stop(): void {
    this.stopRequested = true;
    this.send({ type: 'stop' });
  }

  status(): ReceiverStatus {
    return this.snapshot.status;
  }

  metrics(): Sample[] {
    return this.snapshot.metrics;
  }

  health(): { ok: boolean; problems: string[] } {
    return this.snapshot.health;
  }

  private send(m: ToThread): void {
    try {
      this.worker?.postMessage(m);
    } catch {
      // The thread is ending; its exit settles run().
    }
  }
}

/**
 * What the site reports once its thread is gone: whatever the last snapshot said, it no longer
 * streams (an error that ended it names the cause, as an in-process receiver's last words do).
 */
function stoppedSnapshot(last: Snapshot, site: SiteConfig, err: Error | null): Snapshot {
  const lastError = err ? err.message : last.status.lastError;
  return {
    status: { ...last.status, state: 'stopped', lastError },
    metrics: last.metrics.map((m) => (m.name === 'walvault_streaming' ? { ...m, value: 0 } : m)),
    health: { ok: false, problems: [`not streaming from ${site.pgDescription} (stopped${lastError ? `: ${lastError}` : ''})`] },
  };
}

/** A WalvaultError keeps its code and fix across the thread boundary (a clone would not). */
function received(e: SentError): Error {
  if (e.code) {
    const err = new WalvaultError(e.code, e.what ?? e.message, e.fix === undefined ? {} : { fix: e.fix });
    if (e.stack) err.stack = e.stack;
    return err;
  }
  const err = new Error(e.message);
  if (e.stack) err.stack = e.stack;
  return err;
}

function sent(err: unknown): SentError {
  if (err instanceof WalvaultError) return { code: err.code, what: err.what, ...(err.namesFix ? { fix: err.fix } : {}), message: err.message, stack: err.stack };
  if (err instanceof Error) return { message: err.message, stack: err.stack };
  return { message: String(err) };
}

function runInThread(data: ThreadData): void {
  const port = parentPort!;
  const log = createLogger({ level: data.logLevel, format: data.logFormat });
  routeConsoleTo(log);
  setSdkLogSink(log.child({ component: 'storage' }));
  const receiver = new SiteReceiver(data.site, log.child({ site: data.site.name }));
  let extra: Sample[] = [];
  receiver.extraMetrics = () => extra;
  const post = (m: FromThread) => port.postMessage(m);
  const postSnapshot = () => post({ type: 'snapshot', status: receiver.status(), metrics: receiver.metrics(), health: receiver.health() });
  port.on('message', (m: ToThread) => {
    if (m.type === 'stop') receiver.stop();
    else extra = m.samples;
  });
  const timer = setInterval(postSnapshot, SNAPSHOT_MS);
  postSnapshot();
  receiver.run().then(
    () => {
      clearInterval(timer);
      postSnapshot();
      post({ type: 'done' });
    },
    (err: unknown) => {
      clearInterval(timer);
      postSnapshot();
      post({ type: 'failed', error: sent(err) });
    },
  );
}

if (!isMainThread && (workerData as ThreadData | null)?.role === ROLE) runInThread(workerData as ThreadData);
