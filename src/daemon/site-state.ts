/**
 * A site's local state, opened for streaming: the state directory (checked, created 0700),
 * its lock, the ledger (the site registered in it), the archive claimed and its lease taken,
 * the spool, reconciliation of spool, ledger and archive after any stop, and the uploader
 * with what is left to archive. What it opens goes into the holder as soon as it is open, so
 * a start that fails half-way leaves the receiver's shutdown everything to close.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { ArchiveLease } from '../archive/archive-lease';
import { claimArchive } from '../archive/archive-settings';
import { encodePlainHeader, PLAIN_HEADER_LENGTH } from '../archive/envelope';
import type { SiteConfig } from '../config/config-types';
import { errorMessage, isWalvaultError, WalvaultError } from '../errors';
import { Ledger } from '../ledger/ledger';
import { LedgerReader } from '../ledger/ledger-reader';
import type { SiteRow } from '../ledger/rows';
import type { ServerFacts, SystemIdentity } from '../postgres/replication-connection';
import { isDiskFull, stateDiskFullError } from '../util/disk-full';
import type { Lsn } from '../wal/lsn';
import type { PageCheckContext } from '../wal/page-header';
import { SegmentSpool } from '../wal/segment-spool';
import { archiveSealedSpool, reconcile, type ResumePoint } from './resume';
import { LEDGER_FILE, SPOOL_DIR } from './state-dir';
import { StateLock } from './state-lock';
import type { StateWrites } from './state-writes';
import { SiteUploads } from './site-uploads';


/** What an open site holds; each member is set as soon as it is open. */
export interface SiteStateHolder {
  lock: StateLock | null;
  ledger: Ledger | null;
  /** One per archive of the site, once taken (all or none). */
  leases: ArchiveLease[];
  spool: SegmentSpool | null;
  uploader: SiteUploads | null;
  resume: ResumePoint | null;
}

export interface OpenSiteStateOptions {
  site: SiteConfig;
  /** The site's archives, in its order: each is claimed, leased and written. */
  archives: readonly Archive[];
  identity: SystemIdentity;
  facts: ServerFacts;
  writes: StateWrites;
  log: Logger;
  checkContext: (tli: number, name: string) => PageCheckContext;
  /** The lease is held: its heartbeat should start (before the reconciliation, which can take long). */
  leaseHeld: () => void;
  /** The uploader archived more (the receiver reports it in archive mode). */
  archivedMore: () => void;
}

function spoolDirOf(site: SiteConfig): string {
  return path.join(site.state, SPOOL_DIR);
}

function ledgerPathOf(site: SiteConfig): string {
  return path.join(site.state, LEDGER_FILE);
}

/**
 * Whether an earlier start registered the site. A first start registers it only once
 * streaming works, with where streaming began as its archived position; one killed before
 * that commit can leave a ledger file without the site. The next start is then a first start
 * still: opened before a start point is chosen, the site would be registered with no archived
 * position, and uploads (which only extend a known position) would never record one.
 */
export function siteRegistered(site: SiteConfig): boolean {
  const reader = LedgerReader.open(ledgerPathOf(site));
  if (!reader) return false;
  try {
    return reader.hasSite(site.name);
  } finally {
    reader.close();
  }
}

