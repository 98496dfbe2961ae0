/**
 * The base backup another process is taking in an archive (the holder of the backup lease),
 * told the way someone who has to wait for it needs: which backup, who takes it, how far it is.
 */
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { ArchiveLease, BACKUP_LEASE, LEASE_TTL_MS, type LeaseHolder } from '../archive/archive-lease';
import { formatBytes, formatDuration } from '../observe/progress';
import { sleep } from '../util/timers';

/** How often a waiting push looks at the lease again. */
const WAIT_POLL_MS = 2000;
/** How often the wait is logged: often enough to show it is alive, rarely enough to read. */
const WAIT_LOG_MS = 30_000;

export async function runningBackup(archive: Archive): Promise<LeaseHolder | null> {
  return new ArchiveLease(archive.storage, '', '', LEASE_TTL_MS, BACKUP_LEASE).liveHolder();
}

export function describeRunningBackup(h: LeaseHolder): string {
  const who = `walvault pid ${h.pid} on host ${h.host} (site ${h.site})`;
  const p = h.progress;
  let how = 'starting';
  if (p?.phase === 'checkpoint') how = "waiting for the server's checkpoint";
  else if (p?.phase === 'waiting for WAL') how = `stored (${formatBytes(p.bytesDone)}), waiting for its WAL to be archived`;
  else if (p) {
    const of = p.bytesTotal !== null ? ` of ~${formatBytes(p.bytesTotal)}` : '';
    const left = p.secondsLeft !== null ? `, about ${formatDuration(p.secondsLeft)} left` : '';
    how = `streaming, ${formatBytes(p.bytesDone)}${of}${left}`;
  }
  return `backup ${h.backup ?? '(unnamed yet)'} by ${who}, started ${h.acquiredAt}: ${how}`;
}

/**
 * Returns once no live backup lease is left (or on abort). A holder that dies stops
 * heartbeating, so the wait ends at most LEASE_TTL_MS after its last heartbeat.
 */
export async function waitWhileBackupRuns(archive: Archive, log: Logger, o: { signal?: AbortSignal; pollMs?: number } = {}): Promise<void> {
  let lastLog = 0;
  for (;;) {
    if (o.signal?.aborted) return;
    const holder = await runningBackup(archive);
    if (holder === null) {
      if (lastLog > 0) log.info('the other base backup is over; taking this one');
      return;
    }
    if (Date.now() - lastLog >= WAIT_LOG_MS) {
      lastLog = Date.now();
      log.info(
        { running: holder.backup ?? null, pid: holder.pid, host: holder.host, site: holder.site, progress: holder.progress ?? null },
        `one backup at a time per archive: waiting for ${describeRunningBackup(holder)} (--no-wait fails at once instead)`,
      );
    }
    await sleep(o.pollMs ?? WAIT_POLL_MS, o.signal);
  }
}
