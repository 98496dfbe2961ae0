/**
 * `walvault check`: the archive's own account of what it can restore. From the complete
 * backups, the WAL objects and the timeline history files it works out, for every backup,
 * the WAL recovery would read from the backup's start on (across timeline switches, to the
 * newest timeline the backup leads to), whether the backup becomes consistent (WAL through
 * its stop LSN), and how far it can be recovered; and it lists every missing segment (as
 * ranges), history file and backup part. Nothing is written.
 */
import { describeRunningBackup, runningBackup } from '../backup/running-backup';
import { Archive } from '../archive/archive';
import { listBackups, type BackupMetadata } from '../backup/catalog';
import type { SiteConfig } from '../config/config-types';
import { isWalvaultError, WalvaultError } from '../errors';
import { formatLsn, isHistoryFileName, isSegmentFileName, parseLsn, parseSegmentFileName, segmentNumber, segmentStartOfNumber, historyFileName, type Lsn } from '../wal/lsn';
import { parseTimelineHistory, type TimelineHistoryEntry } from '../wal/timeline-history';
import { walIdentityChecker, type WalClusterIdentity } from '../wal/wal-identity';
import { describeRange, missingRanges, ownerOf, pathContains, scanChain, timelinePath, type ArchivedWal, type MissingRange, type PathStep } from '../wal/wal-chain';

const WAL_PREFIX = 'wal/';

export interface BackupCheck {
  name: string;
  startLsn: string;
  stopLsn: string;
  timeline: number;
  /** The timeline recovery from it follows to. */
  recoveryTimeline: number;
  /** WAL from start through stop LSN is archived. */
  consistent: boolean;
  missingParts: string[];
  /** 'incremental': restoring it needs every backup of `chain` too. */
  kind: 'full' | 'incremental';
  /** An incremental's chain, its full backup first, its parent last; empty for a full backup. */
  chain: string[];
  /** Members of the chain that are not complete backups in the archive, or miss objects. */
  brokenChain: string[];
  restorable: boolean;
  /** How far recovery from it reaches without a gap (null when not even to consistency). */
  recoverableTo: { lsn: string; timeline: number; archivedAt: string | null } | null;
  /** The segment where recovery from it stops short of the archive's newest WAL (a gap), or null. */
  firstMissing: string | null;
  problems: string[];
}

export interface CheckReport {
  archive: string;
  checkedAt: string;
  segmentSize: number;
  /** The newest timeline in the archive. */
  timeline: number;
  newest: { lsn: string; timeline: number; object: string; archivedAt: string | null } | null;
  missingSegments: MissingRange[];
  missingHistoryFiles: string[];
  /** Where the WAL ends in a `.partial` only (the receiver's newest bytes, or a gap's edge). */
  partialOnly: string[];
  backups: BackupCheck[];
  /** Where the site's server is, when the check was given the site and could reach it. */
  server?: ServerPosition;
  /** A base backup being taken now (the backup lease's holder), in words; null when none. */
  backupRunning: string | null;
  /** Every problem, in words. */
  problems: string[];
  ok: boolean;
}

export type ServerPosition =
  | { reachable: true; timeline: number; lsn: string; /** Bytes the archive is behind, on the same timeline. */ archiveLagBytes: number | null }
  | { reachable: false; reason: string };

/** The server's timeline and current WAL position (IDENTIFY_SYSTEM); its being down is no failure of the check. */
async function serverPosition(site: SiteConfig): Promise<{ timeline: number; lsn: Lsn } | { reason: string }> {
  const { connectSite } = await import('../postgres/site-connection');
  try {
    const conn = await connectSite(site, 'check');
    try {
      const id = await conn.identifySystem();
      return { timeline: id.timeline, lsn: id.xlogPos };
    } finally {
      await conn.close();
    }
  } catch (err) {
    return { reason: err instanceof Error ? err.message : String(err) };
  }
}

interface Gathered {
  segSize: number;
  wal: ArchivedWal;
  modified: Map<string, Date | undefined>;
  histories: Map<number, TimelineHistoryEntry[]>;
  timelines: Set<number>;
  backups: BackupMetadata[];
  backupObjects: Set<string>;
  /** Objects that could not be decoded (damaged) or are another object (misplaced), with the reason. */
  unreadable: string[];
}

