/**
 * `walvault backup push|list|show`: take a base backup of a site, and read the archive's
 * catalog of complete backups.
 */
import { openSiteArchive, openSiteReader, type ArchiveSettings } from '../archive/site-archive';
import { listBackups, readCompleted, type BackupMetadata } from '../backup/catalog';
import { describePlan, executeDeletion, planDeletion, type DeleteRequest } from '../backup/retention';
import { configFromOptions, loadConfigFile, selectSite } from '../config/config';
import type { SiteConfig } from '../config/config-types';
import { WalvaultError } from '../errors';
import { createLogger } from '../observe/logger';
import { formatBytes, formatDuration } from '../observe/progress';
import { archiveForWriting, archiveFromOptions } from './archive-option';
import type { SiteOptions } from './site-options';

export interface PushOptions extends SiteOptions {
  compression?: string;
  encryptionPublicKey?: string;
  archiveFileMode?: string;
  fast?: boolean;
  maxRate?: string;
  label?: string;
  walWait?: string;
  incremental?: boolean;
  parent?: string;
  /** False with --no-wait: another backup running fails the push at once. */
  wait?: boolean;
}

function positiveInt(text: string | undefined, what: string, fix: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[0-9]+$/.test(text)) throw new WalvaultError('CONFIG_INVALID', `${what} "${text}" is not a whole number`, { fix: `${fix}` });
  return Number(text);
}

function pushSite(o: PushOptions): { site: SiteConfig; logLevel: string } {
  const oneSite = [o.pg, o.archive, o.state, o.slot, o.compression, o.encryptionPublicKey, o.archiveFileMode].some((v) => v !== undefined);
  if (o.config && oneSite) {
    throw new WalvaultError('CONFIG_INVALID', 'give either --config or the one-site options (--pg, --archive, --state), not both');
  }
  if (o.config) {
    const cfg = loadConfigFile(o.config);
    return { site: selectSite(cfg, o.site), logLevel: cfg.logLevel };
  }
  if (!oneSite) throw new WalvaultError('CONFIG_INVALID', 'no site given', { fix: 'pass --config FILE [--site NAME], or --pg CONNINFO --archive URL --state DIR' });
  const cfg = configFromOptions({
    pg: o.pg,
    archive: o.archive,
    state: o.state,
    slot: o.slot,
    compression: o.compression,
    encryption_public_key_file: o.encryptionPublicKey,
    archive_file_mode: o.archiveFileMode,
  });
  return { site: cfg.sites[0], logLevel: cfg.logLevel };
}

export async function backupPushCommand(o: PushOptions): Promise<void> {
  const { site, logLevel } = pushSite(o);
  const maxRateKiB = positiveInt(o.maxRate, '--max-rate', 'give kB/s from 32 to 1048576');
  const walWaitSeconds = positiveInt(o.walWait, '--wal-wait', 'give seconds') ?? 3600;
  const log = createLogger({ level: logLevel }).child({ site: site.name });
  if (o.parent !== undefined && !o.incremental) throw new WalvaultError('CONFIG_INVALID', '--parent names the parent of an incremental backup', { fix: 'add --incremental' });
  const { takeBackup } = await import('../backup/take-backup');
  const meta = await takeBackup({
    site,
    log,
    fastCheckpoint: o.fast === true,
    maxRateKiB,
    label: o.label,
    walWaitSeconds,
    waitForRunning: o.wait !== false,
    ...(o.incremental ? { incremental: { parent: o.parent } } : {}),
  });
  process.stdout.write(`${meta.name}\n`);
  // A site with several archives: the backup went to the first, the others get a verified copy.
  const { spreadBackups, spreadFailureLine } = await import('../copy/spread-backups');
  const failures = await spreadBackups(site, log);
  if (failures.length > 0) {
    const { what, fix } = spreadFailureLine(site, failures);
    throw new WalvaultError('ARCHIVE_INCOMPLETE', `backup ${meta.name}: ${what}`, { fix });
  }
}

interface CatalogOptions {
  config?: string;
  site?: string;
  archive?: string;
  json?: boolean;
}

async function withCatalog<T>(o: CatalogOptions, fn: (archive: ReturnType<typeof openSiteArchive>) => Promise<T>): Promise<T> {
  const settings: ArchiveSettings = archiveFromOptions(o);
  const archive = openSiteReader(settings, (line) => createLogger({ level: 'warn' }).warn(line));
  try {
    return await fn(archive);
  } finally {
    await archive.close();
  }
}

