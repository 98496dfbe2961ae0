/**
 * `walvault run`: one receiver per site until SIGINT/SIGTERM, then a clean stop (stream
 * ended, spool fsynced, the open segment archived as a partial) and exit 0.
 */
import { configFromOptions, loadConfigFile, type OneSiteOptions } from '../config/config';
import type { Config } from '../config/config-types';
import { BackupScheduler } from '../daemon/backup-scheduler';
import { CheckScheduler } from '../check/check-scheduler';
import { DrillScheduler } from '../check/drill-scheduler';
import { SiteReceiver } from '../daemon/receiver';
import { ThreadedReceiver, type SiteRunner } from '../daemon/receiver-thread';
import { errorMessage, WalvaultError } from '../errors';
import { createLogger, routeConsoleTo } from '../observe/logger';
import { setSdkLogSink } from '../storage/sdk-log';
import { binDirResolver, osUserFor } from './drill';
import { restoreCommand } from './restore';

export interface RunOptions extends Omit<OneSiteOptions, 'encryption_public_key_file' | 'backup_interval_hours' | 'archive_file_mode' | 'first_backup_fast_checkpoint'> {
  config?: string;
  site?: string;
  /** commander's name for --encryption-public-key */
  encryptionPublicKey?: string;
  /** commander's name for --backup-interval (hours, as typed) */
  backupInterval?: string;
  /** commander's name for --archive-file-mode */
  archiveFileMode?: string;
  /** commander's name for --fast-first-backup */
  fastFirstBackup?: boolean;
}

function hours(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new WalvaultError('CONFIG_INVALID', `--backup-interval "${text}" is not a number of hours`, { fix: `give hours between scheduled base backups, or 0 to turn the schedule off` });
  }
  return n;
}

function loadRunConfig(o: RunOptions): Config {
  const { config: _c, site: _s, encryptionPublicKey, backupInterval, archiveFileMode, fastFirstBackup, ...one } = o;
  const oneSite = [...Object.values(one), encryptionPublicKey, backupInterval, archiveFileMode, fastFirstBackup].some((v) => v !== undefined);
  if (o.config && oneSite) {
    throw new WalvaultError('CONFIG_INVALID', 'give either --config or the one-site options (--pg, --archive, --state, --slot, --mode), not both');
  }
  if (o.config) return loadConfigFile(o.config);
  if (!oneSite) {
    throw new WalvaultError('CONFIG_INVALID', 'nothing to run', { fix: 'pass --config FILE, or --pg CONNINFO --archive URL --state DIR' });
  }
  return configFromOptions({
    ...one,
    encryption_public_key_file: encryptionPublicKey,
    backup_interval_hours: hours(backupInterval),
    archive_file_mode: archiveFileMode,
    first_backup_fast_checkpoint: fastFirstBackup,
  });
}

export async function runCommand(o: RunOptions): Promise<void> {
  const config = loadRunConfig(o);
  const sites = o.site ? config.sites.filter((s) => s.name === o.site) : config.sites;
  if (sites.length === 0) {
    throw new WalvaultError('CONFIG_INVALID', `${config.source}: no site named "${o.site}"`, { fix: `sites: ${config.sites.map((s) => s.name).join(', ')}` });
  }
  const log = createLogger({ level: config.logLevel });
  // Every line on the daemon's stderr is the logger's, whatever a library wants to print.
  routeConsoleTo(log);
  setSdkLogSink(log.child({ component: 'storage' }));
  // One site streams on the main thread (the least memory); with more, each site's receiver
  // gets its own thread, so that no site's work can hold up another's status updates.
  const receivers: SiteRunner[] = sites.map((site) =>
    sites.length > 1 ? new ThreadedReceiver(site, config.logLevel) : new SiteReceiver(site, log.child({ site: site.name })),
  );
  // Each site's duties beside its receiver: backups, archive checks, drills. Their numbers go
  // into the receiver's metrics file and, with [http], /metrics.
  const duties = sites.map((site, i) => {
    const slog = log.child({ site: site.name });
    const backups = new BackupScheduler(site, slog, () => receivers[i].status().state === 'streaming', async () => {
      const { spreadBackups, spreadFailureLine } = await import('../copy/spread-backups');
      const failures = await spreadBackups(site, slog);
      if (failures.length === 0) return null;
      const { what, fix } = spreadFailureLine(site, failures);
      return `${what}; ${fix}`;
    });
    const checks = new CheckScheduler(site, slog.child({ duty: 'check' }));
    const drills = new DrillScheduler(
      site,
      slog.child({ duty: 'drill' }),
      restoreCommand(o.config ? { config: o.config, site: site.name } : { archive: site.archive }, o.config ? site.name : undefined),
      binDirResolver(site.drillPgBin),
      osUserFor,
    );
    const list = [backups, checks, drills];
    receivers[i].extraMetrics = () => list.flatMap((d) => d.metrics());
    return list;
  }).flat();
  const observed = sites.map((site, i) => ({
    name: site.name,
    metrics: () => [...receivers[i].metrics(), ...receivers[i].extraMetrics()],
    health: () => receivers[i].health(),
  }));
  const http = config.httpListen ? await (await import('../observe/http-server')).startHttpListener(config.httpListen, observed, log) : null;
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal: sig }, 'second signal: exiting without finishing the clean stop');
      process.exit(130);
    }
    log.info({ signal: sig }, 'stopping: ending the stream, archiving what was received');
    for (const r of receivers) r.stop();
    for (const d of duties) d.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const dutiesDone = Promise.allSettled(duties.map((d) => d.run()));
  // A site that ends on an error says so when it happens: the other sites go on streaming,
  // and the daemon's exit (with the first such error) may be days away.
  const results = await Promise.allSettled(
    receivers.map((r, i) =>
      r.run().catch((err: unknown) => {
        if (sites.length > 1) log.fatal({ site: sites[i].name, err: errorMessage(err) }, `site ${sites[i].name} stopped: ${errorMessage(err)}`);
        throw err;
      }),
    ),
  );
  for (const d of duties) d.stop();
  await dutiesDone;
  await http?.close();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    for (const r of receivers) r.stop();
    throw failed.reason;
  }
  log.info('stopped');
}
