import { loadConfigFile, selectSite } from '../config/config';
import { WalvaultError } from '../errors';

/** The archive URL from `--archive`, or from the chosen site of `--config`. */
export function archiveUrlFromOptions(opts: { config?: string; site?: string; archive?: string }): string {
  if (opts.archive && opts.config) {
    throw new WalvaultError('CONFIG_INVALID', 'give either --archive or --config, not both');
  }
  if (opts.archive) return opts.archive;
  if (opts.config) return selectSite(loadConfigFile(opts.config), opts.site).archive;
  throw new WalvaultError('CONFIG_INVALID', 'no archive given; pass --archive URL or --config FILE');
}
