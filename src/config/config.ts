/**
 * Configuration: one TOML or JSON file with a section per site, or the one-site form
 * given on the command line. Everything is checked up front so that a typo stops the
 * daemon at start-up with one line naming the key, instead of surfacing hours later.
 *
 * Every error is a WalvaultError('CONFIG_INVALID', '<source>: <key path>: <problem>; <fix>').
 * Secrets never appear in messages: passwords are refused in the pg string, read from
 * `password_file` at load time, and messages describe a wrong value by its type only.
 *
 * Relative paths (state, a plain archive path, password_file) are resolved against the
 * config file's directory, so the file means the same whatever directory the daemon
 * starts in; on the command line they are relative to the working directory.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { WalvaultError } from '../errors';
import { PASSWORD_HELP, PgConnectionConfig, closestName, describeConninfo, parseConninfo } from './conninfo';

export type { PgConnectionConfig } from './conninfo';
import type { S3Settings } from '../storage/s3';
import { CODEC_NAMES, isCodecName, type CodecName } from '../archive/codecs';
import { loadPublicKey } from '../archive/encryption';

export type AckMode = 'archive' | 'sync';

export interface SiteConfig {
  name: string;
  pg: PgConnectionConfig;
  /** host:port user=..., for logs and errors; never the password. */
  pgDescription: string;
  archive: string;
  state: string;
  slot: string;
  mode: AckMode;
  applicationName: string;
  partialIntervalSeconds: number;
  statusIntervalSeconds: number;
  createSlot: boolean;
  uploadConcurrency: number;
  /** Unarchived WAL (MiB) past which the site raises its alert; 0 = never. */
  spoolAlertMiB: number;
  /**
   * Uploads outstanding with none finishing for this long: storage is reported failing (a
   * hung store answers nothing, so no request fails for a while).
   */
  storageStallSeconds: number;
  /** Hours between scheduled base backups; 0 = no schedule (on-demand pushes only). */
  backupIntervalHours: number;
  /**
   * A scheduled backup is a full one when the newest full backup is this many days old (else
   * incremental, where the server allows: PostgreSQL 17+, summarize_wal on); 0 = age alone
   * never asks for a full one.
   */
  fullBackupIntervalDays: number;
  /** Incremental backups on one full backup at most; 0 = scheduled backups are all full. */
  maxIncrementalChain: number;
  /**
   * Where a backup is compressed when the site's codec is zstd: 'server' (PostgreSQL 15+
   * compresses with BASE_BACKUP's COMPRESSION, on the database host, as pgBackRest does) or
   * 'client' (walvault compresses the parts).
   */
  backupCompression: 'server' | 'client';
  /** zstd threads the server may use for a backup it compresses (0: the walsender alone). */
  backupCompressionWorkers: number;
  /** Ask for an immediate checkpoint at backup start (default: spread, gentle on the server). */
  backupFastCheckpoint: boolean;
  /**
   * The same for the site's first backup only (the archive holds none yet): someone setting
   * walvault up is waiting for it, and the spike of one immediate checkpoint is a one-off.
   */
  firstBackupFastCheckpoint: boolean;
  /** The server-side rate limit for backups (kB/s); unset = none. */
  backupMaxRateKiB?: number;
  /** Complete backups to keep (the newest N); 0 = keep all. */
  retainBackups: number;
  /** Keep what recovery to any instant of the last N days needs; 0 = no window. */
  recoveryWindowDays: number;
  /** Overrides for an s3:// archive (the [sites.NAME.s3] table); empty otherwise. */
  s3: S3Settings;
  /** Permission bits of a local archive's objects (directories get the matching x bits). */
  archiveFileMode: number;
  /** Codec for the bodies this site stores. */
  compression: CodecName;
  /** Whether the config or command line named the codec (false: the default, which an archive's recorded codec replaces). */
  compressionChosen: boolean;
  /** X25519 public key (PEM) to encrypt bodies for; none = not encrypted. Checked at load. */
  encryptionPublicKeyFile?: string;
  /** The matching private key, for restore and wal-fetch; the backup host does not need it. */
  encryptionPrivateKeyFile?: string;
  /** Hours between scheduled archive checks (`walvault check`); 0 = none. */
  checkIntervalHours: number;
  /** Hours between scheduled restore drills (`walvault drill`); 0 = none. */
  drillIntervalHours: number;
  /** pg_ctl's directory for drills; unset = /usr/lib/postgresql/MAJOR/bin. */
  drillPgBin?: string;
  /** OS user a drill's server runs as when walvault runs as root. */
  drillOsUser: string;
  /** A query of the operator's a drill runs on the recovered cluster. */
  drillQuery?: string;
}

