/**
 * Start-up reconciliation of the ledger with the spool and the archive, and the choice of
 * where streaming resumes. Runs before any new WAL is accepted, so after a crash at any
 * instant the site continues with no gap (nothing past the resume point is assumed held
 * unless it is complete in the spool or in the archive) and no duplicate with different
 * bytes (a segment is re-streamed from its start into its .partial file).
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { Archive } from '../archive/archive';
import { encodePlainHeader, PLAIN_HEADER_LENGTH } from '../archive/envelope';
import { errorMessage } from '../errors';
import type { Ledger } from '../ledger/ledger';
import type { SegmentRow } from '../ledger/rows';
import { isSegmentFileName, parseSegmentFileName, segmentStartOfNumber, type Lsn } from '../wal/lsn';
import { fsyncDir } from '../wal/fsync-dir';
import { verifySegmentPages, type PageCheckContext } from '../wal/page-header';
import { ArchivedPosition } from './archived-position';
import type { SegmentRef } from './uploader';

export interface ResumePoint {
  lsn: Lsn;
  tli: number;
}

export interface ReconcileResult {
  resume: ResumePoint | null;
  /**
   * The gap-free archived end, from the ledger's stored position and the segments it records
   * as archived (a crash can fall between recording a segment and moving the position).
   */
  archivedThrough: Lsn;
  toUpload: Array<{ seg: SegmentRef; sha256: string }>;
}

export interface ReconcileOptions {
  site: string;
  ledger: Ledger;
  /** The site's archives: a spooled segment is removed only once every one holds it. */
  archives: readonly Archive[];
  spoolDir: string;
  segSize: number;
  checkContext(tli: number, name: string): PageCheckContext;
  log: Logger;
}

function ref(row: SegmentRow): SegmentRef {
  return { tli: row.timeline, segNo: row.segNo, name: row.name, startLsn: row.startLsn };
}

export async function reconcile(o: ReconcileOptions): Promise<ReconcileResult> {
  const { ledger, site, segSize } = o;
  const names = await fsp.readdir(o.spoolDir);
  // The earliest segment that must be received again; streaming resumes there, whatever
  // later segments are held, or the archive would have a hole.
  let gapStart: ResumePoint | null = null;
  const receiveAgain = (p: ResumePoint) => {
    if (!gapStart || p.lsn < gapStart.lsn) gapStart = p;
  };

  // Completed in the spool, but the crash came before the ledger heard of it.
  for (const name of names.filter(isSegmentFileName)) {
    const row = findRow(ledger, site, name, segSize);
    if (row && row.state !== 'receiving') continue;
    const file = path.join(o.spoolDir, name);
    const { tli, segNo } = parseSegmentFileName(name, segSize);
    const startLsn = segmentStartOfNumber(segNo, segSize);
    let digest: Buffer;
    try {
      digest = sealedSegmentDigest(await fsp.readFile(file), name, segSize, o.checkContext);
    } catch (err) {
      o.log.warn({ file, reason: errorMessage(err) }, 'spool file is not a valid complete segment; it will be received again');
      // The row first: should it fail (a full disk), the file is still there for the next try.
      ledger.upsertReceiving(site, { timeline: tli, segNo, name, startLsn, size: segSize });
      // A file with another link may be an archived object now (see Archive.putSealedFile):
      // drop our name for it rather than reuse it for receiving.
      if ((await fsp.stat(file)).nlink > 1) await fsp.unlink(file);
      else await fsp.rename(file, file + '.partial');
      receiveAgain({ lsn: startLsn, tli });
      continue;
    }
    ledger.upsertReceiving(site, { timeline: tli, segNo, name, startLsn, size: segSize });
    ledger.markComplete(site, tli, segNo, digest.toString('hex'));
  }

  const toUpload: ReconcileResult['toUpload'] = [];
  for (const row of ledger.allSegments(site)) {
    const file = path.join(o.spoolDir, row.name);
    if (row.state === 'archived') {
      await fsp.rm(file, { force: true });
      await fsp.rm(file + '.partial', { force: true });
    } else if (row.state === 'complete') {
      if (await exists(file)) {
        toUpload.push({ seg: ref(row), sha256: row.sha256! });
      } else if (await heldSomewhere(o, row.name)) {
        ledger.markArchived(site, row.timeline, row.segNo, Archive.walKey(row.name), row.sha256!);
      } else {
        o.log.error({ segment: row.name }, 'a completed segment is missing from both the spool and the archive; receiving it again');
        receiveAgain({ lsn: row.startLsn, tli: row.timeline });
        ledger.upsertReceiving(site, { timeline: row.timeline, segNo: row.segNo, name: row.name, startLsn: row.startLsn, size: segSize });
      }
    }
  }

  // A crash between archiving a segment whole and deleting its superseded partial leaves the
  // partial. Every partial is noted in the ledger before its upload starts, so the ledger
  // knows each one that may be in the archive, landed or not: those of segments archived
  // whole are removed (a delete of a missing object is a no-op; the whole segment wins over
  // a partial everywhere, so nothing is lost). A segment archived as its timeline's final
  // partial keeps it: that is its archived object. Any other is the freshest copy of WAL
  // still being received, and stays.
  for (const p of ledger.partials(site)) {
    const row = ledger.getSegment(site, p.timeline, p.segNo);
    if (row?.state !== 'archived') continue;
    if (row.objectKey === Archive.walKey(row.name)) for (const a of o.archives) await a.delete(Archive.walKey(p.name) + '.partial');
    ledger.forgetPartial(site, p.timeline, p.segNo);
  }

  let resume: ResumePoint | null = null;
  const consider = (p: ResumePoint) => {
    if (!resume || p.lsn > resume.lsn || (p.lsn === resume.lsn && p.tli > resume.tli)) resume = p;
  };
  for (const row of ledger.allSegments(site)) {
    const fullyHeld =
      row.state === 'complete' || (row.state === 'archived' && !(row.objectKey ?? '').endsWith('.partial'));
    // A partial (an ended timeline's last segment, or one being received) resumes at its start.
    consider({ lsn: fullyHeld ? row.startLsn + BigInt(segSize) : row.startLsn, tli: row.timeline });
  }
  if (gapStart) resume = gapStart;

  const position = new ArchivedPosition(ledger.getSite(site)?.archivedLsn ?? 0n);
  for (const row of ledger.segmentsInState(site, 'archived')) {
    const size = (row.objectKey ?? '').endsWith('.partial') ? 0 : segSize;
    if (size > 0) position.add(row.startLsn, row.startLsn + BigInt(size));
  }
  return { resume, toUpload, archivedThrough: position.lsn };
}

