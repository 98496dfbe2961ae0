/**
 * The daemon's account of a site for `walvault status`, in STATE/daemon-state.json: the
 * receiver rewrites it with the metrics file, every status interval and once more at its stop;
 * status reads it from another process. Positions travel as PostgreSQL's `X/Y` text, so
 * status shows exactly what the receiver holds: the metrics file carries them as Prometheus
 * numbers, doubles that lose the low bits of a position past 2^53.
 *
 * Written whole and renamed into place (../wal/fsync-dir.ts), so a reader never sees half a
 * file. A file status cannot use (missing, damaged, another version, another site) reads as
 * none: status then calls the connection unknown, as it does for a stale one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Sample } from '../observe/metrics';
import { replaceFile } from '../wal/fsync-dir';
import { DAEMON_STATE_FILE } from './state-dir';

/** Bumped when a field changes meaning: a reader takes only its own version. */
const VERSION = 1;

const STATES = ['starting', 'streaming', 'reconnecting', 'stopped'] as const;

export interface DaemonState {
  version: typeof VERSION;
  site: string;
  /** When the receiver wrote it (ISO 8601): status calls it stale past three status intervals. */
  writtenAt: string;
  state: (typeof STATES)[number];
  /** `X/Y`; null before the receiver holds any. */
  positions: { received: string | null; fsynced: string | null; archived: string | null; serverWalEnd: string | null };
  /** WAL the server wrote that is not archived yet, and the age of the oldest unarchived WAL. */
  lag: { bytes: number; seconds: number };
  /** How long writes to the archive have been failing (or stalled); null while they work. */
  storageFailingSeconds: number | null;
  /** Unarchived WAL is past spool_alert_mib. */
  spoolAlert: boolean;
  /** Whether the last scheduled restore drill succeeded; null when none ran. */
  lastDrillOk: boolean | null;
  /** Each archive of the site on its own (absent in files from before several archives). */
  archives?: ArchiveState[];
}

export interface ArchiveState {
  archive: string;
  /** `X/Y`: the end of the WAL this archive holds without a gap; null before any. */
  archived: string | null;
  uploadQueue: number;
  storageFailingSeconds: number | null;
}

/** The receiver as this file sees it: its status, its samples and its duties' samples. */
export interface DaemonStateSource {
  status(): {
    site: string;
    state: DaemonState['state'];
    received: string | null;
    fsynced: string | null;
    archived: string | null;
    serverWalEnd: string | null;
    archives?: Array<{ archive: string; archived: string | null; uploadQueue: number; storageFailingSeconds: number | null }>;
  };
  metrics(): Sample[];
  extraMetrics(): Sample[];
}

/** Replaces STATE/daemon-state.json with the receiver's state now. */
export async function writeDaemonState(stateDir: string, receiver: DaemonStateSource): Promise<void> {
  // A hint for status, rewritten every status interval: not fsynced (see replaceFile).
  await replaceFile(path.join(stateDir, DAEMON_STATE_FILE), `${JSON.stringify(daemonState(receiver, new Date()))}\n`, { sync: false });
}

/** What the daemon last wrote for `site` in `stateDir`, or null when status cannot use it. */
export function readDaemonState(stateDir: string, site: string): DaemonState | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(path.join(stateDir, DAEMON_STATE_FILE), 'utf8'));
  } catch {
    return null;
  }
  return isDaemonState(parsed) && parsed.site === site ? parsed : null;
}

function daemonState(receiver: DaemonStateSource, now: Date): DaemonState {
  const s = receiver.status();
  // The numbers that are not positions are the receiver's samples: one computation of each,
  // shared with the metrics file and /metrics.
  const samples = new Map([...receiver.metrics(), ...receiver.extraMetrics()].map((m) => [m.name, m.value]));
  const value = (name: string): number | null => samples.get(name) ?? null;
  // 0/0 is the receiver's "nothing yet" (an uploader that archived nothing).
  const position = (lsn: string | null): string | null => (lsn === null || lsn === '0/0' ? null : lsn);
  const drill = value('walvault_drill_last_success');
  return {
    version: VERSION,
    site: s.site,
    writtenAt: now.toISOString(),
    state: s.state,
    positions: { received: position(s.received), fsynced: position(s.fsynced), archived: position(s.archived), serverWalEnd: position(s.serverWalEnd) },
    lag: { bytes: value('walvault_archive_lag_bytes') ?? 0, seconds: value('walvault_archive_lag_seconds') ?? 0 },
    storageFailingSeconds: value('walvault_storage_failing') === 1 ? (value('walvault_storage_failing_seconds') ?? 0) : null,
    spoolAlert: value('walvault_spool_alert') === 1,
    lastDrillOk: drill === null ? null : drill === 1,
    archives: (s.archives ?? []).map((a) => ({ archive: a.archive, archived: position(a.archived), uploadQueue: a.uploadQueue, storageFailingSeconds: a.storageFailingSeconds })),
  };
}

function isDaemonState(v: unknown): v is DaemonState {
  const o = v as Partial<DaemonState> | null;
  const lsnOrNull = (x: unknown) => x === null || (typeof x === 'string' && /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/.test(x));
  const p = o?.positions;
  return (
    typeof o === 'object' &&
    o !== null &&
    o.version === VERSION &&
    typeof o.site === 'string' &&
    typeof o.writtenAt === 'string' &&
    !Number.isNaN(Date.parse(o.writtenAt)) &&
    (STATES as readonly string[]).includes(o.state as string) &&
    typeof p === 'object' &&
    p !== null &&
    lsnOrNull(p.received) &&
    lsnOrNull(p.fsynced) &&
    lsnOrNull(p.archived) &&
    lsnOrNull(p.serverWalEnd) &&
    typeof o.lag?.bytes === 'number' &&
    typeof o.lag.seconds === 'number' &&
    (o.storageFailingSeconds === null || typeof o.storageFailingSeconds === 'number') &&
    typeof o.spoolAlert === 'boolean' &&
    (o.lastDrillOk === null || typeof o.lastDrillOk === 'boolean') &&
    (o.archives === undefined || (Array.isArray(o.archives) && o.archives.every((a) => typeof a?.archive === 'string' && lsnOrNull(a.archived) && typeof a.uploadQueue === 'number' && (a.storageFailingSeconds === null || typeof a.storageFailingSeconds === 'number'))))
  );
}