async function gather(archive: Archive): Promise<Gathered> {
  const cluster = await archive.readCluster();
  if (!cluster) throw new WalvaultError('ARCHIVE_NOT_FOUND', `${archive.storage.description} has no cluster.json: it is not a walvault archive (or not this one)`, { fix: `check the location` });
  const segSize = cluster.walSegmentSize;
  const objects = await archive.storage.list(WAL_PREFIX);
  const wal: ArchivedWal = { segments: new Set(), partials: new Map() };
  const modified = new Map<string, Date | undefined>();
  const histories = new Map<number, TimelineHistoryEntry[]>();
  const timelines = new Set<number>([1]);
  const unreadable: string[] = [];
  for (const o of objects) {
    const name = o.key.slice(WAL_PREFIX.length);
    modified.set(name, o.modified);
    if (isSegmentFileName(name)) {
      wal.segments.add(name);
      timelines.add(parseSegmentFileName(name, segSize).tli);
    } else if (name.endsWith('.partial') && isSegmentFileName(name.slice(0, -'.partial'.length))) {
      const seg = name.slice(0, -'.partial'.length);
      wal.partials.set(seg, null);
      timelines.add(parseSegmentFileName(seg, segSize).tli);
    } else if (isHistoryFileName(name)) {
      const tli = parseInt(name.slice(0, 8), 16);
      timelines.add(tli);
      // A damaged or misplaced history file counts as missing, and is named.
      const body = (await readable(archive, o.key, cluster, unreadable, true))?.data;
      if (body) histories.set(tli, parseTimelineHistory(body.toString('utf8'), o.key));
    }
  }
  // A partial's length is its plaintext's: decoded, so compression and encryption do not matter.
  for (const seg of wal.partials.keys()) wal.partials.set(seg, (await readable(archive, Archive.walKey(`${seg}.partial`), cluster, unreadable, false))?.size ?? 0);
  const backups = await listBackups(archive);
  for (const b of backups) timelines.add(b.stopTimeline).add(b.startTimeline);
  const backupObjects = new Set((await archive.storage.list('backups/')).map((o) => o.key));
  return { segSize, wal, modified, histories, timelines, backups, backupObjects, unreadable };
}

/**
 * Reads the WAL file `key` as it arrives, checked as every read is and against its own name
 * (by its binding, and its content: ../wal/wal-identity.ts), keeping its plaintext only when
 * `keep` (a history file; a partial is wanted for its length alone). Null (named in
 * `unreadable`) when it is damaged or is not the file its name says.
 */
async function readable(archive: Archive, key: string, cluster: WalClusterIdentity, unreadable: string[], keep: boolean): Promise<{ size: number; data: Buffer | null } | null> {
  try {
    return await archive.read(key, async (o) => {
      const check = walIdentityChecker(key.slice(WAL_PREFIX.length), o.header.plaintextSize, cluster, archive.label(key));
      const parts: Buffer[] = [];
      for await (const chunk of o.chunks) {
        check.write(chunk);
        if (keep) parts.push(Buffer.from(chunk));
      }
      check.end();
      return { size: o.header.plaintextSize, data: keep ? Buffer.concat(parts) : null };
    });
  } catch (err) {
    if (!isWalvaultError(err) || !['ARCHIVE_CORRUPT', 'ARCHIVE_AUTH_FAILED', 'ARCHIVE_MISPLACED', 'WAL_BAD_PAGE'].includes(err.code)) throw err;
    unreadable.push(`${err.code === 'ARCHIVE_MISPLACED' ? 'misplaced' : 'damaged'}: ${err.message}`);
    return null;
  }
}

/** The path to timeline `tli`, or null when a history file it needs is missing. */
function pathTo(tli: number, g: Gathered, missingHistory: Set<string>): PathStep[] | null {
  if (tli === 1) return timelinePath(1, []);
  const h = g.histories.get(tli);
  if (!h) {
    missingHistory.add(historyFileName(tli));
    return null;
  }
  return timelinePath(tli, h);
}

