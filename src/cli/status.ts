/**
 * `walvault status (--config FILE [--site NAME] | --archive URL --state DIR [--pg CONNINFO]
 * [--slot NAME]) [--json]`: every site of the config (or one), or the one site of the
 * options, see ./site-status.ts. Exit 0 when no site has a problem, 1 otherwise, 2
 * when it could not run.
 */
import { errorText } from './fail';
import type { SiteConfig } from '../config/config-types';
import type { SiteArgs } from './site-status';
import { badOption, REPORT_FAILED } from './check';
import type { SiteOptions } from './site-options';

export interface StatusOptions extends SiteOptions {
  json?: boolean;
}

/** Shell words, quoted only when they need it, for the fixes status prints. */
function shellWord(w: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(w) ? w : `'${w.replace(/'/g, "'\\''")}'`;
}

export async function statusCommand(opts: StatusOptions): Promise<number> {
  try {
    const oneSite = [opts.pg, opts.archive, opts.state, opts.slot].some((v) => v !== undefined);
    if (opts.config && oneSite) return badOption('give either --config or the one-site options (--archive, --state, and --pg to ask the server too), not both');
    if (!opts.config && !oneSite) return badOption('status needs a site: give --config FILE, or the one-site form --archive URL --state DIR [--pg CONNINFO]');
    const { loadConfigFile, configFromOptions } = await import('../config/config');
    const { siteStatus, formatStatus } = await import('./site-status');
    let sites: SiteConfig[];
    let args: SiteArgs;
    let withServer = true;
    if (opts.config) {
      const config = loadConfigFile(opts.config);
      sites = opts.site ? config.sites.filter((s) => s.name === opts.site) : config.sites;
      if (sites.length === 0) return badOption(`${opts.config} has no site named "${opts.site}"; sites: ${config.sites.map((s) => s.name).join(', ')}`);
      args = { run: `--config ${shellWord(opts.config)}`, archive: `--config ${shellWord(opts.config)}` };
    } else {
      if (!opts.archive || !opts.state) return badOption(`the one-site form of status needs both --archive URL and --state DIR (the ones walvault run was given); missing: ${[!opts.archive && '--archive', !opts.state && '--state'].filter(Boolean).join(', ')}`);
      // Without --pg the server is not asked (the conninfo would be a guess).
      withServer = opts.pg !== undefined;
      sites = configFromOptions({ pg: opts.pg ?? '', archive: opts.archive, state: opts.state, slot: opts.slot }).sites;
      const where = `--archive ${shellWord(opts.archive)} --state ${shellWord(opts.state)}${opts.slot ? ` --slot ${shellWord(opts.slot)}` : ''}`;
      // The conninfo is the operator's to type again: it is not echoed (it may name a password file or host they keep private).
      args = { run: `--pg CONNINFO ${where}`, archive: `--archive ${shellWord(opts.archive)}` };
    }
    // At once: each site's archive may take its few seconds to be found unreachable.
    const statuses = await Promise.all(sites.map((s) => siteStatus(s, args, withServer)));
    const report = { checkedAt: new Date().toISOString(), sites: statuses, ok: statuses.every((s) => s.problems.length === 0) };
    process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
    return report.ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`walvault: status could not run: ${errorText(err)}\n`);
    return REPORT_FAILED;
  }
}