/** Creates or opens the state directory, ledger and spool, and reconciles them. */
export async function openSiteState(h: SiteStateHolder, o: OpenSiteStateOptions): Promise<void> {
  const { site, archives, facts } = o;
  // Another receiver on any of the archives: refuse before anything is created or written.
  const leases = archives.map((a) => new ArchiveLease(a.storage, site.name, site.state));
  for (const lease of leases) await lease.check();
  createStateDirs(site, archives, o.log);
  h.lock = StateLock.acquire(site.state);
  const row = await makingRoom(h, leases, o, () => openLedger(h, o));
  // Every start: a crash on the first run may have come before the marker was written.
  for (const archive of archives) {
    await claimArchive(archive, { systemId: o.identity.systemId, pgVersionNum: facts.versionNum, walSegmentSize: facts.walSegmentSize }, o.log, site.state);
  }
  await takeLeases(h, leases);
  o.leaseHeld();
  const spoolDir = spoolDirOf(site);
  h.spool = new SegmentSpool({
    dir: spoolDir,
    segSize: facts.walSegmentSize,
    checkContext: o.checkContext,
    // A completed spool file is an archive object already (see Archive.putSealedFile).
    headerRoom: PLAIN_HEADER_LENGTH,
    seal: (size, digest) => encodePlainHeader(size, digest),
    waitForRoom: (err, file) => o.writes.waitForRoom(err, `writing spool file ${file}`),
  });
  const ledger = h.ledger!;
  const result = await makingRoom(h, leases, o, () =>
    reconcile({ site: site.name, ledger, archives, spoolDir, segSize: facts.walSegmentSize, checkContext: o.checkContext, log: o.log }),
  );
  if (result.resume) h.resume = result.resume;
  const lowest = ledger.allSegments(site.name).reduce<Lsn | null>((min, r) => (min === null || r.startLsn < min ? r.startLsn : min), null);
  // Never assume more is archived than the ledger proves.
  const initialArchived = result.archivedThrough > 0n ? result.archivedThrough : (lowest ?? h.resume?.lsn ?? 0n);
  if (result.archivedThrough > row.archivedLsn) {
    o.writes.may('recording the archived position', () => ledger.advancePositions(site.name, { archived: result.archivedThrough }));
  }
  h.uploader = new SiteUploads({
    site: site.name,
    archives,
    quorum: site.archivedQuorum,
    ledger,
    writes: o.writes,
    spoolDir,
    segSize: facts.walSegmentSize,
    concurrency: site.uploadConcurrency,
    log: o.log,
    stallMs: site.storageStallSeconds * 1000,
    initialArchived,
    onAdvance: o.archivedMore,
  });
  for (const job of result.toUpload) h.uploader.enqueue(job.seg, job.sha256);
}

/**
 * The state directory and spool hold plaintext WAL (also with encryption on): 0700, as
 * PostgreSQL keeps pg_wal, their files 0600. Directories that exist already are left as
 * they are, with a warning when others can get in; so is a local archive looser than
 * archive_file_mode asks.
 */
function createStateDirs(site: SiteConfig, archives: readonly Archive[], log: Logger): void {
  const spoolDir = spoolDirOf(site);
  for (const dir of [site.state, spoolDir]) {
    let mode: number;
    try {
      mode = fs.statSync(dir).mode & 0o777;
    } catch {
      continue;
    }
    if (mode & 0o077) {
      log.warn(
        { dir, mode: mode.toString(8) },
        `${dir === spoolDir ? 'spool' : 'state'} directory ${dir} has mode 0${mode.toString(8)}: other users can read the WAL in it; chmod 700 ${dir}`,
      );
    }
  }
  fs.mkdirSync(spoolDir, { recursive: true, mode: 0o700 });
  for (const archive of archives) {
    void archive.storage.accessWarnings?.().then(
      (warnings) => warnings.forEach((w) => log.warn(w)),
      () => undefined,
    );
  }
}

/** Takes every archive's lease, once: a start that retries a step does not take them twice. */
async function takeLeases(h: SiteStateHolder, leases: ArchiveLease[]): Promise<void> {
  if (h.leases.length > 0) return;
  const taken: ArchiveLease[] = [];
  try {
    for (const lease of leases) {
      await lease.acquire();
      taken.push(lease);
    }
  } catch (err) {
    // All or none: the shutdown releases what the holder names.
    for (const lease of taken) await lease.release().catch(() => undefined);
    throw err;
  }
  h.leases = taken;
}