/**
 * A complete spool file proves itself: its header (the archive envelope it was sealed with)
 * carries the SHA-256 of the WAL after it, and the WAL's page headers name this cluster and
 * this segment. Returns that SHA-256, or throws saying what does not hold.
 */
function sealedSegmentDigest(sealed: Buffer, name: string, segSize: number, checkContext: ReconcileOptions['checkContext']): Buffer {
  const { tli, segNo } = parseSegmentFileName(name, segSize);
  const data = sealed.subarray(PLAIN_HEADER_LENGTH);
  const digest = createHash('sha256').update(data).digest();
  if (sealed.length !== PLAIN_HEADER_LENGTH + segSize) throw new Error(`size ${sealed.length}, expected ${PLAIN_HEADER_LENGTH + segSize}`);
  if (!sealed.subarray(0, PLAIN_HEADER_LENGTH).equals(encodePlainHeader(segSize, digest))) throw new Error('its header does not match its WAL');
  verifySegmentPages(data, segSize, segmentStartOfNumber(segNo, segSize), checkContext(tli, name));
  return digest;
}

/**
 * Start-up on a full state disk: the ledger can be neither opened nor written (SQLite needs
 * room for its -shm and -wal files), but the complete spool files are sealed archive objects
 * that prove themselves. Archiving and removing them needs no ledger, and makes the room it
 * needs. The ledger learns of them afterwards: reconciliation finds the object of a complete
 * row whose file is gone; a segment it never recorded as complete is received again, which
 * the server still holds, since nothing past the ledger's complete rows is ever reported to it.
 * Stops at the first upload that fails. Files that do not prove themselves stay for reconcile.
 */
export async function archiveSealedSpool(o: {
  archives: readonly Archive[];
  spoolDir: string;
  segSize: number;
  checkContext: ReconcileOptions['checkContext'];
  log: Logger;
}): Promise<{ archived: number; error: unknown }> {
  const names = (await fsp.readdir(o.spoolDir)).filter(isSegmentFileName).sort();
  let archived = 0;
  let error: unknown = null;
  for (const name of names) {
    const file = path.join(o.spoolDir, name);
    let digest: Buffer;
    try {
      digest = sealedSegmentDigest(await fsp.readFile(file), name, o.segSize, o.checkContext);
    } catch {
      continue;
    }
    try {
      for (const archive of o.archives) await archive.putSealedFile(Archive.walKey(name), file, o.segSize, digest);
    } catch (err) {
      error = err;
      break;
    }
    await fsp.unlink(file);
    archived++;
    o.log.debug({ segment: name }, 'archived a spool file to make room');
  }
  if (archived > 0) await fsyncDir(o.spoolDir);
  return { archived, error };
}

/**
 * A complete segment whose spool file is gone: its file is removed only once every archive
 * holds it, so an archive holding it means it was archived (one that lacks it now lost it
 * since, which walvault copy or check --repair mends; said here).
 */
async function heldSomewhere(o: ReconcileOptions, name: string): Promise<boolean> {
  const key = Archive.walKey(name);
  const holding: boolean[] = [];
  for (const a of o.archives) holding.push(await a.exists(key));
  const missing = o.archives.filter((_, i) => !holding[i]).map((a) => a.storage.description);
  if (missing.length > 0 && missing.length < o.archives.length) {
    o.log.error({ segment: name, missing }, `segment ${name} was archived but is missing from ${missing.join(', ')}; fill it from another archive with walvault copy`);
  }
  return missing.length < o.archives.length;
}

function findRow(ledger: Ledger, site: string, name: string, segSize: number): SegmentRow | null {
  const { tli, segNo } = parseSegmentFileName(name, segSize);
  return ledger.getSegment(site, tli, segNo);
}

async function exists(file: string): Promise<boolean> {
  try {
    await fsp.access(file);
    return true;
  } catch {
    return false;
  }
}
