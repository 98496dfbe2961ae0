/**
 * `walvault check` and `walvault verify` ([--config FILE [--site NAME] | --archive URL]
 * [--private-key FILE] [--json]): reports on the archive, changing nothing.
 * check: which backups the archive can restore and to where, and what is missing.
 * verify: every stored object read and checked, each bad one named.
 * Exit 0: all good; 1: something is missing or bad; 2: it could not run (a line says why).
 */
import { errorText } from './fail';
import type { Archive } from '../archive/archive';
import { ArchiveSet } from '../archive/archive-set';
import type { VerifyReport } from '../check/verify-archive';
import type { SiteConfig } from '../config/config-types';
import { archiveForWriting, archiveFromOptions } from './archive-option';

export interface ReportOptions {
  config?: string;
  site?: string;
  archive?: string;
  privateKey?: string;
  json?: boolean;
  repair?: boolean;
  backupIfNeeded?: boolean;
}

export const REPORT_FAILED = 2;

async function runReport<R extends { ok: boolean }>(what: string, opts: ReportOptions, produce: (archive: Archive) => Promise<R>, format: (r: R) => string): Promise<number> {
  try {
    const { openSiteReader } = await import('../archive/site-archive');
    // An encrypted archive needs its private key for contents (history files, partials).
    // A site's several archives come as one ArchiveSet; the reports say which object came from where.
    const archive = openSiteReader(archiveFromOptions(opts), (line) => process.stderr.write(`walvault: warning: ${line}\n`));
    try {
      const report = await produce(archive);
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : format(report));
      return report.ok ? 0 : 1;
    } finally {
      await archive.close();
    }
  } catch (err) {
    process.stderr.write(`walvault: ${what} could not run: ${errorText(err)}\n`);
    return REPORT_FAILED;
  }
}

export async function checkCommand(opts: ReportOptions): Promise<number> {
  const { checkArchive, formatCheckReport } = await import('../check/archive-check');
  if (!opts.repair) {
    if (opts.backupIfNeeded) return badOption('--backup-if-needed goes with --repair');
    const site = opts.config ? (archiveFromOptions(opts) as SiteConfig) : undefined;
    if ((site?.archives.length ?? 1) > 1) {
      const { checkSite, formatSiteCheckReport } = await import('../check/site-check');
      return runReport('check', opts, (set) => checkSite(set as ArchiveSet, { site }), formatSiteCheckReport);
    }
    return runReport('check', opts, (archive) => checkArchive(archive, { site }), formatCheckReport);
  }
  if (!opts.config) return badOption('--repair streams WAL from the site\'s server: give --config (and --site) instead of --archive');
  let site: SiteConfig;
  try {
    site = archiveForWriting(opts, 'check --repair') as SiteConfig;
  } catch (err) {
    return badOption(errorText(err));
  }
  return runReport('check', opts, async (archive) => {
    const first = await checkArchive(archive, { site });
    if (first.missingSegments.length === 0) return first;
    const { repairArchive } = await import('../check/repair');
    const { createLogger } = await import('../observe/logger');
    const r = await repairArchive({ site, missing: first.missingSegments, backupIfNeeded: opts.backupIfNeeded === true, log: createLogger({ level: 'warn' }) });
    const say = (line: string) => process.stderr.write(`${line}\n`);
    if (r.rearchived.length > 0) say(`repair: archived again from the server: ${r.rearchived.join(', ')}`);
    for (const u of r.unavailable) say(`repair: ${u.range.first}..${u.range.last} cannot be repaired: ${u.reason}`);
    if (r.backupTaken) say(`repair: took base backup ${r.backupTaken}, so the WAL from it on is a restorable chain`);
    else if (r.unavailable.length > 0) say('repair: add --backup-if-needed to take a new base backup, so a restorable chain exists again');
    return checkArchive(archive, { site });
  }, formatCheckReport);
}

export function badOption(message: string): number {
  process.stderr.write(`walvault: ${message}\n`);
  return REPORT_FAILED;
}

export async function verifyCommand(opts: ReportOptions): Promise<number> {
  const { verifyArchive, formatVerifyReport } = await import('../check/verify-archive');
  const tty = process.stderr.isTTY;
  const verifyOne = (a: Archive) => verifyArchive(a, tty ? (done, total) => process.stderr.write(`\rverify: ${done}/${total} objects${done === total ? '\n' : ''}`) : undefined);
  // Several archives are each verified on their own: a damaged object is one to replace,
  // whichever other archive still holds it whole.
  return runReport(
    'verify',
    opts,
    async (a) => {
      if (!(a instanceof ArchiveSet)) return verifyOne(a);
      const archives: VerifyReport[] = [];
      for (const m of a.members) archives.push(await verifyOne(m));
      return { archives, ok: archives.every((r) => r.ok) };
    },
    (r) => ('archives' in r ? r.archives.map(formatVerifyReport).join('') : formatVerifyReport(r)),
  );
}

