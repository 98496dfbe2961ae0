/**
 * What a loaded configuration is: the typed result every command and the daemon work from.
 * Defaults are filled in and relative paths resolved before anyone sees these.
 */
import type { AzureSettings } from '../storage/azure';
import type { S3Settings } from '../storage/s3';
import type { CodecName } from '../archive/codecs';
import type { PgConnectionConfig } from './conninfo';

export type AckMode = 'archive' | 'sync';

/** One archive of a site: where it is, how its objects are stored, and its store's settings. */
export interface ArchiveTarget {
  /** A directory (made absolute), file://, s3:// or azure:// URL. */
  archive: string;
  /** Overrides for an s3:// archive (its s3 table); empty otherwise. */
  s3: S3Settings;
  /** Overrides for an azure:// archive (its azure table); empty otherwise. */
  azure: AzureSettings;
  /** Permission bits of a local archive's objects (directories get the matching x bits). */
  archiveFileMode: number;
  /** Codec for the bodies stored there. */
  compression: CodecName;
  /** Whether the config or command line named the codec (false: the default, which an archive's recorded codec replaces). */
  compressionChosen: boolean;
  /** X25519 public key (PEM) to encrypt bodies for; none = not encrypted. Checked at load. */
  encryptionPublicKeyFile?: string;
  /** The matching private key, for restore and wal-fetch; the backup host does not need it. */
  encryptionPrivateKeyFile?: string;
}

/**
 * A site. Its own ArchiveTarget fields are its first archive's, which every command that
 * writes uses (and which is the only one unless the site names several); `archives` holds
 * them all, the first included, in the order readers try them.
 */
export interface SiteConfig extends ArchiveTarget {
  archives: ArchiveTarget[];
  /**
   * How many archives must hold WAL before it is reported flushed (archive mode), so the
   * server may recycle it: every archive by default; fewer lets the slot move on while one
   * lags, the spool keeping what it still needs.
   */
  archivedQuorum: number;
  name: string;
  pg: PgConnectionConfig;
  /** host:port user=..., for logs and errors; never the password. */
  pgDescription: string;
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