export interface Config {
  logLevel: string;
  sites: SiteConfig[];
  /** Where the daemon serves /metrics and /health; unset = nowhere. */
  httpListen?: { host: string; port: number };
  /** The config file path, or 'command line'. */
  source: string;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const MODES: readonly AckMode[] = ['archive', 'sync'];
const TOP_KEYS = ['log', 'http', 'sites'];
const LOG_KEYS = ['level'];
const HTTP_KEYS = ['listen'];
const SITE_KEYS = [
  'pg',
  'password_file',
  'archive',
  'state',
  'slot',
  'mode',
  'application_name',
  'partial_interval_seconds',
  'status_interval_seconds',
  'create_slot',
  'upload_concurrency',
  'spool_alert_mib',
  'storage_stall_seconds',
  'compression',
  'archive_file_mode',
  'encryption_public_key_file',
  'encryption_private_key_file',
  'backup_interval_hours',
  'full_backup_interval_days',
  'max_incremental_chain',
  'backup_fast_checkpoint',
  'first_backup_fast_checkpoint',
  'backup_compression',
  'backup_compression_workers',
  'backup_max_rate_kbps',
  'retain_backups',
  'recovery_window_days',
  'check_interval_hours',
  'drill_interval_hours',
  'drill_pg_bin',
  'drill_os_user',
  'drill_query',
  's3',
];
const S3_KEYS = [
  'endpoint',
  'region',
  'force_path_style',
  'checksums',
  'profile',
  'access_key_id',
  'secret_access_key',
  'session_token',
  'request_timeout_seconds',
  'connect_timeout_seconds',
  'sign_payloads',
];
/** "host:port" or "[v6]:port"; null for anything else. */
export function parseHostPort(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:[\]\s]+)):([0-9]{1,5})$/.exec(text.trim());
  if (!m || Number(m[3]) > 65535) return null;
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

/** Every key the loader accepts, by table (docs/configuration.md lists them; a test checks it). */
export const CONFIG_KEYS: Readonly<Record<'top' | 'log' | 'http' | 'site' | 's3', readonly string[]>> = { top: TOP_KEYS, log: LOG_KEYS, http: HTTP_KEYS, site: SITE_KEYS, s3: S3_KEYS };

const DEFAULTS = {
  mode: 'archive' as AckMode,
  partialIntervalSeconds: 10,
  statusIntervalSeconds: 10,
  createSlot: true,
  uploadConcurrency: 2,
  spoolAlertMiB: 4096,
  storageStallSeconds: 60,
  backupIntervalHours: 24,
  fullBackupIntervalDays: 7,
  maxIncrementalChain: 6,
  retainBackups: 0,
  recoveryWindowDays: 0,
};

/**
 * The codec a site gets when it names none, chosen from the codec bench (README, "Compression"):
 * object storage pays per byte moved and stored, and zstd cuts typical WAL to about a third
 * at some 300 MiB/s per stream; a local directory on the spool's filesystem takes completed
 * segments by hard link, with no copy at all, which only uncompressed segments allow.
 */
export function defaultCompression(archive: string): CodecName {
  return /^s3:\/\//i.test(archive.trim()) ? 'zstd' : 'none';
}
/**
 * A local archive's object mode from its text ("0600", "640"...): owner read-write, group and
 * others read at most (objects are immutable; nobody else may write, nothing is executable).
 * Null for anything else.
 */
export function parseArchiveFileMode(text: string): number | null {
  if (!/^0?[0-7]{3}$/.test(text.trim())) return null;
  const mode = Number.parseInt(text.trim(), 8);
  return (mode & 0o700) === 0o600 && (mode & 0o033) === 0 ? mode : null;
}

export const ARCHIVE_FILE_MODE_HINT =
  'use "0600" (the owner only, the default), "0640" (also the archive directory\'s group, e.g. for the postgres user running restore_command) or "0644" (every user)';

const SLOT_MAX = 63; // NAMEDATALEN - 1
const SITE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

type Format = 'toml' | 'json' | 'cli';
type Table = Record<string, unknown>;

interface Ctx {
  source: string;
  format: Format;
  /** Relative paths resolve against this directory. */
  baseDir: string;
}

