/**
 * A site with several archives gets each base backup in every one of them. BASE_BACKUP streams
 * into the site's first archive (one stream from the server, whatever the number of archives);
 * the complete backup is then copied to each other archive through `walvault copy`'s path:
 * every part read back through its checks and written with that archive's codec and key,
 * verified, nothing written over, the completion marker last. WAL is not copied: the receiver
 * writes it to every archive itself.
 *
 * Reading the first archive back needs its private key when it is encrypted
 * (encryption_private_key_file in its table); without it the copy fails, named per archive.
 */
import type { NoteLog } from '../archive/archive-settings';
import { openSiteArchive } from '../archive/site-archive';
import type { SiteConfig } from '../config/config-types';
import { errorMessage } from '../errors';
import { copyArchive } from './copy-archive';

export interface SpreadFailure {
  /** The archive that lacks a backup, as logs name it. */
  archive: string;
  error: string;
}

/** Copies every complete backup the site's other archives lack from its first; returns what failed. */
export async function spreadBackups(site: SiteConfig, log: NoteLog): Promise<SpreadFailure[]> {
  if (site.archives.length < 2) return [];
  const failures: SpreadFailure[] = [];
  const from = openSiteArchive(site.archives[0], 'read');
  try {
    for (const target of site.archives.slice(1)) {
      const to = openSiteArchive(target, 'write');
      try {
        const report = await copyArchive({ from, to, dryRun: false, concurrency: Math.max(2, site.uploadConcurrency), log, stateDir: site.state, backupsOnly: true });
        for (const f of report.failures) failures.push({ archive: to.storage.description, error: `${f.object}: ${f.error}` });
        if (report.backups.length > 0) log.info({ archive: to.storage.description, backups: report.backups }, `copied backup(s) ${report.backups.join(', ')} to ${to.storage.description}`);
      } catch (err) {
        failures.push({ archive: to.storage.description, error: errorMessage(err) });
      } finally {
        await to.close();
      }
    }
  } finally {
    await from.close();
  }
  return failures;
}

/** The operator's line for failures: which archives lack which backup, and the command that fills them. */
export function spreadFailureLine(site: SiteConfig, failures: SpreadFailure[]): { what: string; fix: string } {
  const first = site.archives[0].archive;
  const archives = [...new Set(failures.map((f) => f.archive))];
  return {
    what: `copying backups from ${first} to ${archives.join(', ')} failed: ${failures.map((f) => (f.error.includes(f.archive) ? f.error : `${f.archive}: ${f.error}`)).join('; ')}`,
    fix: `the backup is complete in ${first}; fill the others with walvault copy --from ${first} --to URL (with the first archive's private key when it is encrypted)`,
  };
}