/** Opens the ledger and registers the site (again: a failed attempt's connection is closed first). */
function openLedger(h: SiteStateHolder, o: OpenSiteStateOptions): SiteRow {
  h.ledger?.close();
  h.ledger = null;
  const ledger = Ledger.open(ledgerPathOf(o.site));
  try {
    const row = ledger.transaction(() => {
      const registered = ledger.registerSite({
        site: o.site.name,
        systemId: o.identity.systemId,
        timeline: h.resume?.tli || o.identity.timeline,
        walSegmentSize: o.facts.walSegmentSize,
        serverVersionNum: o.facts.versionNum,
      });
      // On the first start the archive is complete up to where streaming begins: record that
      // with the site, so a crash before the first upload cannot leave the position unknown.
      if (registered.archivedLsn === 0n && h.resume) {
        return ledger.advancePositions(o.site.name, { archived: h.resume.lsn });
      }
      return registered;
    });
    h.ledger = ledger;
    return row;
  } catch (err) {
    ledger.close();
    throw err;
  }
}

/**
 * Runs a start-up step that writes the ledger. On a full state disk it first archives the
 * sealed spool files, which needs no ledger and frees their room (see archiveSealedSpool),
 * then tries again; with nothing to archive, or the archive failing too, the start ends with
 * the operator's line.
 */
async function makingRoom<T>(h: SiteStateHolder, leases: ArchiveLease[], o: OpenSiteStateOptions, step: () => T | Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await step();
    } catch (err) {
      if (!isDiskFull(err)) throw err;
      let archived = 0;
      let error: unknown = null;
      try {
        // Writing to the archives: hold their leases first.
        await takeLeases(h, leases);
        ({ archived, error } = await archiveSealedSpool({
          archives: o.archives,
          spoolDir: spoolDirOf(o.site),
          segSize: o.facts.walSegmentSize,
          checkContext: o.checkContext,
          log: o.log,
        }));
      } catch (e) {
        if (isWalvaultError(e, 'ARCHIVE_LOCKED')) throw e;
        error = e;
      }
      if (archived === 0) {
        const full = stateDiskFullError(o.site.state, 'starting', err);
        if (error === null) throw full;
        throw new WalvaultError('STATE_DISK_FULL', `${full.what}; archiving the spool to make room failed too: ${errorMessage(error)}`, { fix: full.fix, cause: err });
      }
      o.log.warn({ archived, stateDir: o.site.state }, `state directory ${o.site.state} is full: archived ${archived} spool files to make room`);
    }
  }
}

/** Fails early, before anything is written, when the state directory cannot be used. */
export function checkStateDirUsable(dir: string): void {
  let probe = path.resolve(dir);
  for (;;) {
    let st: fs.Stats | null = null;
    try {
      st = fs.statSync(probe);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOTDIR: a file stands somewhere on the path; walking up finds and names it.
      if (code !== 'ENOENT' && code !== 'ENOTDIR') {
        throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot use state directory ${dir}: ${(err as Error).message}`, { fix: `choose another --state` });
      }
    }
    if (st) {
      if (!st.isDirectory()) {
        throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot use state directory ${dir}: ${probe} is not a directory`, { fix: `choose another --state` });
      }
      try {
        fs.accessSync(probe, fs.constants.W_OK | fs.constants.X_OK);
      } catch {
        throw new WalvaultError('STATE_DIR_UNWRITABLE', `cannot write state directory ${dir}: ${probe} is not writable by this user`, { fix: `fix its permissions or choose another --state` });
      }
      return;
    }
    const parent = path.dirname(probe);
    if (parent === probe) return;
    probe = parent;
  }
}

/**
 * Closes what openSiteState opened, whatever it got to: the uploader stops, the ledger gets
 * the last positions (best effort: they are only a hint, the spool is the truth) and closes,
 * the lease is released, and `beforeUnlock` runs before the state directory's lock goes.
 */
export async function closeSiteState(h: SiteStateHolder, positions: { received: Lsn; fsynced: Lsn }, site: SiteConfig, log: Logger, beforeUnlock: () => Promise<void>): Promise<void> {
  h.uploader?.stop();
  if (h.ledger) {
    if (positions.received > 0n) {
      try {
        h.ledger.advancePositions(site.name, positions);
      } catch {
        /* best effort */
      }
    }
    h.ledger.close();
  }
  for (const lease of h.leases) await lease.release().catch((err) => log.warn({ err: errorMessage(err) }, 'cannot release the archive lease'));
  h.leases = [];
  try {
    await beforeUnlock();
  } finally {
    h.lock?.release();
  }
}