export function loadConfigFile(file: string): Config {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw invalid(`config file ${file} not found: ${e.message}; check the path`);
    throw invalid(`config file ${file} cannot be read: ${e.message}; check the path and its permissions`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const ext = path.extname(file).toLowerCase();
  const format: Format =
    ext === '.json' ? 'json' : ext === '.toml' ? 'toml' : text.trimStart().startsWith('{') ? 'json' : 'toml';
  const ctx: Ctx = { source: file, format, baseDir: path.dirname(path.resolve(file)) };
  const doc = format === 'json' ? parseJsonDocument(text, file) : parseTomlDocument(text, file);
  return buildConfig(doc, ctx);
}

/** The site keys the one-site form of `walvault run` takes as options. */
export interface OneSiteOptions {
  pg?: string;
  archive?: string;
  state?: string;
  slot?: string;
  mode?: string;
  compression?: string;
  archive_file_mode?: string;
  encryption_public_key_file?: string;
  backup_interval_hours?: number;
  first_backup_fast_checkpoint?: boolean;
}

/** The one-site form: `walvault run --pg ... --archive ... --state ...`. */
export function configFromOptions(o: OneSiteOptions): Config {
  const ctx: Ctx = { source: 'command line', format: 'cli', baseDir: process.cwd() };
  const raw: Table = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) raw[k] = v;
  return { logLevel: 'info', sites: [buildSite(ctx, 'default', raw)], source: ctx.source };
}

export function selectSite(cfg: Config, name?: string): SiteConfig {
  const names = cfg.sites.map((s) => s.name);
  if (name !== undefined) {
    const site = cfg.sites.find((s) => s.name === name);
    if (site) return site;
    const guess = closestName(name, names);
    throw invalid(
      `${cfg.source}: no site named ${JSON.stringify(name)}; ` +
        (guess ? `did you mean "${guess}"? ` : '') +
        `configured sites: ${names.join(', ') || '(none)'}`,
    );
  }
  if (cfg.sites.length === 1) return cfg.sites[0];
  if (cfg.sites.length === 0) throw invalid(`${cfg.source}: sites: no sites configured; add a [sites.<name>] section`);
  throw invalid(`${cfg.source}: several sites are configured (${names.join(', ')}); choose one with --site <name>`);
}

// --- the document ------------------------------------------------------------------

function buildConfig(doc: unknown, ctx: Ctx): Config {
  if (!isTable(doc)) fail(ctx, '(top level)', `expected ${tableWord(ctx)}, got ${typeName(doc)}`, 'the file must hold one object with "log" and "sites"');
  rejectUnknownKeys(ctx, doc, '', TOP_KEYS);

  let logLevel = 'info';
  if (doc.log !== undefined) {
    if (!isTable(doc.log)) fail(ctx, 'log', `expected ${tableWord(ctx)}, got ${typeName(doc.log)}`, `write ${ctx.format === 'json' ? '"log": { "level": "info" }' : '[log] followed by level = "info"'}`);
    rejectUnknownKeys(ctx, doc.log, 'log.', LOG_KEYS);
    const level = doc.log.level;
    if (level !== undefined) {
      if (typeof level !== 'string' || !LOG_LEVELS.includes(level)) {
        const shown = typeof level === 'string' ? JSON.stringify(level) : typeName(level);
        fail(ctx, 'log.level', `${shown} is not a log level`, `use one of ${LOG_LEVELS.map((l) => `"${l}"`).join(', ')}`);
      }
      logLevel = level;
    }
  }

  let httpListen: { host: string; port: number } | undefined;
  if (doc.http !== undefined) {
    if (!isTable(doc.http)) fail(ctx, 'http', `expected ${tableWord(ctx)}, got ${typeName(doc.http)}`, `write ${ctx.format === 'json' ? '"http": { "listen": "127.0.0.1:9187" }' : '[http] followed by listen = "127.0.0.1:9187"'}`);
    rejectUnknownKeys(ctx, doc.http, 'http.', HTTP_KEYS);
    const listen = doc.http.listen ?? '127.0.0.1:9187';
    const parsed = typeof listen === 'string' ? parseHostPort(listen) : null;
    if (!parsed) {
      fail(ctx, 'http.listen', `${typeof listen === 'string' ? JSON.stringify(listen) : typeName(listen)} is not host:port`, `write ${assignment(ctx, 'listen', '"127.0.0.1:9187"')} (a loopback address keeps the metrics on this host)`);
    }
    httpListen = parsed!;
  }

  const addSite = ctx.format === 'json' ? 'add "sites": { "<name>": { "pg": ..., "archive": ..., "state": ... } }' : 'add a [sites.<name>] section with pg, archive and state';
  if (doc.sites === undefined) fail(ctx, 'sites', 'no sites configured', addSite);
  if (!isTable(doc.sites)) fail(ctx, 'sites', `expected ${tableWord(ctx)}, got ${typeName(doc.sites)}`, addSite);
  const entries = Object.entries(doc.sites);
  if (entries.length === 0) fail(ctx, 'sites', 'no sites configured', addSite);

  const sites: SiteConfig[] = [];
  for (const [name, raw] of entries) {
    if (!SITE_NAME.test(name)) {
      fail(ctx, `sites.${JSON.stringify(name)}`, 'invalid site name', 'use up to 63 letters, digits, "_", "-" or "." starting with a letter or digit (the name appears in slot names, metrics and --site)');
    }
    if (!isTable(raw)) {
      fail(ctx, `sites.${name}`, `expected ${tableWord(ctx)}, got ${typeName(raw)}`, ctx.format === 'json' ? `write "${name}": { "pg": ..., "archive": ..., "state": ... }` : `write [sites.${name}] followed by its keys`);
    }
    sites.push(buildSite(ctx, name, raw));
  }
  checkSitesApart(ctx, sites);
  return { logLevel, sites, source: ctx.source, ...(httpListen !== undefined ? { httpListen } : {}) };
}

