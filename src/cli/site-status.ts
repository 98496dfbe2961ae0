/**
 * `walvault status`: each site's state as an operator asks for it, read without touching
 * anything: the daemon's lock (is it running), the state file it rewrites every status
 * interval (connection, positions, lag, alerts: ../daemon/daemon-state.ts), the ledger opened
 * read-only (timeline, last archived segment), and the archive's backup catalog (last and next
 * backup, recoverable window). Every problem comes in plain words with its fix. The JSON
 * form is documented in docs/status.md and kept stable.
 *
 * Status must answer within seconds even when the store does not: the archive is read with
 * short deadlines (one attempt per request) and given ARCHIVE_WAIT_MS in all; past that it
 * is reported unreachable.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openSiteArchive } from '../archive/site-archive';
import { isIncremental, listBackups } from '../backup/catalog';
import { describeRunningBackup, runningBackup } from '../backup/running-backup';
import type { SiteConfig } from '../config/config-types';
import { readDaemonState } from '../daemon/daemon-state';
import { LEDGER_FILE } from '../daemon/state-dir';
import { StateLock } from '../daemon/state-lock';
import { errorMessage, isWalvaultError, WalvaultError } from '../errors';
import { LedgerReader } from '../ledger/ledger-reader';
import { formatLsn } from '../wal/lsn';
import { serverView, type ServerView } from './server-view';

/** How long status waits for the archive in all, and for each request to it. */
const ARCHIVE_WAIT_MS = 10_000;
const ARCHIVE_REQUEST_S = 5;

export interface StatusProblem {
  problem: string;
  fix: string;
}

export interface SiteStatus {
  site: string;
  daemon: { running: boolean; pid: number | null };
  /** From the daemon's state file, when it is fresh; 'unknown' otherwise. */
  connection: 'streaming' | 'not streaming' | 'unknown';
  timeline: number | null;
  positions: { received: string | null; fsynced: string | null; archived: string | null; serverWalEnd: string | null };
  lag: { bytes: number | null; seconds: number | null };
  lastArchivedSegment: { name: string; at: string } | null;
  lastBackup: { name: string; kind: 'full' | 'incremental'; startedAt: string; stoppedAt: string; startLsn: string; stopLsn: string } | null;
  /** A base backup being taken now, in words (which, by whom, how far); null when none or unknown. */
  backupRunning: string | null;
  /** The newest full backup, and the newest incremental one, by name (null: none). */
  lastFull: string | null;
  lastIncremental: string | null;
  /** When the schedule takes the next backup (now, when one is overdue); null: no schedule. */
  nextBackupDue: string | null;
  /** From the oldest complete backup's start to the newest archived WAL. */
  recoverableWindow: { from: string | null; to: string | null; toLsn: string | null };
  /**
   * The archive as status found it: reachable (the store answered, even with an error),
   * unreachable (no answer in time, refused), and what went wrong, if anything.
   */
  archive: { location: string; reachable: boolean; error: string | null };
  /** Each archive's own position and failure, as the daemon last wrote them (a site with several). */
  archives: Array<{ archive: string; archived: string | null; uploadQueue: number; storageFailingSeconds: number | null }>;
  /** What the server says (./server-view.ts); null when status was not given the server. */
  server: ServerView | null;
  problems: StatusProblem[];
}

/** How the site is named on a command line, for the fixes status suggests. */
export interface SiteArgs {
  /** `--config FILE`, or the one-site options. */
  run: string;
  /** The same for commands that need only the archive and the state. */
  archive: string;
}

export interface StatusReport {
  checkedAt: string;
  sites: SiteStatus[];
  ok: boolean;
}

/** What the ledger holds for the site; null when there is no ledger or the site is not in it. */
function readLedger(file: string, site: string): { timeline: number; received: string | null; fsynced: string | null; archived: string | null; last: { name: string; at: string } | null } | null {
  const ledger = LedgerReader.open(file);
  if (!ledger) return null;
  try {
    const row = ledger.site(site);
    if (!row) return null;
    const position = (lsn: bigint) => (lsn === 0n ? null : formatLsn(lsn));
    return { timeline: row.timeline, received: position(row.receivedLsn), fsynced: position(row.fsyncedLsn), archived: position(row.archivedLsn), last: ledger.lastArchivedSegment(site) };
  } finally {
    ledger.close();
  }
}

