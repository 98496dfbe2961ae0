import { loadConfigFile, selectSite } from '../config/config';
import { WalvaultError } from '../errors';
import type { ArchiveSettings } from '../archive/site-archive';

/**
 * The archive from `--archive URL` (S3 settings then come from the AWS environment), or from
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
  return opts.privateKey ? { ...settings, encryptionPrivateKeyFile: opts.privateKey } : settings;
}
