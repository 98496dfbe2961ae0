/**
 * Which archived segments recovery reads, following timeline switches, and how far the
 * archive carries it without a gap. Pure logic over names, for `walvault check` and for the
 * gap rule of `wal-fetch` (./wal-gap.ts).
 *
 * Recovery to a timeline T reads segment n from the newest timeline on T's path (T's
 * history plus T itself) that began at or before n's segment (PostgreSQL's
 * XLogFileReadAnyTLI over expectedTLEs): segments before a switch point come from the
 * parent, the segment holding the switch point and later ones from the child, whose first
 * segment repeats the parent's bytes up to the switch. The parent's copy of that segment is
 * archived only as `.partial` and is never needed.
 */
import { formatLsn, segmentFileName, segmentNumber, segmentStartOfNumber, type Lsn } from './lsn';
import type { TimelineHistoryEntry } from './timeline-history';

/** One timeline on a path: it owns the segments from `fromSegNo` on, until the next one begins. */
export interface PathStep {
  tli: number;
  /** First LSN of this timeline (0 for the first). */
  begin: Lsn;
  /** First LSN no longer on it (null for the path's last timeline). */
  end: Lsn | null;
}

/** The timelines recovery to `tli` passes through, oldest first. */
export function timelinePath(tli: number, history: TimelineHistoryEntry[]): PathStep[] {
  const steps: PathStep[] = [];
  let begin = 0n;
  for (const e of history) {
    steps.push({ tli: e.tli, begin, end: e.switchpoint });
    begin = e.switchpoint;
  }
  steps.push({ tli, begin, end: null });
  return steps;
}

/** The timeline recovery along `path` reads segment `segNo` from. */
export function ownerOf(path: PathStep[], segNo: bigint, segSize: number): number {
  let owner = path[0].tli;
  for (const s of path) if (segmentNumber(s.begin, segSize) <= segNo) owner = s.tli;
  return owner;
}

/** Whether `lsn` on timeline `tli` lies on the path (recovery along it passes through it). */
export function pathContains(path: PathStep[], tli: number, lsn: Lsn): boolean {
  return path.some((s) => s.tli === tli && lsn >= s.begin && (s.end === null || lsn <= s.end));
}

export interface ArchivedWal {
  /** Finished segment names. */
  segments: Set<string>;
  /** `.partial` names without the suffix, with the plaintext bytes each holds (null: not known yet). */
  partials: Map<string, number | null>;
}

export interface ChainScan {
  /** How far recovery along the path gets from `from` without a gap. */
  reachedLsn: Lsn;
  reachedTli: number;
  /** The last finished segment it reads (null: not even the first). */
  lastSegment: string | null;
  /** The partial that extends it past the last finished segment, if any. */
  endPartial: string | null;
  /** The first segment that is missing (null: reached `until` or the newest segment). */
  firstMissing: string | null;
}

/**
 * Walks the path from the segment of `from`, segment by segment, while the archive has the
 * segment recovery wants, up to `lastSegNo`; then a `.partial` of the next wanted segment
 * extends it by the bytes that partial holds.
 */
export function scanChain(path: PathStep[], from: Lsn, lastSegNo: bigint, wal: ArchivedWal, segSize: number): ChainScan {
  let segNo = segmentNumber(from, segSize);
  let reachedLsn = from;
  let reachedTli = ownerOf(path, segNo, segSize);
  let lastSegment: string | null = null;
  for (; segNo <= lastSegNo; segNo++) {
    const tli = ownerOf(path, segNo, segSize);
    const name = segmentFileName(tli, segNo, segSize);
    if (!wal.segments.has(name)) {
      const bytes = wal.partials.get(name);
      const partialEnd = bytes ? segmentStartOfNumber(segNo, segSize) + BigInt(bytes) : null;
      if (partialEnd !== null && partialEnd > reachedLsn) {
        return { reachedLsn: partialEnd, reachedTli: tli, lastSegment, endPartial: `${name}.partial`, firstMissing: segNo < lastSegNo ? name : null };
      }
      return { reachedLsn, reachedTli, lastSegment, endPartial: null, firstMissing: name };
    }
    lastSegment = name;
    reachedLsn = segmentStartOfNumber(segNo + 1n, segSize);
    reachedTli = tli;
  }
  return { reachedLsn, reachedTli, lastSegment, endPartial: null, firstMissing: null };
}

export interface MissingRange {
  tli: number;
  first: string;
  last: string;
  count: number;
}

/** The segments recovery along `path` needs in [fromSegNo, toSegNo] that the archive lacks, as ranges. */
export function missingRanges(path: PathStep[], fromSegNo: bigint, toSegNo: bigint, wal: ArchivedWal, segSize: number): MissingRange[] {
  const out: MissingRange[] = [];
  let cur: { tli: number; first: bigint; last: bigint } | null = null;
  const flush = () => {
    if (!cur) return;
    out.push({ tli: cur.tli, first: segmentFileName(cur.tli, cur.first, segSize), last: segmentFileName(cur.tli, cur.last, segSize), count: Number(cur.last - cur.first + 1n) });
    cur = null;
  };
  for (let segNo = fromSegNo; segNo <= toSegNo; segNo++) {
    const tli = ownerOf(path, segNo, segSize);
    const name = segmentFileName(tli, segNo, segSize);
    if (wal.segments.has(name)) {
      flush();
      continue;
    }
    // The newest segment of the archive may exist only as the receiver's growing partial.
    if (segNo === toSegNo && wal.partials.has(name)) break;
    if (cur && cur.tli === tli && cur.last === segNo - 1n) cur.last = segNo;
    else {
      flush();
      cur = { tli, first: segNo, last: segNo };
    }
  }
  flush();
  return out;
}

export function describeRange(r: MissingRange): string {
  return r.count === 1 ? r.first : `${r.first}..${r.last} (${r.count} segments)`;
}

export { formatLsn };
