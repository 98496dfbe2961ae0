/**
 * Is a segment the archive lacks the end of the WAL, or a gap in it? Pure logic over names,
 * for `wal-fetch` on a miss (../restore/wal-miss.ts gathers the names and history files).
 *
 * PostgreSQL ends archive recovery at the first file restore_command does not produce, so a
 * hole in the archive silently ends recovery there unless the miss is told apart from the
 * end. For segment n, recovery tries the timelines of its path newest first, skipping one
 * whose first segment is after n and never going back to a timeline older than the one it
 * read last (XLogFileReadAnyTLI: `tli < curFileTLI`), and falls back to the next older one
 * on a miss. So the miss of T/n is a gap when WAL that recovery through T/n would go on to
 * read is archived:
 *  - a segment (finished or `.partial`) of T after n: T itself goes on;
 *  - a segment after n of a later timeline U whose path reads n from T (T began at or
 *    before n's segment and U's path left T after it): recovery along U needs T/n first.
 * Anything else (nothing after n on T, later timelines that left T at or before n, older
 * timelines) is the end, or an old branch recovery does not follow.
 *
 * A later timeline whose history file is missing or unreadable cannot be placed: its WAL
 * after n counts as lying beyond the miss. Ending recovery on a guess could lose all of that
 * timeline's WAL without a word, while stopping names the missing history file (which
 * `walvault check` reports too) and leaves the choice to the operator.
 */
import { formatLsn, historyFileName, isSegmentFileName, parseSegmentFileName, segmentStartOfNumber, type Lsn } from './lsn';
import type { TimelineHistoryEntry } from './timeline-history';
import { ownerOf, timelinePath } from './wal-chain';

export interface GapFacts {
  /**
   * WAL object names (without `wal/`) the archive holds after the missed one. Any subset
   * works that holds, for T and for each later timeline, its first objects after n.
   */
  names: Iterable<string>;
  /** History files of later timelines: their entries, or null when missing or unreadable (absent: missing). */
  histories: ReadonlyMap<number, TimelineHistoryEntry[] | null>;
}

export interface WalGap {
  /** The missed segment. */
  missing: string;
  tli: number;
  /** Where the missing WAL starts: the missed segment's start. */
  from: Lsn;
  /** Where the archive holds WAL again: the start of `next`'s segment. */
  to: Lsn;
  /** The nearest object after the miss that recovery through it would read (a name; may end in `.partial`). */
  next: string;
  /** The timeline of `next`. */
  via: number;
  /** `via`'s history file is missing or unreadable: the gap is assumed, not proven. */
  unplacedTimeline: boolean;
}

/** Whether recovery to timeline `u` (with history `history`) reads segment `segNo` from timeline `t`. */
export function readsSegmentFrom(u: number, history: TimelineHistoryEntry[], t: number, segNo: bigint, segSize: number): boolean {
  return ownerOf(timelinePath(u, history), segNo, segSize) === t;
}

/** The gap the miss of `missing` (a segment name) is, or null when it is the end of what recovery through it can read. */
export function gapAfterMiss(missing: string, segSize: number, facts: GapFacts): WalGap | null {
  const { tli: t, segNo: n } = parseSegmentFileName(missing, segSize);
  let best: { name: string; tli: number; segNo: bigint; placed: boolean } | null = null;
  for (const name of facts.names) {
    const seg = name.endsWith('.partial') ? name.slice(0, -'.partial'.length) : name;
    if (!isSegmentFileName(seg)) continue;
    let parsed;
    try {
      parsed = parseSegmentFileName(seg, segSize);
    } catch {
      continue; // not a name for this segment size: nothing recovery would ask for
    }
    const { tli: u, segNo: m } = parsed;
    if (m <= n || u < t) continue;
    let placed = true;
    if (u > t) {
      const history = facts.histories.get(u) ?? null;
      if (history === null) placed = false;
      else if (!readsSegmentFrom(u, history, t, n, segSize)) continue;
    }
    // The nearest evidence names the gap; a proven one before an assumed one; a finished
    // segment before a partial of the same segment.
    const better =
      best === null ||
      (placed && !best.placed) ||
      (placed === best.placed && (m < best.segNo || (m === best.segNo && best.name.endsWith('.partial') && !name.endsWith('.partial'))));
    if (better) best = { name, tli: u, segNo: m, placed };
  }
  if (best === null) return null;
  return {
    missing,
    tli: t,
    from: segmentStartOfNumber(n, segSize),
    to: segmentStartOfNumber(best.segNo, segSize),
    next: best.name,
    via: best.tli,
    unplacedTimeline: !best.placed,
  };
}

/** The gap in words, for one line: what is missing, and what the archive holds after it. */
export function describeGap(g: WalGap, archive: string): string {
  const after =
    g.via === g.tli
      ? `it holds WAL after it (${g.next})`
      : g.unplacedTimeline
        ? `it holds WAL of timeline ${g.via} after it (${g.next}) whose history file ${historyFileName(g.via)} is missing or damaged, so that timeline may go on from here`
        : `it holds WAL after it on timeline ${g.via}, which goes on from here (${g.next})`;
  return `${g.missing} is missing from ${archive}, but ${after}: WAL ${formatLsn(g.from)} to ${formatLsn(g.to)} on timeline ${g.tli} is a gap`;
}

