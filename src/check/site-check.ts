/**
 * `walvault check` of a site with several archives: each archive checked on its own, then the
 * site as a whole (./archive-check.ts on the ArchiveSet: what any archive holds counts, each
 * object read from the first archive holding it), and for every backup the archives it is
 * restorable from. The verdict is the whole's: what a restore of the site can do, which a
 * lagging or damaged archive does not change while another holds what it lacks; each
 * archive's own problems are listed with it.
 */
import type { Archive } from '../archive/archive';
import type { ArchiveSet } from '../archive/archive-set';
import type { SiteConfig } from '../config/config-types';
import { errorMessage } from '../errors';
import { checkArchive, formatCheckReport, type CheckReport } from './archive-check';

export interface ArchiveCheck {
  archive: string;
  /** Null when the archive could not be checked (`error` says why). */
  report: CheckReport | null;
  error: string | null;
}

/** The whole's report, with each archive's beside it and, per backup, where it is restorable from. */
export interface SiteCheckReport extends CheckReport {
  archives: ArchiveCheck[];
  restorableFrom: Record<string, string[]>;
}

export async function checkSite(set: ArchiveSet, opts: { site?: SiteConfig } = {}): Promise<SiteCheckReport> {
  const archives = await Promise.all(set.members.map((m) => checkOne(m)));
  // The server is asked once, for the whole.
  const whole = await checkArchive(set, opts);
  const restorableFrom: Record<string, string[]> = {};
  for (const b of whole.backups) {
    restorableFrom[b.name] = archives.filter((a) => a.report?.backups.some((c) => c.name === b.name && c.restorable)).map((a) => a.archive);
  }
  return { ...whole, archives, restorableFrom };
}

async function checkOne(archive: Archive): Promise<ArchiveCheck> {
  try {
    return { archive: archive.storage.description, report: await checkArchive(archive), error: null };
  } catch (err) {
    return { archive: archive.storage.description, report: null, error: errorMessage(err) };
  }
}

export function formatSiteCheckReport(r: SiteCheckReport): string {
  const parts = r.archives.map((a) => (a.report ? formatCheckReport(a.report) : `archive ${a.archive}: could not be checked: ${a.error}\n`));
  const from = r.backups.map((b) => {
    const list = r.restorableFrom[b.name];
    return `backup ${b.name}: restorable from ${list.length > 0 ? list.join(', ') : 'no single archive'}${b.restorable ? '; from the site as a whole' : '; NOT from the site as a whole'}`;
  });
  parts.push(`the site as a whole (each object from the first archive holding it):\n${formatCheckReport(r)}${from.join('\n')}${from.length > 0 ? '\n' : ''}`);
  return parts.join('\n');
}
