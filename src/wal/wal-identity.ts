/**
 * Does the plaintext of a WAL file belong to its name? The one check applied before anything
 * read from an archive is trusted as WAL: wal-fetch and the prefetcher before a file is
 * renamed where PostgreSQL reads it, verify and check on what they read, repair on what it
 * stores. An object copied or renamed over another name is whole and valid, so its checksums
 * cannot tell; its content can:
 *
 *   segment (NAME, or NAME.partial over the bytes it holds; a partial served zero-padded is
 *   checked as the segment): the first page's long header names the database system (must
 *   be the archive's cluster.json systemId), the segment and block size; every page's
 *   xlp_pageaddr must be the segment's start + the page's offset, and its xlp_tli never
 *   above the timeline in the name nor lower than the page before (the first segment of a
 *   new timeline holds the parent's pages up to the switch point). ./page-header.ts does
 *   the page walk; this adds what the pages say the file is instead.
 *   history file (TTTTTTTT.history): at least one entry, every parent timeline below TTTTTTTT.
 *
 * Other names (backup history files) are not checked.
 */
import { WalvaultError } from '../errors';
import { formatLsn, isHistoryFileName, isSegmentFileName, parseSegmentFileName, segmentFileName, segmentStartOfNumber } from './lsn';
import { WalFileChecker } from './page-header';
import { parseTimelineHistory } from './timeline-history';

/** What the archive says its cluster is (cluster.json). */
export interface WalClusterIdentity {
  /** Decimal uint64. */
  systemId: string;
  walSegmentSize: number;
}

const WAY_ON = "put that name's own object back (walvault verify lists every misplaced object)";

function misplaced(message: string): WalvaultError {
  return new WalvaultError('ARCHIVE_MISPLACED', `${message}`, { fix: `${WAY_ON}` });
}

/**
 * Throws unless `data` is the WAL file `name` of `cluster`: ARCHIVE_MISPLACED when it is
 * another file (another segment, timeline or cluster), naming what it holds instead;
 * WAL_BAD_PAGE or ARCHIVE_CORRUPT when it is not a WAL file of any kind. `label` names the
 * object in messages.
 */
export function checkWalIdentity(name: string, data: Buffer, cluster: WalClusterIdentity, label: string): void {
  const check = walIdentityChecker(name, data.length, cluster, label);
  check.write(data);
  check.end();
}

export interface WalIdentityCheck {
  write(chunk: Buffer): void;
  /** Throws the first problem found, or the verdict on the whole file. */
  end(): void;
}

/**
 * checkWalIdentity as the file's `length` bytes arrive (an object streamed from the
 * archive): its size is checked at once; a problem found in its bytes is held and thrown by
 * end(), which a reader calls after the object's own checks passed, so a damaged object is
 * reported as damaged, not as another file.
 */
export function walIdentityChecker(name: string, length: number, cluster: WalClusterIdentity, label: string): WalIdentityCheck {
  if (isHistoryFileName(name)) {
    const parts: Buffer[] = [];
    return {
      write: (chunk) => void parts.push(Buffer.from(chunk)),
      end: () => checkHistory(name, Buffer.concat(parts), label),
    };
  }
  const segment = name.endsWith('.partial') ? name.slice(0, -'.partial'.length) : name;
  if (!isSegmentFileName(segment)) return { write: () => undefined, end: () => undefined };
  const file = segmentChecker(name, segment, length, cluster, label);
  let problem: { error: unknown } | null = null;
  return {
    write: (chunk) => {
      if (problem !== null) return;
      try {
        file.feed(chunk);
      } catch (error) {
        problem = { error };
      }
    },
    end: () => {
      if (problem !== null) throw problem.error;
      file.finish();
    },
  };
}

function segmentChecker(name: string, segment: string, length: number, cluster: WalClusterIdentity, label: string): WalFileChecker {
  const segSize = cluster.walSegmentSize;
  const { tli, segNo } = parseSegmentFileName(segment, segSize);
  const start = segmentStartOfNumber(segNo, segSize);
  if (length === 0) throw new WalvaultError('WAL_BAD_PAGE', `${label} is empty, not WAL`);
  if (length > segSize) throw new WalvaultError('WAL_BAD_PAGE', `${label} is ${length} bytes, more than a ${segSize}-byte segment`);
  // What its first page says it is, then every page of it (addresses, timelines, sizes).
  return new WalFileChecker(name, length, label, (h) => {
    if (h.systemId.toString() !== cluster.systemId) {
      throw misplaced(`${label} holds WAL of database system ${h.systemId}, but this archive belongs to ${cluster.systemId}: it was copied from another cluster's archive`);
    }
    if (h.segSize !== segSize) throw misplaced(`${label} says its segments are ${h.segSize} bytes, but this archive's are ${segSize}: it is not this cluster's WAL`);
    if (!(h.blockSize >= 1024 && h.blockSize <= 65536 && (h.blockSize & (h.blockSize - 1)) === 0 && segSize % h.blockSize === 0)) {
      throw new WalvaultError('WAL_BAD_PAGE', `${label}: its first page says the WAL block size is ${h.blockSize}, which no PostgreSQL uses (damaged)`);
    }
    if (h.pageAddr !== start) {
      if (h.pageAddr % BigInt(segSize) === 0n) {
        const held = segmentFileName(h.tli, h.pageAddr / BigInt(segSize), segSize);
        throw misplaced(`${label} holds the WAL of ${held} (its first page is at ${formatLsn(h.pageAddr)}, timeline ${h.tli}), not of ${segment}: another segment's object was copied or renamed over this name`);
      }
      throw new WalvaultError('WAL_BAD_PAGE', `${label}: its first page is at ${formatLsn(h.pageAddr)}, not at the start of a segment (${formatLsn(start)} expected): damaged`);
    }
    if (h.tli > tli) {
      throw misplaced(`${label} holds WAL of timeline ${h.tli} (its first page is at ${formatLsn(h.pageAddr)}), newer than timeline ${tli} in the name ${segment}: the segment of a later timeline was copied or renamed over this name`);
    }
  });
}

function checkHistory(name: string, data: Buffer, label: string): void {
  const tli = parseInt(name.slice(0, 8), 16);
  let entries: ReturnType<typeof parseTimelineHistory>;
  try {
    entries = parseTimelineHistory(data.toString('utf8'), label);
  } catch (err) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label} is not a timeline history file (${(err as Error).message})`, { fix: `${WAY_ON}`, cause: err });
  }
  if (entries.length === 0) throw new WalvaultError('ARCHIVE_CORRUPT', `${label} lists no parent timeline, so it is not the history of timeline ${tli}`, { fix: `${WAY_ON}` });
  const last = entries[entries.length - 1];
  if (last.tli >= tli) {
    throw misplaced(`${label} lists timeline ${last.tli} as a parent, so it is the history of a later timeline than ${tli}`);
  }
  for (let i = 1; i < entries.length; i++) {
    if (entries[i].switchpoint < entries[i - 1].switchpoint) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: timeline ${entries[i].tli} begins at ${formatLsn(entries[i - 1].switchpoint)} but ends at ${formatLsn(entries[i].switchpoint)}, before it began: not a history PostgreSQL writes`, { fix: `${WAY_ON}` });
    }
  }
}
