/**
 * `walvault status [--config FILE] [--site NAME] [--json]`: every site of the config (or
 * one), see ../check/site-status.ts. Exit 0 when no site has a problem, 1 otherwise, 2
 * when it could not run.
 */
import { isWalvaultError } from '../errors';
import { badOption, REPORT_FAILED } from './check';

export async function statusCommand(opts: { config?: string; site?: string; json?: boolean }): Promise<number> {
  try {
    if (!opts.config) return badOption('status reads the sites of a configuration file: give --config FILE');
    const { loadConfigFile } = await import('../config/config');
    const { siteStatus, formatStatus } = await import('../check/site-status');
    const config = loadConfigFile(opts.config);
    const sites = opts.site ? config.sites.filter((s) => s.name === opts.site) : config.sites;
    if (sites.length === 0) return badOption(`${opts.config} has no site named "${opts.site}"; sites: ${config.sites.map((s) => s.name).join(', ')}`);
    // At once: each site's archive may take its few seconds to be found unreachable.
    const statuses = await Promise.all(sites.map((s) => siteStatus(s, opts.config!)));
    const report = { checkedAt: new Date().toISOString(), sites: statuses, ok: statuses.every((s) => s.problems.length === 0) };
    process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
    return report.ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`walvault: status could not run: ${isWalvaultError(err) ? err.message : err instanceof Error ? err.message : String(err)}\n`);
    return REPORT_FAILED;
  }
}