export async function checkArchive(archive: Archive, opts: { site?: SiteConfig } = {}): Promise<CheckReport> {
  const g = await gather(archive);
  const { segSize, wal } = g;
  const missingHistory = new Set<string>();
  const timelines = [...g.timelines].sort((a, b) => b - a);
  const latest = timelines[0];
  for (const t of timelines) pathTo(t, g, missingHistory);
  const latestPath = pathTo(latest, g, missingHistory) ?? timelinePath(latest, []);

  // The newest archived position: the highest segment (or partial) on the newest timeline's path.
  let newestSegNo = -1n;
  let newestName: string | null = null;
  for (const name of [...wal.segments, ...wal.partials.keys()]) {
    const { tli, segNo } = parseSegmentFileName(name, segSize);
    // Only what recovery along the newest timeline reads (not an old branch's later WAL).
    if (ownerOf(latestPath, segNo, segSize) !== tli) continue;
    if (segNo > newestSegNo || (segNo === newestSegNo && wal.segments.has(name))) {
      newestSegNo = segNo;
      newestName = wal.segments.has(name) ? name : `${name}.partial`;
    }
  }
  const at = (name: string | null) => (name ? (g.modified.get(name)?.toISOString() ?? null) : null);

  const problems: string[] = [];
  const partialOnly = new Set<string>();
  const backups: BackupCheck[] = [];
  const byName = new Map(g.backups.map((b) => [b.name, b]));
  const partsMissing = (b: BackupMetadata): string[] => {
    const keys = [...b.archives.flatMap((a) => [...a.parts.map((p) => p.key), ...(a.index ? [a.index.key] : [])]), b.manifest.key];
    return keys.filter((k) => !g.backupObjects.has(k));
  };
  for (const b of g.backups) {
    const stop = parseLsn(b.stopLsn);
    const start = parseLsn(b.startLsn);
    // The newest timeline recovery from this backup can follow: one whose path holds its stop.
    let path: PathStep[] | null = null;
    let recoveryTimeline = b.stopTimeline;
    for (const t of timelines) {
      const p = g.histories.has(t) || t === 1 ? pathTo(t, g, missingHistory) : null;
      if (p && pathContains(p, b.stopTimeline, stop)) {
        path = p;
        recoveryTimeline = t;
        break;
      }
    }
    path ??= timelinePath(b.stopTimeline, []);
    const scan = scanChain(path, start, newestSegNo, wal, segSize);
    if (scan.endPartial) partialOnly.add(scan.endPartial);
    const consistent = scan.reachedLsn >= stop;
    const missingParts = partsMissing(b);
    const chain = b.chain ?? [];
    const brokenChain = chain.filter((m) => !byName.has(m) || partsMissing(byName.get(m)!).length > 0);
    const own: string[] = [];
    for (const m of brokenChain) {
      own.push(
        byName.has(m)
          ? `backup ${m}, which this incremental is built on, misses objects: ${partsMissing(byName.get(m)!).slice(0, 3).join(', ')}`
          : `backup ${m}, which this incremental is built on, is missing or incomplete: the incremental cannot be restored`,
      );
    }
    if (!consistent) own.push(`WAL needed to make it consistent is missing: ${scan.firstMissing} (the backup needs ${b.startLsn}..${b.stopLsn})`);
    if (missingParts.length > 0) own.push(`${missingParts.length} object(s) of the backup are missing: ${missingParts.slice(0, 3).join(', ')}${missingParts.length > 3 ? ', ...' : ''}`);
    if (consistent && scan.firstMissing) own.push(`recovery stops at ${formatLsn(scan.reachedLsn)}: ${scan.firstMissing} is missing`);
    for (const p of own) problems.push(`backup ${b.name}: ${p}`);
    const lastObject = scan.endPartial ?? scan.lastSegment;
    backups.push({
      name: b.name,
      startLsn: b.startLsn,
      stopLsn: b.stopLsn,
      timeline: b.stopTimeline,
      recoveryTimeline,
      consistent,
      missingParts,
      kind: b.kind ?? 'full',
      chain,
      brokenChain,
      restorable: consistent && missingParts.length === 0 && brokenChain.length === 0,
      recoverableTo: consistent ? { lsn: formatLsn(scan.reachedLsn), timeline: scan.reachedTli, archivedAt: at(lastObject) } : null,
      firstMissing: scan.firstMissing,
      problems: own,
    });
  }
  // While the first backup runs, "take one" would be advice the push it gives refuses.
  const running = await runningBackup(archive);
  if (g.backups.length === 0 && running === null) problems.push('no complete backup: nothing can be restored; take one with "walvault backup push"');

  // Gaps in the WAL from the oldest backup's start (or the oldest segment) to the newest.
  const firstSeg = g.backups.length > 0 ? segmentNumber(parseLsn(g.backups[0].startLsn), segSize) : lowestSegNo(wal, segSize);
  const missing = newestSegNo >= 0n && firstSeg !== null ? missingRanges(latestPath, firstSeg, newestSegNo, wal, segSize) : [];
  for (const r of missing) problems.push(`WAL missing: ${describeRange(r)}`);
  for (const h of [...missingHistory].sort()) problems.push(`timeline history file missing: ${h}`);
  for (const u of g.unreadable) problems.push(`${u}; run "walvault verify"`);

  let newest: CheckReport['newest'] = null;
  if (newestName) {
    const seg = newestName.replace(/\.partial$/, '');
    const { tli } = parseSegmentFileName(seg, segSize);
    const end: Lsn = newestName.endsWith('.partial') ? segmentStartOfNumber(newestSegNo, segSize) + BigInt(wal.partials.get(seg) ?? 0) : segmentStartOfNumber(newestSegNo + 1n, segSize);
    newest = { lsn: formatLsn(end), timeline: tli, object: newestName, archivedAt: at(newestName) };
  }
  let server: ServerPosition | undefined;
  if (opts.site) {
    const pos = await serverPosition(opts.site);
    if ('reason' in pos) server = { reachable: false, reason: pos.reason };
    else {
      const end = newest ? parseLsn(newest.lsn) : null;
      server = { reachable: true, timeline: pos.timeline, lsn: formatLsn(pos.lsn), archiveLagBytes: end !== null && newest!.timeline === pos.timeline ? Number(pos.lsn > end ? pos.lsn - end : 0n) : null };
    }
  }
  return {
    server,
    archive: archive.storage.description,
    checkedAt: new Date().toISOString(),
    segmentSize: segSize,
    timeline: latest,
    newest,
    missingSegments: missing,
    missingHistoryFiles: [...missingHistory].sort(),
    partialOnly: [...partialOnly].sort(),
    backups,
    backupRunning: running ? describeRunningBackup(running) : null,
    problems,
    ok: problems.length === 0,
  };
}

