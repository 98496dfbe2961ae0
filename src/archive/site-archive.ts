/**
 * The Archive a site writes or reads, with its codec and keys: one place that turns site
 * settings into archive options, so the receiver, wal-fetch and later commands agree.
 */
import { storageFromUrl } from '../storage/open';
import type { S3Settings } from '../storage/s3';
import { Archive, type ArchiveOptions } from './archive';
import type { CodecName } from './codecs';
import { loadPrivateKey, loadPublicKey } from './encryption';

export interface ArchiveSettings {
  archive: string;
  s3: S3Settings;
  compression?: CodecName;
  /** A local archive's object mode (default 0600). */
  archiveFileMode?: number;
  encryptionPublicKeyFile?: string;
  encryptionPrivateKeyFile?: string;
}

/** 'write': compress and encrypt with the site's settings. 'read': decrypt with its private key, when one is given. */
export function openSiteArchive(settings: ArchiveSettings, purpose: 'write' | 'read'): Archive {
  const options: ArchiveOptions = {};
  if (purpose === 'write') {
    options.codec = settings.compression ?? 'none';
    if (settings.encryptionPublicKeyFile) options.recipient = loadPublicKey(settings.encryptionPublicKeyFile);
  } else if (settings.encryptionPrivateKeyFile) {
    options.privateKey = loadPrivateKey(settings.encryptionPrivateKeyFile);
  }
  return new Archive(storageFromUrl(settings.archive, settings.s3, { fileMode: settings.archiveFileMode }), options);
}