/** `withServer`: also ask the site's server (the one-site form may not name it). */
export async function siteStatus(site: SiteConfig, args: SiteArgs, withServer = true): Promise<SiteStatus> {
  const server = withServer ? serverView(site) : Promise.resolve(null);
  const problems: StatusProblem[] = [];
  const lockPid = StateLock.holder(site.state);
  const running = lockPid !== null;
  if (!running) problems.push({ problem: 'the walvault daemon for this site is not running: nothing is being archived', fix: `start it: walvault run ${args.run}` });

  const written = readDaemonState(site.state, site.name);
  const daemon = written !== null && (Date.now() - Date.parse(written.writtenAt)) / 1000 <= site.statusIntervalSeconds * 3 + 5 ? written : null;
  let connection: SiteStatus['connection'] = 'unknown';
  if (daemon) {
    connection = daemon.state === 'streaming' ? 'streaming' : 'not streaming';
    if (connection === 'not streaming') problems.push({ problem: `not streaming from ${site.pgDescription}`, fix: 'check that the server is up and reachable, and read the walvault log for the reason' });
    const failing = (daemon.archives ?? []).length > 1 ? daemon.archives!.filter((a) => a.storageFailingSeconds !== null) : daemon.storageFailingSeconds !== null ? [{ archive: site.archive, storageFailingSeconds: daemon.storageFailingSeconds }] : [];
    for (const a of failing) problems.push({ problem: `archiving to ${a.archive} has been failing for ${Math.round(a.storageFailingSeconds!)} s`, fix: 'check the store, its credentials and free space; WAL waits in the spool and the slot meanwhile' });
    if (daemon.spoolAlert) problems.push({ problem: `unarchived WAL is past spool_alert_mib (${site.spoolAlertMiB} MiB)`, fix: 'make archiving work again before the server drops WAL at max_slot_wal_keep_size' });
    if (daemon.lastDrillOk === false) problems.push({ problem: 'the last restore drill failed', fix: `run walvault drill ${args.archive} to see why` });
  } else if (running) {
    problems.push({ problem: 'the daemon runs but has not written its state file lately', fix: 'read the walvault log; the site may still be starting' });
  }

  const ledger = (() => {
    try {
      return readLedger(path.join(site.state, LEDGER_FILE), site.name);
    } catch (err) {
      problems.push({ problem: `the ledger cannot be read: ${errorMessage(err)}`, fix: 'check the state directory' });
      return null;
    }
  })();
  if (!ledger && running === false && !fs.existsSync(path.join(site.state, LEDGER_FILE))) {
    problems.push({ problem: 'this site has never streamed (no ledger yet)', fix: `start it: walvault run ${args.run}` });
  }

  let lastBackup: SiteStatus['lastBackup'] = null;
  let backupRunning: string | null = null;
  let lastFull: string | null = null;
  let lastIncremental: string | null = null;
  let nextBackupDue: string | null = null;
  let windowFrom: string | null = null;
  const archiveState: SiteStatus['archive'] = { location: site.archive, reachable: true, error: null };
  try {
    const short = Math.min(site.s3.requestTimeoutSeconds ?? ARCHIVE_REQUEST_S, ARCHIVE_REQUEST_S);
    const archive = openSiteArchive(site, 'read', { attempts: 1, requestTimeoutSeconds: short, connectTimeoutSeconds: Math.min(site.s3.connectTimeoutSeconds ?? short, short) });
    try {
      const backups = await within(listBackups(archive), ARCHIVE_WAIT_MS, `${archive.storage.description} did not answer within ${ARCHIVE_WAIT_MS / 1000} s`);
      const newest = backups[backups.length - 1];
      if (newest) lastBackup = { name: newest.name, kind: newest.kind ?? 'full', startedAt: newest.startedAt, stoppedAt: newest.stoppedAt, startLsn: newest.startLsn, stopLsn: newest.stopLsn };
      lastFull = [...backups].reverse().find((b) => !isIncremental(b))?.name ?? null;
      lastIncremental = [...backups].reverse().find((b) => isIncremental(b))?.name ?? null;
      if (backups[0]) windowFrom = backups[0].startedAt;
      if (site.backupIntervalHours > 0) {
        const due = newest ? Date.parse(newest.stoppedAt) + site.backupIntervalHours * 3_600_000 : Date.now();
        nextBackupDue = new Date(Math.max(due, Date.now())).toISOString();
        if (newest && Date.now() - Date.parse(newest.stoppedAt) > 2 * site.backupIntervalHours * 3_600_000) {
          problems.push({ problem: `the newest backup (${newest.name}) is older than two backup intervals`, fix: 'scheduled backups are failing: read the walvault log, or take one with walvault backup push' });
        }
      }
      const running = await within(runningBackup(archive), ARCHIVE_WAIT_MS, `${archive.storage.description} did not answer within ${ARCHIVE_WAIT_MS / 1000} s`);
      if (running) backupRunning = describeRunningBackup(running);
      if (!newest && !running) problems.push({ problem: 'the archive holds no complete backup: nothing can be restored', fix: `take one: walvault backup push ${args.run}` });
    } finally {
      // Also ends requests still waiting on a store that does not answer.
      await archive.close();
    }
  } catch (err) {
    archiveState.error = errorMessage(err);
    if (unreachable(err)) {
      archiveState.reachable = false;
      problems.push({ problem: `the archive is unreachable: ${errorMessage(err)}`, fix: 'check that the store is up and reachable from this host (endpoint, network, firewall); meanwhile WAL waits in the spool and the slot' });
    } else {
      problems.push({ problem: `the archive cannot be read: ${errorMessage(err)}`, fix: 'check the archive location and its credentials' });
    }
  }

  const seen = await server;
  if (seen) serverProblems(seen, site, connection === 'streaming', ledger !== null, args, problems);

  const archivedLsn = daemon?.positions.archived ?? ledger?.archived ?? null;
  const lastAt = ledger?.last?.at ?? null;
  return {
    site: site.name,
    daemon: { running, pid: lockPid },
    connection,
    timeline: ledger?.timeline ?? null,
    positions: {
      received: daemon?.positions.received ?? ledger?.received ?? null,
      fsynced: daemon?.positions.fsynced ?? ledger?.fsynced ?? null,
      archived: archivedLsn,
      serverWalEnd: daemon?.positions.serverWalEnd ?? null,
    },
    lag: { bytes: daemon?.lag.bytes ?? null, seconds: daemon?.lag.seconds ?? null },
    lastArchivedSegment: ledger?.last ?? null,
    lastBackup,
    backupRunning,
    lastFull,
    lastIncremental,
    nextBackupDue,
    recoverableWindow: { from: lastBackup ? windowFrom : null, to: lastBackup ? lastAt : null, toLsn: lastBackup ? archivedLsn : null },
    archive: archiveState,
    archives: daemon?.archives ?? [],
    server: seen,
    problems,
  };
}