/** Sites sharing a name (up to case), a state directory or an archive would corrupt each other. */
function checkSitesApart(ctx: Ctx, sites: SiteConfig[]): void {
  for (let i = 0; i < sites.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = sites[j];
      const b = sites[i];
      if (a.name.toLowerCase() === b.name.toLowerCase()) {
        fail(ctx, `sites.${b.name}`, `duplicate site name (same as sites.${a.name} apart from case)`, 'give every site a distinct name');
      }
      if (a.state === b.state) {
        fail(ctx, `sites.${b.name}.state`, `same directory as sites.${a.name}.state`, 'give every site its own state directory');
      }
      if (a.archive === b.archive) {
        fail(ctx, `sites.${b.name}.archive`, `same archive as sites.${a.name}.archive`, 'one archive holds one cluster: give every site its own archive');
      }
    }
  }
}

function buildSite(ctx: Ctx, name: string, raw: Table): SiteConfig {
  const where = (key: string) => keyPath(ctx, name, key);
  rejectUnknownKeys(ctx, raw, ctx.format === 'cli' ? '' : `sites.${name}.`, SITE_KEYS);

  const str = (key: string, required: boolean, example: string): string | undefined => {
    const v = raw[key];
    if (v === undefined) {
      if (required) fail(ctx, where(key), 'missing', `add ${assignment(ctx, key, example)}`);
      return undefined;
    }
    if (typeof v !== 'string') fail(ctx, where(key), `expected a string, got ${typeName(v)}`, `quote it: ${assignment(ctx, key, example)}`);
    if (v === '' && key !== 'pg') fail(ctx, where(key), 'is empty', required ? `set it: ${assignment(ctx, key, example)}` : 'remove it to get the default');
    return v;
  };
  /** `lowest` is the smallest allowed value; 0 exclusive means "positive". */
  const num = (key: string, dflt: number, lowest: { value: number; exclusive?: boolean }, integer: boolean, hint: string): number => {
    const v = raw[key];
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(ctx, where(key), `expected a number, got ${typeName(v)}`, `write it without quotes: ${assignment(ctx, key, String(dflt))}`);
    if (integer && !Number.isInteger(v)) fail(ctx, where(key), `expected a whole number, got ${v}`, hint);
    if (v < 0) fail(ctx, where(key), `must not be negative, got ${v}`, hint);
    if (lowest.exclusive ? v <= lowest.value : v < lowest.value) {
      fail(ctx, where(key), `must be ${lowest.exclusive ? 'greater than' : 'at least'} ${lowest.value}, got ${v}`, hint);
    }
    return v;
  };

  const pgString = str('pg', true, '"host=db1 port=5432 user=walvault"') as string;
  const passwordFile = str('password_file', false, '"/etc/walvault/pg.password"');
  const archiveRaw = str('archive', true, `"file:///var/lib/walvault/archive/${name}"`) as string;
  const stateRaw = str('state', true, `"/var/lib/walvault/state/${name}"`) as string;
  const slotRaw = str('slot', false, `"walvault_${name}"`);
  const modeRaw = str('mode', false, '"archive"');
  const appNameRaw = str('application_name', false, '"walvault"');
  const compressionRaw = str('compression', false, '"zstd"');
  const publicKeyRaw = str('encryption_public_key_file', false, '"/etc/walvault/site.pub"');
  const privateKeyRaw = str('encryption_private_key_file', false, '"/secure/walvault/site.key"');
  const fileModeRaw = str('archive_file_mode', false, '"0640"');
  let archiveFileMode = 0o600;
  if (fileModeRaw !== undefined) {
    const parsed = parseArchiveFileMode(fileModeRaw);
    if (parsed === null) fail(ctx, where('archive_file_mode'), `${JSON.stringify(fileModeRaw)} is not a mode for archive objects`, ARCHIVE_FILE_MODE_HINT);
    archiveFileMode = parsed as number;
  }

  const pg = parseConninfo(pgString, `${ctx.source}: ${where('pg')}`);
  if (passwordFile !== undefined) pg.password = readPasswordFile(ctx, where('password_file'), passwordFile);

  const slot = slotRaw ?? defaultSlot(name);
  if (!/^[a-z0-9_]+$/.test(slot) || slot.length > SLOT_MAX) {
    fail(ctx, where('slot'), `${JSON.stringify(slot)} is not a valid replication slot name`, `use at most ${SLOT_MAX} lower-case letters, digits and underscores, e.g. ${assignment(ctx, 'slot', `"${defaultSlot(name)}"`)}`);
  }

  let mode = DEFAULTS.mode;
  if (modeRaw !== undefined) {
    if (!(MODES as readonly string[]).includes(modeRaw)) {
      fail(ctx, where('mode'), `${JSON.stringify(modeRaw)} is not a mode`, `use "archive" (acknowledge WAL once archived; the default) or "sync" (acknowledge once fsynced locally)`);
    }
    mode = modeRaw as AckMode;
  }

  if (appNameRaw !== undefined && pg.application_name !== undefined && appNameRaw !== pg.application_name) {
    fail(ctx, where('application_name'), 'differs from the application_name in pg', 'set it in one place only');
  }
  const applicationName = appNameRaw ?? pg.application_name ?? slot;
  // synchronous_standby_names matches on this, so the connection must carry it.
  pg.application_name = applicationName;

  if (compressionRaw !== undefined && !isCodecName(compressionRaw)) {
    fail(ctx, where('compression'), `${JSON.stringify(compressionRaw)} is not a codec`, `use one of ${CODEC_NAMES.map((c) => `"${c}"`).join(', ')}, or remove it for the default (zstd for s3:// archives, none for a local directory)`);
  }
  const encryptionPublicKeyFile = publicKeyRaw === undefined ? undefined : path.resolve(ctx.baseDir, publicKeyRaw);
  if (encryptionPublicKeyFile !== undefined) {
    try {
      loadPublicKey(encryptionPublicKeyFile);
    } catch (err) {
      fail(ctx, where('encryption_public_key_file'), (err as Error).message.replace(/; create a key pair.*$/, ''), 'point it at the public key written by "walvault keys create"');
    }
  }

  const bool = (key: string, dflt: boolean): boolean => {
    const v = raw[key] ?? dflt;
    if (typeof v !== 'boolean') fail(ctx, where(key), `expected a boolean, got ${typeName(v)}`, `write ${assignment(ctx, key, 'true')} or false, without quotes`);
    return v as boolean;
  };
  const createSlot = bool('create_slot', DEFAULTS.createSlot);
  const backupCompression = (): 'server' | 'client' => {
    const v = raw.backup_compression ?? 'server';
    if (v !== 'server' && v !== 'client') fail(ctx, where('backup_compression'), `${JSON.stringify(v)} is not a place`, `use "server" (PostgreSQL compresses, 15+) or "client" (walvault compresses)`);
    return v as 'server' | 'client';
  };
  const drillPgBin = str('drill_pg_bin', false, '"/usr/lib/postgresql/16/bin"');
  const drillQuery = str('drill_query', false, '"SELECT count(*) FROM orders"');
  const maxRate = raw.backup_max_rate_kbps === undefined ? undefined : num('backup_max_rate_kbps', 0, { value: 32 }, true, 'use a whole number of kB/s from 32 to 1048576, or remove it for no limit');
  if (maxRate !== undefined && maxRate > 1048576) fail(ctx, where('backup_max_rate_kbps'), `${maxRate} is above the server's limit`, 'use a whole number of kB/s from 32 to 1048576, or remove it for no limit');

  return {
    name,
    pg,
    pgDescription: describeConninfo(pg),
    archive: resolveArchive(ctx, archiveRaw),
    state: path.resolve(ctx.baseDir, stateRaw),
    slot,
    mode,
    applicationName,
    partialIntervalSeconds: num('partial_interval_seconds', DEFAULTS.partialIntervalSeconds, { value: 0 }, false, 'use a number of seconds; 0 disables partial uploads'),
    statusIntervalSeconds: num('status_interval_seconds', DEFAULTS.statusIntervalSeconds, { value: 0, exclusive: true }, false, 'use a positive number of seconds, well below the server\'s wal_sender_timeout'),
    createSlot,
    uploadConcurrency: num('upload_concurrency', DEFAULTS.uploadConcurrency, { value: 1 }, true, 'use a whole number of parallel uploads, at least 1'),
    spoolAlertMiB: num('spool_alert_mib', DEFAULTS.spoolAlertMiB, { value: 0 }, false, 'use a number of MiB of unarchived WAL; 0 disables the alert'),
    storageStallSeconds: num('storage_stall_seconds', DEFAULTS.storageStallSeconds, { value: 0, exclusive: true }, false, 'use a positive number of seconds uploads may go without finishing before storage is reported failing'),
    backupIntervalHours: num('backup_interval_hours', DEFAULTS.backupIntervalHours, { value: 0 }, false, 'use a number of hours between scheduled base backups; 0 turns the schedule off'),
    fullBackupIntervalDays: num('full_backup_interval_days', DEFAULTS.fullBackupIntervalDays, { value: 0 }, false, 'use a number of days between full backups; 0 lets only max_incremental_chain ask for one'),
    maxIncrementalChain: num('max_incremental_chain', DEFAULTS.maxIncrementalChain, { value: 0 }, true, 'use how many incremental backups may follow one full backup; 0 makes every scheduled backup a full one'),
    backupFastCheckpoint: bool('backup_fast_checkpoint', false),
    firstBackupFastCheckpoint: bool('first_backup_fast_checkpoint', false),
    backupCompression: backupCompression(),
    backupCompressionWorkers: num('backup_compression_workers', 2, { value: 0 }, true, 'use a whole number of zstd threads on the server, 0 for none'),
    ...(maxRate !== undefined ? { backupMaxRateKiB: maxRate } : {}),
    retainBackups: num('retain_backups', DEFAULTS.retainBackups, { value: 0 }, true, 'use how many complete full backups to keep (each with its incrementals); 0 keeps them all'),
    recoveryWindowDays: num('recovery_window_days', DEFAULTS.recoveryWindowDays, { value: 0 }, false, 'use a number of days the archive must be able to recover to; 0 for no window'),
    checkIntervalHours: num('check_interval_hours', 6, { value: 0 }, false, 'use a number of hours between scheduled archive checks; 0 turns them off'),
    drillIntervalHours: num('drill_interval_hours', 0, { value: 0 }, false, 'use a number of hours between scheduled restore drills; 0 turns them off'),
    ...(drillPgBin !== undefined ? { drillPgBin: path.resolve(ctx.baseDir, drillPgBin) } : {}),
    drillOsUser: str('drill_os_user', false, '"postgres"') ?? 'postgres',
    ...(drillQuery !== undefined ? { drillQuery } : {}),
    s3: parseS3Section(ctx, name, raw.s3),
    archiveFileMode,
    compression: (compressionRaw as CodecName | undefined) ?? defaultCompression(archiveRaw),
    compressionChosen: compressionRaw !== undefined,
    ...(encryptionPublicKeyFile !== undefined ? { encryptionPublicKeyFile } : {}),
    ...(privateKeyRaw !== undefined ? { encryptionPrivateKeyFile: path.resolve(ctx.baseDir, privateKeyRaw) } : {}),
  };
}

