/**
 * `walvault copy --from ARCHIVE --to ARCHIVE`: brings an archive up to date from another
 * (../copy/copy-archive.ts). Each side is an archive location, or with --config the name of a
 * site, whose archive settings (S3 or Azure tables, keys, state directory for the key pin)
 * it then uses. Exit 0: the destination holds everything the source had; 1: some objects
 * were not copied (each named); 2: the copy could not run (a line says why), nothing written.
 */
import * as path from 'node:path';
import type { ArchiveSettings } from '../archive/site-archive';
import type { SiteConfig } from '../config/config-types';
import { WalvaultError } from '../errors';
import { withPrivateKey } from './archive-option';
import { errorText } from './fail';

export interface CopyCommandOptions {
  from: string;
  to: string;
  config?: string;
  privateKey?: string;
  compression?: string;
  encryptionPublicKey?: string;
  concurrency?: string;
  dryRun?: boolean;
  json?: boolean;
}

const COPY_FAILED = 2;
const DEFAULT_CONCURRENCY = 4;
const MAX_CONCURRENCY = 64;

export async function copyCommand(opts: CopyCommandOptions): Promise<number> {
  try {
    const { openSiteArchive, openSiteReader } = await import('../archive/site-archive');
    const { writableSite } = await import('../config/config');
    const { copyArchive, formatCopyReport } = await import('../copy/copy-archive');
    const { defaultCompression } = await import('../config/keys');
    const { createLogger } = await import('../observe/logger');
    const concurrency = parseConcurrency(opts.concurrency);
    const source = await sideOf(opts.from, opts.config);
    const dest = await sideOf(opts.to, opts.config);
    if (source.archive.trim() === dest.archive.trim()) {
      throw new WalvaultError('CONFIG_INVALID', `--from and --to name the same archive (${opts.from}, ${opts.to})`, { fix: 'name two different archives' });
    }
    if ((dest.archives?.length ?? 1) > 1) writableSite(dest as SiteConfig, 'copy --to');
    const log = createLogger({ level: 'info' });
    const from = openSiteReader(opts.privateKey ? withPrivateKey(source, opts.privateKey) : source, (line) => log.warn(line));
    // As `run` would write there: the archive's recorded codec and key win where none is named.
    const compression = (opts.compression as ArchiveSettings['compression']) ?? dest.compression ?? defaultCompression(dest.archive);
    const to = openSiteArchive(
      {
        ...dest,
        compression,
        compressionChosen: opts.compression !== undefined || (dest.compressionChosen ?? false),
        ...(opts.encryptionPublicKey ? { encryptionPublicKeyFile: opts.encryptionPublicKey } : {}),
      },
      'write',
    );
    try {
      const report = await copyArchive({ from, to, dryRun: opts.dryRun === true, concurrency, log, stateDir: dest.state });
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatCopyReport(report));
      return report.ok ? 0 : 1;
    } finally {
      await Promise.all([from.close(), to.close()]);
    }
  } catch (err) {
    process.stderr.write(`walvault: copy could not run: ${errorText(err)}\n`);
    return COPY_FAILED;
  }
}

/**
 * A site of the config file by that name (all its archives, when it has several), else one
 * archive of a site by its location (with that archive's own settings), else an archive
 * location alone.
 */
async function sideOf(value: string, config: string | undefined): Promise<ArchiveSettings> {
  if (config !== undefined) {
    const { loadConfigFile } = await import('../config/config');
    const sites = loadConfigFile(config).sites;
    const site = sites.find((s) => s.name === value);
    if (site) return site;
    const local = path.resolve(path.dirname(path.resolve(config)), value);
    for (const s of sites) {
      const one = s.archives.find((a) => a.archive === value || a.archive === local);
      // A site's only archive keeps the site's state directory, where its key is pinned.
      if (one) return s.archives.length > 1 ? one : s;
    }
  }
  return { archive: value, s3: {} };
}

function parseConcurrency(text: string | undefined): number {
  if (text === undefined) return DEFAULT_CONCURRENCY;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > MAX_CONCURRENCY) {
    throw new WalvaultError('CONFIG_INVALID', `--concurrency "${text}" is not a whole number from 1 to ${MAX_CONCURRENCY}`, { fix: `give e.g. --concurrency ${DEFAULT_CONCURRENCY}` });
  }
  return n;
}
