/**
 * One site's table (or the one-site form's options) to a SiteConfig: every key checked, every
 * default filled in from keys.ts, relative paths resolved against the config file's directory
 * (the working directory on the command line), and the password read from password_file.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { AckMode, SiteConfig } from './config-types';
import { describeConninfo, parseConninfo } from './conninfo';
import { siteArchives } from './archive-target';
import { CONFIG_KEYS, SLOT_MAX, defaultOf, defaultSlot, literalDefault } from './keys';
import { assignment, fail, keyPath, rejectUnknownKeys, stringKey, typeName, type Ctx, type Table } from './messages';

const MODES: readonly AckMode[] = ['archive', 'sync'];

export function buildSite(ctx: Ctx, name: string, raw: Table): SiteConfig {
  const where = (key: string) => keyPath(ctx, name, key);
  rejectUnknownKeys(ctx, raw, ctx.format === 'cli' ? '' : `sites.${name}.`, CONFIG_KEYS.site);

  const str = (key: string, required: boolean, example: string) => stringKey(ctx, raw, where(key), key, { required, example, emptyOk: key === 'pg' });
  /** `lowest` is the smallest allowed value; 0 exclusive means "positive". */
  const num = (key: string, lowest: { value: number; exclusive?: boolean }, integer: boolean, hint: string): number => {
    const v = raw[key];
    if (v === undefined) return defaultOf('site', key, 'number');
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      fail(ctx, where(key), `expected a number, got ${typeName(v)}`, `write it without quotes: ${assignment(ctx, key, String(literalDefault('site', key) ?? lowest.value))}`);
    }
    if (integer && !Number.isInteger(v)) fail(ctx, where(key), `expected a whole number, got ${v}`, hint);
    if (v < 0) fail(ctx, where(key), `must not be negative, got ${v}`, hint);
    if (lowest.exclusive ? v <= lowest.value : v < lowest.value) {
      fail(ctx, where(key), `must be ${lowest.exclusive ? 'greater than' : 'at least'} ${lowest.value}, got ${v}`, hint);
    }
    return v;
  };

  const pgString = str('pg', true, '"host=db1 port=5432 user=walvault"') as string;
  const passwordFile = str('password_file', false, '"/etc/walvault/pg.password"');
  const stateRaw = str('state', true, `"/var/lib/walvault/state/${name}"`) as string;
  const slotRaw = str('slot', false, `"walvault_${name}"`);
  const modeRaw = str('mode', false, '"archive"');
  const appNameRaw = str('application_name', false, '"walvault"');

  const pg = parseConninfo(pgString, `${ctx.source}: ${where('pg')}`);
  if (passwordFile !== undefined) pg.password = readPasswordFile(ctx, where('password_file'), passwordFile);

  const slot = slotRaw ?? defaultSlot(name);
  if (!/^[a-z0-9_]+$/.test(slot) || slot.length > SLOT_MAX) {
    fail(ctx, where('slot'), `${JSON.stringify(slot)} is not a valid replication slot name`, `use at most ${SLOT_MAX} lower-case letters, digits and underscores, e.g. ${assignment(ctx, 'slot', `"${defaultSlot(name)}"`)}`);
  }

  const mode = modeRaw ?? defaultOf('site', 'mode', 'string');
  if (!(MODES as readonly string[]).includes(mode)) {
    fail(ctx, where('mode'), `${JSON.stringify(mode)} is not a mode`, `use "archive" (acknowledge WAL once archived; the default) or "sync" (acknowledge once fsynced locally)`);
  }

  if (appNameRaw !== undefined && pg.application_name !== undefined && appNameRaw !== pg.application_name) {
    fail(ctx, where('application_name'), 'differs from the application_name in pg', 'set it in one place only');
  }
  const applicationName = appNameRaw ?? pg.application_name ?? slot;
  // synchronous_standby_names matches on this, so the connection must carry it.
  pg.application_name = applicationName;

  const archives = siteArchives(ctx, name, raw);
  const quorumHint = `use how many of the site's ${archives.length} archive(s) must hold WAL before the server may recycle it: 1 to ${archives.length}, or remove it for every archive`;
  const archivedQuorum = raw.archived_quorum === undefined ? archives.length : num('archived_quorum', { value: 1 }, true, quorumHint);
  if (archivedQuorum > archives.length) fail(ctx, where('archived_quorum'), `is ${archivedQuorum}, more than the site's ${archives.length} archive(s)`, quorumHint);

  const bool = (key: string): boolean => {
    const v = raw[key] ?? defaultOf('site', key, 'boolean');
    if (typeof v !== 'boolean') fail(ctx, where(key), `expected a boolean, got ${typeName(v)}`, `write ${assignment(ctx, key, 'true')} or false, without quotes`);
    return v as boolean;
  };
  const createSlot = bool('create_slot');
  const backupCompression = (): 'server' | 'client' => {
    const v = raw.backup_compression ?? defaultOf('site', 'backup_compression', 'string');
    if (v !== 'server' && v !== 'client') fail(ctx, where('backup_compression'), `${JSON.stringify(v)} is not a place`, `use "server" (PostgreSQL compresses, 15+) or "client" (walvault compresses)`);
    return v as 'server' | 'client';
  };
  const drillPgBin = str('drill_pg_bin', false, '"/usr/lib/postgresql/16/bin"');
  const drillQuery = str('drill_query', false, '"SELECT count(*) FROM orders"');
  const maxRate = raw.backup_max_rate_kbps === undefined ? undefined : num('backup_max_rate_kbps', { value: 32 }, true, 'use a whole number of kB/s from 32 to 1048576, or remove it for no limit');
  if (maxRate !== undefined && maxRate > 1048576) fail(ctx, where('backup_max_rate_kbps'), `${maxRate} is above the server's limit`, 'use a whole number of kB/s from 32 to 1048576, or remove it for no limit');

  return {
    name,
    pg,
    pgDescription: describeConninfo(pg),
    ...archives[0],
    archives,
    archivedQuorum,
    state: path.resolve(ctx.baseDir, stateRaw),
    slot,
    mode: mode as AckMode,
    applicationName,
    partialIntervalSeconds: num('partial_interval_seconds', { value: 0 }, false, 'use a number of seconds; 0 disables partial uploads'),
    statusIntervalSeconds: num('status_interval_seconds', { value: 0, exclusive: true }, false, 'use a positive number of seconds, well below the server\'s wal_sender_timeout'),
    createSlot,
    uploadConcurrency: num('upload_concurrency', { value: 1 }, true, 'use a whole number of parallel uploads, at least 1'),
    spoolAlertMiB: num('spool_alert_mib', { value: 0 }, false, 'use a number of MiB of unarchived WAL; 0 disables the alert'),
    storageStallSeconds: num('storage_stall_seconds', { value: 0, exclusive: true }, false, 'use a positive number of seconds uploads may go without finishing before storage is reported failing'),
    backupIntervalHours: num('backup_interval_hours', { value: 0 }, false, 'use a number of hours between scheduled base backups; 0 turns the schedule off'),
    fullBackupIntervalDays: num('full_backup_interval_days', { value: 0 }, false, 'use a number of days between full backups; 0 lets only max_incremental_chain ask for one'),
    maxIncrementalChain: num('max_incremental_chain', { value: 0 }, true, 'use how many incremental backups may follow one full backup; 0 makes every scheduled backup a full one'),
    backupFastCheckpoint: bool('backup_fast_checkpoint'),
    firstBackupFastCheckpoint: bool('first_backup_fast_checkpoint'),
    backupCompression: backupCompression(),
    backupCompressionWorkers: num('backup_compression_workers', { value: 0 }, true, 'use a whole number of zstd threads on the server, 0 for none'),
    ...(maxRate !== undefined ? { backupMaxRateKiB: maxRate } : {}),
    retainBackups: num('retain_backups', { value: 0 }, true, 'use how many complete full backups to keep (each with its incrementals); 0 keeps them all'),
    recoveryWindowDays: num('recovery_window_days', { value: 0 }, false, 'use a number of days the archive must be able to recover to; 0 for no window'),
    checkIntervalHours: num('check_interval_hours', { value: 0 }, false, 'use a number of hours between scheduled archive checks; 0 turns them off'),
    drillIntervalHours: num('drill_interval_hours', { value: 0 }, false, 'use a number of hours between scheduled restore drills; 0 turns them off'),
    ...(drillPgBin !== undefined ? { drillPgBin: path.resolve(ctx.baseDir, drillPgBin) } : {}),
    drillOsUser: str('drill_os_user', false, '"postgres"') ?? defaultOf('site', 'drill_os_user', 'string'),
    ...(drillQuery !== undefined ? { drillQuery } : {}),
  };
}

function readPasswordFile(ctx: Ctx, where: string, file: string): string {
  const resolved = path.resolve(ctx.baseDir, file);
  let content: string;
  try {
    content = fs.readFileSync(resolved, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return fail(ctx, where, `cannot read ${resolved} (${code})`, "check the path and that walvault's user may read it");
  }
  const password = content.split(/\r?\n/, 1)[0];
  if (password === '') fail(ctx, where, `${resolved} has an empty first line`, 'put the password alone on the first line');
  return password;
}
