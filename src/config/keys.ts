/**
 * Every key a configuration may hold, table by table, with its default, unit and meaning.
 * This is the one table of defaults: the loader takes its defaults from here; the S3 client's
 * own deadlines are shown here from ../storage/s3-defaults.ts, which the client applies (storage
 * sits below config and may not import it). test/unit/config-reference.test.ts
 * holds docs/configuration.md to this table, so a key or a default that changes here without
 * the page fails the tests.
 *
 * The order of the keys is the order "known keys here: ..." lists them in.
 */
import { WalvaultError } from '../errors';
import type { CodecName } from '../archive/codecs';
import { DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_REQUEST_TIMEOUT_S } from '../storage/s3-defaults';

export type Literal = string | number | boolean;

/**
 * What a configuration that leaves a key out gets: a value; nothing because the key is
 * required; nothing because what the key asks for is then off; or a value worked out from
 * other settings where it is applied, which can only be described.
 */
export type Default =
  | { kind: 'value'; value: Literal }
  | { kind: 'required' }
  | { kind: 'unset' }
  | { kind: 'derived'; how: string };

export interface KeyInfo {
  default: Default;
  /** What one of a number is. */
  unit?: string;
  meaning: string;
}

export type Section = 'top' | 'log' | 'http' | 'site' | 'archive' | 's3' | 'azure';

const value = (v: Literal): Default => ({ kind: 'value', value: v });
const derived = (how: string): Default => ({ kind: 'derived', how });
const REQUIRED: Default = { kind: 'required' };
const UNSET: Default = { kind: 'unset' };

export const KEYS: Readonly<Record<Section, Readonly<Record<string, KeyInfo>>>> = {
  top: {
    log: { default: UNSET, meaning: 'the [log] table' },
    http: { default: UNSET, meaning: 'the [http] table; without it the daemon serves nothing' },
    sites: { default: REQUIRED, meaning: 'one [sites.NAME] table per PostgreSQL cluster' },
  },
  log: {
    level: { default: value('info'), meaning: 'the least severe log line written' },
  },
  http: {
    listen: { default: value('127.0.0.1:9187'), meaning: 'host:port of /metrics and /health' },
  },
  site: {
    pg: { default: REQUIRED, meaning: 'conninfo of the server to stream from, without a password' },
    password_file: { default: UNSET, meaning: "file holding the role's password" },
    archive: { default: derived('required, unless archives names them'), meaning: 'directory, file://, s3:// or azure:// URL of the archive' },
    archives: { default: UNSET, meaning: 'several archives, one [[sites.NAME.archives]] table each, read in order' },
    archived_quorum: { default: derived('every archive'), unit: 'archives', meaning: 'archives that must hold WAL before the server may recycle it' },
    state: { default: REQUIRED, meaning: "the site's state directory" },
    slot: { default: derived('"walvault_" and the site name'), meaning: 'physical replication slot' },
    mode: { default: value('archive'), meaning: 'when WAL is reported flushed: archived, or fsynced in the spool' },
    application_name: { default: derived("the conninfo's application_name, else the slot name"), meaning: 'what synchronous_standby_names matches' },
    partial_interval_seconds: { default: value(10), unit: 'seconds', meaning: 'between uploads of the segment being received; 0 none' },
    status_interval_seconds: { default: value(10), unit: 'seconds', meaning: 'between status updates to the server' },
    create_slot: { default: value(true), meaning: 'create a missing slot rather than refuse to start' },
    upload_concurrency: { default: value(2), unit: 'uploads', meaning: 'segments uploaded at once' },
    spool_alert_mib: { default: value(4096), unit: 'MiB', meaning: 'unarchived WAL that raises the alert; 0 never' },
    storage_stall_seconds: { default: value(60), unit: 'seconds', meaning: 'uploads with none finishing this long: storage failing' },
    compression: { default: derived('zstd for s3:// and azure://, none for a directory'), meaning: 'codec of stored objects' },
    archive_file_mode: { default: value('0600'), meaning: "permission bits of a local archive's objects" },
    encryption_public_key_file: { default: UNSET, meaning: 'encrypt stored objects for this public key' },
    encryption_private_key_file: { default: UNSET, meaning: 'the matching private key, for reading' },
    backup_interval_hours: { default: value(24), unit: 'hours', meaning: 'between scheduled base backups; 0 none' },
    full_backup_interval_days: { default: value(7), unit: 'days', meaning: 'age of the newest full backup that asks for another; 0 never' },
    max_incremental_chain: { default: value(6), unit: 'backups', meaning: 'incremental backups on one full backup at most' },
    backup_fast_checkpoint: { default: value(false), meaning: 'immediate checkpoint at backup start' },
    first_backup_fast_checkpoint: { default: value(false), meaning: "the same, for the site's first backup only" },
    backup_compression: { default: value('server'), meaning: 'who compresses a zstd backup: server or client' },
    backup_compression_workers: { default: value(2), unit: 'threads', meaning: 'zstd threads on the server' },
    backup_max_rate_kbps: { default: UNSET, unit: 'kB/s', meaning: 'server-side rate limit of base backups' },
    retain_backups: { default: value(0), unit: 'backups', meaning: 'complete full backups kept; 0 all' },
    recovery_window_days: { default: value(0), unit: 'days', meaning: 'recovery to any instant this far back is kept; 0 no window' },
    check_interval_hours: { default: value(6), unit: 'hours', meaning: 'between scheduled archive checks; 0 none' },
    drill_interval_hours: { default: value(0), unit: 'hours', meaning: 'between scheduled restore drills; 0 none' },
    drill_pg_bin: { default: UNSET, meaning: "pg_ctl's directory for drills (else by the backup's version)" },
    drill_os_user: { default: value('postgres'), meaning: "OS user of a drill's server when walvault runs as root" },
    drill_query: { default: UNSET, meaning: 'a query a drill runs on the recovered cluster' },
    s3: { default: UNSET, meaning: 'the [sites.NAME.s3] table' },
    azure: { default: UNSET, meaning: 'the [sites.NAME.azure] table' },
  },
  archive: {
    url: { default: REQUIRED, meaning: 'directory, file://, s3:// or azure:// URL of this archive' },
    compression: { default: derived('zstd for s3:// and azure://, none for a directory'), meaning: "codec of this archive's objects" },
    archive_file_mode: { default: value('0600'), meaning: "permission bits of a local archive's objects" },
    encryption_public_key_file: { default: UNSET, meaning: "encrypt this archive's objects for this public key" },
    encryption_private_key_file: { default: UNSET, meaning: 'the matching private key, for reading this archive' },
    s3: { default: UNSET, meaning: "this archive's [sites.NAME.archives.s3] table" },
    azure: { default: UNSET, meaning: "this archive's [sites.NAME.archives.azure] table" },
  },
  s3: {
    endpoint: { default: derived('AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS'), meaning: 'URL of an S3-compatible store' },
    region: { default: derived('AWS_REGION or the profile\'s; "us-east-1" with a custom endpoint'), meaning: 'region' },
    force_path_style: { default: derived('true with a custom endpoint'), meaning: 'path-style addressing' },
    checksums: { default: derived('"when_required" with a custom endpoint'), meaning: "the SDK's request checksums" },
    profile: { default: UNSET, meaning: 'a profile of ~/.aws/config' },
    access_key_id: { default: UNSET, meaning: 'static credentials, with secret_access_key' },
    secret_access_key: { default: UNSET, meaning: 'the secret of access_key_id' },
    session_token: { default: UNSET, meaning: 'for temporary credentials' },
    request_timeout_seconds: { default: value(DEFAULT_REQUEST_TIMEOUT_S), unit: 'seconds', meaning: 'no byte moving this long ends an attempt' },
    connect_timeout_seconds: { default: value(DEFAULT_CONNECT_TIMEOUT_S), unit: 'seconds', meaning: 'deadline for connecting to the store, per attempt' },
    sign_payloads: { default: derived('true for an http:// endpoint, else false'), meaning: "request bodies' SHA-256 in the signature" },
  },
  azure: {
    account: { default: derived('AZURE_STORAGE_ACCOUNT'), meaning: 'the storage account' },
    endpoint: { default: derived('https://ACCOUNT.blob.core.windows.net'), meaning: 'URL of the blob service (Azurite: http://127.0.0.1:10000/devstoreaccount1)' },
    request_timeout_seconds: { default: value(DEFAULT_REQUEST_TIMEOUT_S), unit: 'seconds', meaning: 'no byte moving this long ends an attempt' },
    connect_timeout_seconds: { default: value(DEFAULT_CONNECT_TIMEOUT_S), unit: 'seconds', meaning: 'deadline for connecting to the store, per attempt' },
  },
};

