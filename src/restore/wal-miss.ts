/**
 * What `wal-fetch` does when the archive lacks the segment PostgreSQL asks for: the end of
 * the archive (exit 1, silently, as PostgreSQL expects), or a gap in it (../wal/wal-gap.ts).
 * Exit 1 on a gap would make archive recovery end there and promote, losing everything the
 * archive holds after it, so a gap stops recovery instead (exit 126 through WAL_GAP), with
 * one line naming it and the ways on; or, with `--accept-gap`, ends recovery there with a
 * line saying so.
 *
 * A standby is not stopped: it never ends recovery on a miss (it asks again every few
 * seconds, and streams from its primary if it has one, which may still hold the WAL), so a
 * gap cannot make it promote early; stopping it would take down a standby its primary could
 * still feed, or one that asked in the moment between the receiver storing segment n+1 and
 * n (it uploads `upload_concurrency` segments at once). It logs the gap at each ask instead.
 * A restore that asks in that moment waits for the segment (arrivesSoon).
 *
 * Cheap by design, because a standby at the end of the archive misses every few seconds and
 * recovery probes for history files that may not exist: a history miss reads nothing more; a
 * segment miss lists `wal/` only from the requested name on, a few keys at a time (at the end
 * of the archive one listing of at most two keys), jumping from one timeline to the next, and
 * reads the history files of later timelines.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Archive } from '../archive/archive';
import { ArchiveLease } from '../archive/archive-lease';
import { sleep } from '../util/timers';
import { isWalvaultError, WalvaultError } from '../errors';
import { describeGap, gapAfterMiss, readsSegmentFrom, type WalGap } from '../wal/wal-gap';
import { formatLsn, hex8, historyFileName, isSegmentFileName, parseSegmentFileName, segmentFileName } from '../wal/lsn';
import { parseTimelineHistory, type TimelineHistoryEntry } from '../wal/timeline-history';

const WAL = 'wal/';
/** WAL stored this recently after a miss may be a receiver's upload that overtook the missing one. */
const IN_FLIGHT_RECENT_MS = 120_000;
/** How long a miss waits for such a segment before it is called a gap. */
const IN_FLIGHT_WAIT_MS = 60_000;
const IN_FLIGHT_POLL_MS = 500;
/** Later timelines looked at, at most (an archive has a handful; this only bounds a damaged one). */
const MAX_TIMELINES = 1000;

/**
 * The exit status for a miss of `name`: 1 (the end, or a gap accepted or on a standby, each
 * with a line on stderr), or a WAL_GAP error.
 */
export async function missingWal(archive: Archive, name: string, opts: { dest: string; acceptGap: boolean; inFlightWaitMs?: number }): Promise<number | 'arrived'> {
  // History files are probed for timelines that may not exist: a miss there is never a gap.
  if (!isSegmentFileName(name)) return 1;
  const gap = await findGap(archive, name);
  if (!gap) return 1;
  const what = describeGap(gap, archive.storage.description);
  if (inStandbyMode(opts.dest)) {
    process.stderr.write(`walvault: WAL gap: ${what}; this standby waits here for it: run "walvault check", and "walvault check --repair" to stream it again from the server while it still has it\n`);
    return 1;
  }
  if (await arrivesSoon(archive, name, gap, opts.inFlightWaitMs ?? IN_FLIGHT_WAIT_MS)) return 'arrived';
  if (opts.acceptGap) {
    process.stderr.write(`walvault: WAL gap accepted (--accept-gap): ${what}; recovery ends at ${formatLsn(gap.from)}\n`);
    return 1;
  }
  throw new WalvaultError(
    'WAL_GAP',
    `WAL gap: ${what}; recovery stops here rather than end early without it. Run "walvault check" to see what is missing and "walvault check --repair" to stream it again from the server while it still has it, then start the server again`, { fix: `or, to end recovery at ${formatLsn(gap.from)} and lose what follows, add --accept-gap to wal-fetch in restore_command (walvault restore --accept-gap writes it)` },
  );
}

/**
 * A running receiver uploads `upload_concurrency` segments at once, so segment n+1 can be
 * stored a moment before n: a restore that reaches the archive's live end in that moment
 * sees a gap that closes by itself. When a receiver holds the archive's lease and the WAL
 * after the miss was stored within IN_FLIGHT_RECENT_MS, the missing segment is waited for,
 * up to `waitMs`; true when it arrived. An old gap, or one in an archive nobody writes to,
 * is reported at once.
 */