/**
 * The slot as the server holds it. A slot nobody streams from keeps every byte of WAL
 * written since, until the server's disk fills (or max_slot_wal_keep_size drops it): past
 * spool_alert_mib of it, that is a problem even when the daemon was stopped on purpose.
 */
function serverProblems(seen: ServerView, site: SiteConfig, streaming: boolean, hasStreamed: boolean, args: SiteArgs, problems: StatusProblem[]): void {
  if (!seen.reachable || seen.error !== null) return; // the daemon's own state says more (not streaming)
  const slot = seen.slot;
  if (slot.exists === false && hasStreamed) {
    problems.push({
      problem: `slot ${slot.name} does not exist on ${site.pgDescription}: the server no longer keeps WAL for this site`,
      fix: `start walvault run ${args.run} (it creates the slot again), then run walvault check ${args.archive}: WAL the server removed meanwhile is a gap in the archive`,
    });
  }
  const held = slot.retainedBytes ?? 0;
  if (!streaming && slot.exists !== false && held > site.spoolAlertMiB * 1024 * 1024) {
    problems.push({
      problem: `slot ${slot.name} on ${site.pgDescription} is not streamed from and holds ${Math.round(held / 1048576)} MiB of WAL on the server (more than spool_alert_mib, ${site.spoolAlertMiB} MiB); it grows until walvault streams again`,
      fix: `start walvault run ${args.run}; or, if this site is retired, drop the slot on the server: SELECT pg_drop_replication_slot('${slot.name}')`,
    });
  }
}

