import { loadConfigFile, selectSite } from '../config/config';
import { WalvaultError } from '../errors';
import type { S3Settings } from '../storage/s3';

/**
 * The archive from `--archive URL` (S3 settings then come from the AWS environment), or from
 * the chosen site of `--config` (with that site's [s3] overrides).
 */
export function archiveFromOptions(opts: { config?: string; site?: string; archive?: string }): { url: string; s3: S3Settings } {
  if (opts.archive && opts.config) {
    throw new WalvaultError('CONFIG_INVALID', 'give either --archive or --config, not both');
  }
  if (opts.archive) return { url: opts.archive, s3: {} };
  if (opts.config) {
    const site = selectSite(loadConfigFile(opts.config), opts.site);
    return { url: site.archive, s3: site.s3 };
  }
  throw new WalvaultError('CONFIG_INVALID', 'no archive given; pass --archive URL or --config FILE');
}