/** Every key the loader accepts, by table. */
export const CONFIG_KEYS: Readonly<Record<Section, readonly string[]>> = {
  top: Object.keys(KEYS.top),
  log: Object.keys(KEYS.log),
  http: Object.keys(KEYS.http),
  site: Object.keys(KEYS.site),
  archive: Object.keys(KEYS.archive),
  s3: Object.keys(KEYS.s3),
  azure: Object.keys(KEYS.azure),
};

/** A key's default value, when it has one that can be written down. */
export function literalDefault(section: Section, key: string): Literal | undefined {
  const d = KEYS[section][key]?.default;
  return d?.kind === 'value' ? d.value : undefined;
}

/** A key's default value; asking for one a key does not have is a mistake in the caller. */
export function defaultOf(section: Section, key: string, kind: 'number'): number;
export function defaultOf(section: Section, key: string, kind: 'string'): string;
export function defaultOf(section: Section, key: string, kind: 'boolean'): boolean;
export function defaultOf(section: Section, key: string, kind: 'number' | 'string' | 'boolean'): Literal {
  const v = literalDefault(section, key);
  if (typeof v === kind) return v as Literal;
  throw new WalvaultError('INTERNAL', `config key ${section}.${key} has no ${kind} default in src/config/keys.ts`);
}

// --- the derived defaults ------------------------------------------------------------

/** NAMEDATALEN - 1: PostgreSQL's longest slot name. */
export const SLOT_MAX = 63;

/** "walvault_" + the site name folded into the characters PostgreSQL allows in slot names. */
export function defaultSlot(site: string): string {
  return ('walvault_' + site.toLowerCase().replace(/[^a-z0-9_]/g, '_')).slice(0, SLOT_MAX);
}

/**
 * The codec a site gets when it names none, chosen from the codec bench (README, "Compression"):
 * object storage (S3, Azure) pays per byte moved and stored, and zstd cuts typical WAL to about a third
 * at some 300 MiB/s per stream; a local directory on the spool's filesystem takes completed
 * segments by hard link, with no copy at all, which only uncompressed segments allow.
 */
export function defaultCompression(archive: string): CodecName {
  return /^(s3|azure):\/\//i.test(archive.trim()) ? 'zstd' : 'none';
}