/** `p`, or a STORAGE_TIMEOUT error once `ms` have passed without it settling. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new WalvaultError('STORAGE_TIMEOUT', `${what}: the store does not answer`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
    p.catch(() => undefined); // settles later, when the archive is closed; nobody waits for it
  }
}

/** The store did not answer at all (as opposed to answering with an error). */
function unreachable(err: unknown): boolean {
  if (isWalvaultError(err, 'STORAGE_TIMEOUT')) return true;
  return /ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|socket hang up/.test(errorMessage(err));
}

export function formatStatus(r: StatusReport): string {
  const lines: string[] = [];
  for (const s of r.sites) {
    lines.push(`site ${s.site}: ${s.problems.length === 0 ? 'OK' : `${s.problems.length} problem(s)`}`);
    lines.push(`  daemon: ${s.daemon.running ? `running (pid ${s.daemon.pid})` : 'not running'}; connection: ${s.connection}${s.timeline !== null ? `; timeline ${s.timeline}` : ''}`);
    const p = s.positions;
    lines.push(`  received ${p.received ?? '-'}, fsynced ${p.fsynced ?? '-'}, archived ${p.archived ?? '-'}, server at ${p.serverWalEnd ?? '-'}; lag ${s.lag.bytes ?? '-'} bytes, ${s.lag.seconds ?? '-'} s`);
    lines.push(`  last archived segment: ${s.lastArchivedSegment ? `${s.lastArchivedSegment.name} at ${s.lastArchivedSegment.at}` : '-'}`);
    const unread = s.archive.error !== null;
    lines.push(`  last backup: ${s.lastBackup ? `${s.lastBackup.name} (${s.lastBackup.kind}, ${s.lastBackup.startLsn}..${s.lastBackup.stopLsn}, finished ${s.lastBackup.stoppedAt})` : unread ? 'unknown (the archive was not read)' : 'none'}; next: ${s.nextBackupDue ?? 'not scheduled'}`);
    if (s.backupRunning) lines.push(`  backup in progress: ${s.backupRunning}`);
    if (s.lastIncremental) lines.push(`  last full backup: ${s.lastFull ?? 'none'}; last incremental: ${s.lastIncremental}`);
    lines.push(`  recoverable: ${s.recoverableWindow.from ? `from ${s.recoverableWindow.from} to ${s.recoverableWindow.to ?? '?'} (${s.recoverableWindow.toLsn ?? '?'})` : unread ? 'unknown (the archive was not read)' : 'nothing (no complete backup)'}`);
    lines.push(`  archive: ${s.archive.location}: ${s.archive.reachable ? (s.archive.error ? 'answers, with an error' : 'reachable') : 'unreachable'}`);
    if (s.archives.length > 1) {
      for (const a of s.archives) {
        lines.push(`  archive ${a.archive}: archived ${a.archived ?? '-'}, ${a.uploadQueue} segment(s) queued${a.storageFailingSeconds === null ? '' : `, failing for ${a.storageFailingSeconds} s`}`);
      }
    }
    if (s.server) lines.push(`  server: ${serverLine(s.server)}`);
    for (const q of s.problems) lines.push(`  problem: ${q.problem}; fix: ${q.fix}`);
  }
  return lines.join('\n') + '\n';
}

function serverLine(v: ServerView): string {
  if (v.error !== null) return `${v.reachable ? 'answers, with an error' : 'unreachable'}: ${v.error}`;
  const slot = v.slot.exists === false ? `slot ${v.slot.name} missing` : v.slot.exists === null ? `slot ${v.slot.name}: the server cannot say (older than 15)` : `slot ${v.slot.name} keeps WAL from ${v.slot.restartLsn ?? '-'} (${v.slot.retainedBytes ?? '-'} bytes)`;
  const cap = v.maxSlotWalKeepSize === '-1' ? 'no max_slot_wal_keep_size' : `max_slot_wal_keep_size ${v.maxSlotWalKeepSize}`;
  return `PostgreSQL ${v.version}, WAL at ${v.walPosition}; ${slot}; ${cap}`;
}