/**
 * The optional [sites.NAME.s3] table. Secrets may be written here (the file is the
 * operator's to protect), never on the command line; they are not echoed in errors.
 */
function parseS3Section(ctx: Ctx, site: string, raw: unknown): S3Settings {
  if (raw === undefined) return {};
  const at = (key: string) => `sites.${site}.s3${key ? '.' + key : ''}`;
  if (!isTable(raw)) fail(ctx, at(''), `expected ${tableWord(ctx)}, got ${typeName(raw)}`, ctx.format === 'json' ? 'write "s3": { "endpoint": "https://..." }' : `write [sites.${site}.s3] followed by its keys`);
  rejectUnknownKeys(ctx, raw, `sites.${site}.s3.`, S3_KEYS);
  const text = (key: string, example: string): string | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.trim() === '') fail(ctx, at(key), `expected a non-empty string, got ${typeName(v)}`, `write ${assignment(ctx, key, example)}`);
    return v as string;
  };
  const out: S3Settings = {};
  const endpoint = text('endpoint', '"https://minio.example:9000"');
  if (endpoint !== undefined) {
    let ok = false;
    try {
      ok = ['http:', 'https:'].includes(new URL(endpoint).protocol);
    } catch {
      ok = false;
    }
    if (!ok) fail(ctx, at('endpoint'), 'is not an http:// or https:// URL', `write ${assignment(ctx, 'endpoint', '"https://minio.example:9000"')}`);
    out.endpoint = endpoint;
  }
  const region = text('region', '"eu-west-1"');
  if (region !== undefined) out.region = region;
  const profile = text('profile', '"backup"');
  if (profile !== undefined) out.profile = profile;
  if (raw.force_path_style !== undefined) {
    if (typeof raw.force_path_style !== 'boolean') fail(ctx, at('force_path_style'), `expected a boolean, got ${typeName(raw.force_path_style)}`, `write ${assignment(ctx, 'force_path_style', 'true')} or false, without quotes`);
    out.forcePathStyle = raw.force_path_style;
  }
  if (raw.sign_payloads !== undefined) {
    if (typeof raw.sign_payloads !== 'boolean') fail(ctx, at('sign_payloads'), `expected a boolean, got ${typeName(raw.sign_payloads)}`, `write ${assignment(ctx, 'sign_payloads', 'true')} or false, without quotes`);
    out.signPayloads = raw.sign_payloads;
  }
  const checksums = text('checksums', '"when_required"');
  if (checksums !== undefined) {
    if (checksums !== 'when_required' && checksums !== 'when_supported') {
      fail(ctx, at('checksums'), `${JSON.stringify(checksums)} is not a checksum mode`, 'use "when_required" (needed by several S3-compatible stores) or "when_supported" (the SDK\'s default for AWS)');
    }
    out.checksums = checksums;
  }
  const keyId = text('access_key_id', '"AKIA..."');
  const secret = text('secret_access_key', '"..."');
  const token = text('session_token', '"..."');
  if ((keyId === undefined) !== (secret === undefined)) {
    fail(ctx, at(keyId === undefined ? 'access_key_id' : 'secret_access_key'), 'missing', 'set access_key_id and secret_access_key together, or neither (to use the AWS environment, profile or instance role)');
  }
  if (token !== undefined && keyId === undefined) fail(ctx, at('session_token'), 'set without access_key_id', 'a session token belongs with access_key_id and secret_access_key');
  if (keyId !== undefined) {
    out.accessKeyId = keyId;
    // Not enumerable: a site object that gets logged or printed must not carry the secret.
    Object.defineProperty(out, 'secretAccessKey', { value: secret, enumerable: false, writable: true, configurable: true });
    if (token !== undefined) Object.defineProperty(out, 'sessionToken', { value: token, enumerable: false, writable: true, configurable: true });
  }
  const seconds = (key: string, example: string): number | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      fail(ctx, at(key), `expected a positive number of seconds, got ${typeof v === 'number' ? v : typeName(v)}`, `write ${assignment(ctx, key, example)}`);
    }
    return v as number;
  };
  const timeout = seconds('request_timeout_seconds', '30');
  if (timeout !== undefined) out.requestTimeoutSeconds = timeout;
  const connectTimeout = seconds('connect_timeout_seconds', '10');
  if (connectTimeout !== undefined) out.connectTimeoutSeconds = connectTimeout;
  return out;
}