function lowestSegNo(wal: ArchivedWal, segSize: number): bigint | null {
  let low: bigint | null = null;
  for (const name of wal.segments) {
    const { segNo } = parseSegmentFileName(name, segSize);
    if (low === null || segNo < low) low = segNo;
  }
  return low;
}

/** The report for a person. */
export function formatCheckReport(r: CheckReport): string {
  const lines: string[] = [];
  lines.push(`archive ${r.archive}: ${r.ok ? 'OK' : `${r.problems.length} problem(s)`}`);
  lines.push(r.newest ? `newest WAL: ${r.newest.lsn} on timeline ${r.newest.timeline} (${r.newest.object}${r.newest.archivedAt ? `, archived ${r.newest.archivedAt}` : ''})` : 'no WAL archived');
  for (const b of r.backups) {
    const to = b.recoverableTo ? `recoverable to ${b.recoverableTo.lsn} on timeline ${b.recoverableTo.timeline}${b.recoverableTo.archivedAt ? ` (WAL archived ${b.recoverableTo.archivedAt})` : ''}` : 'NOT consistent';
    lines.push(`backup ${b.name} (${b.startLsn}..${b.stopLsn}, timeline ${b.timeline}): ${b.restorable ? 'restorable' : 'NOT restorable'}, ${to}`);
  }
  if (r.backupRunning) lines.push(`${r.backups.length === 0 ? 'no complete backup yet; in progress' : 'in progress'}: ${r.backupRunning}`);
  for (const p of r.partialOnly) lines.push(`note: WAL ends in ${p} (present only as a partial segment)`);
  if (r.server?.reachable) lines.push(`server: ${r.server.lsn} on timeline ${r.server.timeline}${r.server.archiveLagBytes !== null ? `; the archive is ${r.server.archiveLagBytes} bytes behind` : ''}`);
  else if (r.server) lines.push(`server: not reachable (${r.server.reason})`);
  for (const p of r.problems) lines.push(`problem: ${p}`);
  return lines.join('\n') + '\n';
}
