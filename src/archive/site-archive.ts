/**
 * The Archive a site writes or reads, with its codec and keys: one place that turns site
 * settings into archive options, so the receiver, wal-fetch and later commands agree.
 */
import { storageFromUrl } from '../storage/open';
import type { AzureSettings } from '../storage/azure';
import type { S3Settings } from '../storage/s3';
import { Archive, type ArchiveOptions } from './archive';
import { ArchiveSet } from './archive-set';
import type { CodecName } from './codecs';
import { loadPrivateKey, loadPublicKey } from './encryption';

export interface ArchiveSettings {
  archive: string;
  s3: S3Settings;
  /** An azure:// archive's settings; none for the others. */
  azure?: AzureSettings;
  compression?: CodecName;
  /** Whether the site named its codec (false: `compression` is the default, and the archive's recorded codec wins). */
  compressionChosen?: boolean;
  /** A local archive's object mode (default 0600). */
  archiveFileMode?: number;
  encryptionPublicKeyFile?: string;
  encryptionPrivateKeyFile?: string;
  /** The site's state directory, where it pins the archive's key; absent for a bare --archive. */
  state?: string;
  /** Every archive of the site in reading order, this one (the first) included; absent or one: just this one. */
  archives?: readonly ArchiveSettings[];
}

/**
 * 'write': compress and encrypt with the site's settings. 'read': decrypt with its private key,
 * when one is given. `s3` replaces some of the site's S3 settings (deadlines for a command
 * that must answer soon); its deadlines apply to an Azure archive too.
 */
export function openSiteArchive(settings: ArchiveSettings, purpose: 'write' | 'read', s3?: Partial<S3Settings>): Archive {
  const options: ArchiveOptions = {};
  if (purpose === 'write') {
    options.codec = settings.compression ?? 'none';
    options.codecChosen = settings.compressionChosen ?? settings.compression !== undefined;
    if (settings.encryptionPublicKeyFile) options.recipient = loadPublicKey(settings.encryptionPublicKeyFile);
  } else if (settings.encryptionPrivateKeyFile) {
    options.privateKey = loadPrivateKey(settings.encryptionPrivateKeyFile);
  }
  const azure = { ...settings.azure, ...(s3 === undefined ? {} : deadlinesOf(s3)) };
  return new Archive(storageFromUrl(settings.archive, s3 === undefined ? settings.s3 : withS3(settings.s3, s3), { fileMode: settings.archiveFileMode }, azure), options);
}

/**
 * The archive a reading command reads: the site's one archive, or all of them as an
 * ArchiveSet (./archive-set.ts), which tells `warn` of each object it read from another
 * archive than the first that should have had it.
 */
export function openSiteReader(settings: ArchiveSettings, warn: (line: string, key: string) => void, s3?: Partial<S3Settings>): Archive {
  const archives = settings.archives ?? [];
  if (archives.length < 2) return openSiteArchive(settings, 'read', s3);
  return new ArchiveSet(archives.map((a) => openSiteArchive(a, 'read', s3)), warn);
}

/** The deadline overrides every object store shares. */
function deadlinesOf(o: Partial<S3Settings>): Partial<AzureSettings> {
  const { attempts, requestTimeoutSeconds, connectTimeoutSeconds } = o;
  return Object.fromEntries(Object.entries({ attempts, requestTimeoutSeconds, connectTimeoutSeconds }).filter(([, v]) => v !== undefined));
}

/** `base` with `overrides`; the secrets stay non-enumerable, as the config loader made them. */
function withS3(base: S3Settings, overrides: Partial<S3Settings>): S3Settings {
  return Object.assign(Object.defineProperties({}, Object.getOwnPropertyDescriptors(base)) as S3Settings, overrides);
}