/** "walvault_" + the site name folded into the characters PostgreSQL allows in slot names. */
function defaultSlot(site: string): string {
  return ('walvault_' + site.toLowerCase().replace(/[^a-z0-9_]/g, '_')).slice(0, SLOT_MAX);
}

/** URLs (file://, s3://, ...) are kept for the storage layer to judge; plain paths become absolute. */
function resolveArchive(ctx: Ctx, archive: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(archive)) return archive;
  return path.resolve(ctx.baseDir, archive);
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

function rejectUnknownKeys(ctx: Ctx, table: Table, prefix: string, allowed: string[]): void {
  for (const key of Object.keys(table)) {
    if (allowed.includes(key)) continue;
    const shownKey = ctx.format === 'cli' ? `--${key.replace(/_/g, '-')}` : prefix + key;
    if (key === 'password') fail(ctx, shownKey, 'passwords are not allowed in the configuration', PASSWORD_HELP);
    const guess = closestName(key, allowed);
    fail(ctx, shownKey, 'unknown key', guess ? `did you mean "${guess}"?` : `remove it; known keys here: ${allowed.join(', ')}`);
  }
}

// --- syntax ------------------------------------------------------------------------

function parseTomlDocument(text: string, file: string): unknown {
  try {
    return parseToml(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // smol-toml appends a code excerpt on further lines; it may hold a secret, so only
    // the first line is kept.
    let reason = err.message.split('\n', 1)[0].replace(/^Invalid TOML document:\s*/, '');
    if (/redefine/.test(reason)) reason += ' (a key or table such as [sites.<name>] appears twice)';
    throw invalid(`${file}:${err.line}:${err.column}: invalid TOML: ${reason}; fix the syntax at that position`);
  }
}

/**
 * A strict JSON reader. JSON.parse would do for the values, but it silently keeps the
 * last of two duplicate keys (two sites of the same name, one lost) and its error
 * messages quote the source text around the error, which may hold a secret.
 */
function parseJsonDocument(text: string, file: string): unknown {
  let i = 0;
  const syntax = (reason: string): never => {
    const before = text.slice(0, i).split('\n');
    throw invalid(`${file}:${before.length}:${before[before.length - 1].length + 1}: invalid JSON: ${reason}; fix the syntax at that position`);
  };
  const skipSpace = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
  };
  const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const readString = (): string => {
    STRING.lastIndex = i;
    const m = STRING.exec(text);
    if (!m) syntax('unterminated string, bad escape or raw control character in a string');
    i += m![0].length;
    return JSON.parse(m![0]) as string;
  };
  const readValue = (keyPath: string): unknown => {
    skipSpace();
    const ch = text[i];
    if (ch === '{') {
      i++;
      const obj: Table = {};
      skipSpace();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        skipSpace();
        if (text[i] !== '"') syntax('expected a double-quoted key');
        const keyStart = i;
        const key = readString();
        const child = keyPath === '' ? key : `${keyPath}.${key}`;
        if (Object.prototype.hasOwnProperty.call(obj, key)) {
          const line = text.slice(0, keyStart).split('\n').length;
          const what = keyPath === 'sites' ? 'duplicate site name' : 'duplicate key';
          throw invalid(`${file}: ${child}: ${what} (again at line ${line}); each key may appear only once in an object`);
        }
        skipSpace();
        if (text[i] !== ':') syntax('expected ":" after a key');
        i++;
        // defineProperty, not assignment: a "__proto__" key must stay an ordinary key.
        Object.defineProperty(obj, key, { value: readValue(child), enumerable: true, writable: true, configurable: true });
        skipSpace();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        syntax('expected "," or "}"');
      }
    }
    if (ch === '[') {
      i++;
      const arr: unknown[] = [];
      skipSpace();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(readValue(`${keyPath}[${arr.length}]`));
        skipSpace();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        syntax('expected "," or "]"');
      }
    }
    if (ch === '"') return readString();
    for (const [word, value] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m) {
      i += m[0].length;
      return Number(m[0]);
    }
    return syntax(i >= text.length ? 'unexpected end of file' : 'unexpected character');
  };
  const doc = readValue('');
  skipSpace();
  if (i < text.length) syntax('unexpected text after the end of the document');
  return doc;
}