async function arrivesSoon(archive: Archive, name: string, gap: WalGap, waitMs: number): Promise<boolean> {
  if (waitMs <= 0) return false;
  const next = await archive.storage.head(WAL + gap.next);
  if (!next?.modified || Date.now() - next.modified.getTime() > IN_FLIGHT_RECENT_MS) return false;
  if ((await new ArchiveLease(archive.storage, '', '').liveHolder()) === null) return false;
  const until = Date.now() + waitMs;
  while (Date.now() < until) {
    if (await archive.exists(WAL + name)) return true;
    await sleep(IN_FLIGHT_POLL_MS);
  }
  return archive.exists(WAL + name);
}

/** The gap the miss of segment `name` is, reading only the few keys and history files that decide it. */
export async function findGap(archive: Archive, name: string): Promise<WalGap | null> {
  const storage = archive.storage;
  const after = async (startAfter: string, limit: number) =>
    (await storage.list(WAL, { startAfter, limit })).map((o) => o.key.slice(WAL.length));
  // T's own next objects sort right after the name: its .partial (not a later segment), then T/n+1.
  const next = await after(WAL + name, 2);
  // Nothing after it but its own partial (a standby at the end of the archive): the end, one listing.
  if (next.every((k) => k === `${name}.partial`)) return null;

  const cluster = await archive.readCluster();
  if (!cluster) return null;
  const segSize = cluster.walSegmentSize;
  const { tli: t, segNo: n } = parseSegmentFileName(name, segSize);
  const names: string[] = [];
  const histories = new Map<number, TimelineHistoryEntry[] | null>();
  const decide = () => gapAfterMiss(name, segSize, { names, histories });
  const onTimeline = (tli: number) => (key: string) => key.startsWith(hex8(tli));
  names.push(...next.filter(onTimeline(t)));
  const own = decide();
  if (own) return own;
  // Nothing after the name but T's own objects: no later timeline to look at.
  if (next.length < 2 && next.every(onTimeline(t))) return null;

  // Later timelines, one at a time: `TTTTTTTT~` sorts after every name of timeline T and
  // before any of the next, so each step lists one key, the first of the next timeline present.
  let cursor = WAL + hex8(t) + '~';
  for (let i = 0; i < MAX_TIMELINES; i++) {
    const [first] = await after(cursor, 1);
    if (first === undefined) break;
    if (!/^[0-9A-F]{8}/.test(first)) {
      cursor = WAL + first; // not a WAL name: step over it
      continue;
    }
    const u = parseInt(first.slice(0, 8), 16);
    cursor = WAL + hex8(u) + '~';
    // A timeline's history file sorts before its segments ('.' < '0'): when it exists, it comes first.
    const history = first === historyFileName(u) ? await readHistory(archive, WAL + first) : null;
    histories.set(u, history);
    if (history !== null && !readsSegmentFrom(u, history, t, n, segSize)) continue;
    names.push(...(await after(WAL + segmentFileName(u, n, segSize), 2)).filter(onTimeline(u)));
    const gap = decide();
    if (gap) return gap;
  }
  return decide();
}

/** A history file's entries, or null when it is damaged (counted as missing: see wal-gap.ts). */
async function readHistory(archive: Archive, key: string): Promise<TimelineHistoryEntry[] | null> {
  try {
    const body = await archive.get(key);
    return body === null ? null : parseTimelineHistory(body.toString('utf8'), key);
  } catch (err) {
    if (isWalvaultError(err) && ['ARCHIVE_CORRUPT', 'ARCHIVE_AUTH_FAILED', 'PG_PROTOCOL'].includes(err.code)) return null;
    throw err;
  }
}

/**
 * Whether the server running this restore_command is a standby: PostgreSQL runs it in its
 * data directory with %p under pg_wal, and a standby's data directory holds standby.signal.
 */
function inStandbyMode(dest: string): boolean {
  const walDir = path.dirname(path.resolve(dest));
  return path.basename(walDir) === 'pg_wal' && fs.existsSync(path.join(path.dirname(walDir), 'standby.signal'));
}

