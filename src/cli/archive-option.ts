import { loadConfigFile, selectSite, writableSite } from '../config/config';
import type { SiteConfig } from '../config/config-types';
import { WalvaultError } from '../errors';
import type { ArchiveSettings } from '../archive/site-archive';

/**
 * The archive (or, for a site with several, the archives) from `--archive URL` (S3 settings then come from the AWS environment), or from
 * the chosen site of `--config` (with that site's [s3] overrides and keys). `--private-key`
 * overrides the site's encryption_private_key_file.
 */
export function archiveFromOptions(opts: { config?: string; site?: string; archive?: string; privateKey?: string }): ArchiveSettings {
  if (opts.archive && opts.config) {
    throw new WalvaultError('CONFIG_INVALID', 'give either --archive or --config, not both');
  }
  let settings: ArchiveSettings;
  if (opts.archive) {
    settings = { archive: opts.archive, s3: {} };
  } else if (opts.config) {
    settings = selectSite(loadConfigFile(opts.config), opts.site);
  } else {
    throw new WalvaultError('CONFIG_INVALID', 'no archive given', { fix: 'pass --archive URL or --config FILE' });
  }
  return opts.privateKey ? withPrivateKey(settings, opts.privateKey) : settings;
}

/** `--private-key FILE` given on the command line: every archive's key (one private key reads a site's archives). */
export function withPrivateKey(settings: ArchiveSettings, file: string): ArchiveSettings {
  const key = { encryptionPrivateKeyFile: file };
  return { ...settings, ...key, ...(settings.archives ? { archives: settings.archives.map((a) => ({ ...a, ...key })) } : {}) };
}

/** archiveFromOptions for a command that writes: a site with several archives is refused (writableSite). */
export function archiveForWriting(opts: { config?: string; site?: string; archive?: string }, command: string): ArchiveSettings {
  const settings = archiveFromOptions(opts);
  return opts.config ? writableSite(settings as SiteConfig, command) : settings;
}