function durationSeconds(m: BackupMetadata): number {
  return (Date.parse(m.stoppedAt) - Date.parse(m.startedAt)) / 1000;
}

/** The fields `backup list --json` promises, one object per backup, oldest first. */
function listEntry(m: BackupMetadata): Record<string, unknown> {
  return {
    name: m.name,
    finishedAt: m.stoppedAt,
    startLsn: m.startLsn,
    stopLsn: m.stopLsn,
    timeline: m.stopTimeline,
    rawBytes: m.rawBytes,
    storedBytes: m.storedBytes,
    durationSeconds: durationSeconds(m),
    kind: m.kind ?? 'full',
    parent: m.parent ?? null,
  };
}

export async function backupListCommand(o: CatalogOptions): Promise<void> {
  const backups = await withCatalog(o, (a) => listBackups(a));
  if (o.json) {
    process.stdout.write(JSON.stringify(backups.map(listEntry), null, 2) + '\n');
    return;
  }
  if (backups.length === 0) {
    process.stdout.write('no complete backups\n');
    return;
  }
  const rows = [['name', 'type', 'parent', 'finished at', 'start LSN', 'stop LSN', 'TLI', 'size', 'stored', 'took']];
  for (const m of backups) {
    rows.push([
      m.name,
      m.kind ?? 'full',
      m.parent ?? '-',
      m.stoppedAt,
      m.startLsn,
      m.stopLsn,
      String(m.stopTimeline),
      formatBytes(m.rawBytes),
      formatBytes(m.storedBytes),
      formatDuration(durationSeconds(m)),
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n');
}

export async function backupShowCommand(name: string, o: CatalogOptions): Promise<void> {
  const meta = await withCatalog(o, (a) => readCompleted(a, name));
  process.stdout.write(JSON.stringify(meta, null, 2) + '\n');
}

export interface DeleteOptions extends CatalogOptions {
  before?: string;
  retain?: string;
  everything?: boolean;
  withDependents?: boolean;
  confirm?: boolean;
}

function deleteRequest(name: string | undefined, o: DeleteOptions): DeleteRequest {
  const given = [name !== undefined, o.before !== undefined, o.retain !== undefined, o.everything === true].filter(Boolean).length;
  if (given !== 1) {
    throw new WalvaultError('CONFIG_INVALID', 'say what to delete with exactly one of: NAME, --before NAME, --retain N, --everything');
  }
  if (o.withDependents && name === undefined) throw new WalvaultError('CONFIG_INVALID', '--with-dependents goes with one backup NAME');
  if (name !== undefined) return { kind: 'name', name, withDependents: o.withDependents === true };
  if (o.before !== undefined) return { kind: 'before', name: o.before };
  if (o.retain !== undefined) {
    const n = positiveInt(o.retain, '--retain', 'give how many backups to keep, at least 1');
    return { kind: 'policy', retain: n!, recoveryWindowDays: 0 };
  }
  return { kind: 'everything' };
}

/** Dry run unless --confirm: prints what would go (or went), the same list either way. */
export async function backupDeleteCommand(name: string | undefined, o: DeleteOptions): Promise<void> {
  const request = deleteRequest(name, o);
  const settings: ArchiveSettings = archiveForWriting(o, 'backup delete');
  const archive = openSiteArchive(settings, 'read');
  try {
    const plan = await planDeletion(archive, request);
    const lines = describePlan(plan);
    if (lines.length === 0) {
      process.stdout.write('nothing to delete\n');
      return;
    }
    const verb = o.confirm ? 'deleting' : 'would delete';
    process.stdout.write(lines.map((l) => `${verb} ${l}\n`).join(''));
    if (plan.oldestRetained) process.stdout.write(`keeping backup ${plan.oldestRetained.name} and everything newer, and the WAL from ${plan.oldestRetained.startLsn} on\n`);
    if (!o.confirm) {
      process.stdout.write('dry run: nothing was deleted; run again with --confirm to delete\n');
      return;
    }
    const log = createLogger({ level: 'warn' });
    await executeDeletion(archive, plan, log);
    process.stdout.write('deleted\n');
  } finally {
    await archive.close();
  }
}