// --- messages ----------------------------------------------------------------------

function invalid(message: string): WalvaultError {
  return new WalvaultError('CONFIG_INVALID', message.replace(/\s*[\r\n]+\s*/g, ' '));
}

function fail(ctx: Ctx, where: string, what: string, fix: string): never {
  throw invalid(`${ctx.source}: ${where}: ${what}; ${fix}`);
}

function keyPath(ctx: Ctx, site: string, key: string): string {
  return ctx.format === 'cli' ? `--${key.replace(/_/g, '-')}` : `sites.${site}.${key}`;
}

/** How to write `key = value` in the user's own syntax, for fixes. */
function assignment(ctx: Ctx, key: string, literal: string): string {
  if (ctx.format === 'json') return `"${key}": ${literal}`;
  if (ctx.format === 'cli') return `--${key.replace(/_/g, '-')} ${literal.replace(/^"|"$/g, "'")}`;
  return `${key} = ${literal}`;
}

function tableWord(ctx: Ctx): string {
  return ctx.format === 'json' ? 'an object' : 'a table';
}

/** Describes a wrong value by its kind only: the value itself might be a secret. */
function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  if (typeof v === 'object') return 'a table';
  if (typeof v === 'bigint') return 'an integer';
  return `a ${typeof v}`;
}

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}
