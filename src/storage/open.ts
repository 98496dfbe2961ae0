/**
 * Turns the archive location from configuration into a Storage backend.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WalvaultError } from '../errors';
import { LocalStorage, type LocalStorageOptions } from './local';
import type { AzureSettings } from './azure';
import { parseAzureUrl } from './azure-url';
import type { S3Settings } from './s3';
import type { Storage } from './storage';
import { redactUrl } from './store-errors';

const ACCEPTED =
  'accepted forms: s3://bucket/prefix, azure://container/prefix, file:///absolute/path, or a plain directory path (absolute or relative to the current directory)';

/** Each backend's settings are used for its own URLs only: `s3` for s3://, `local` for a directory, `azure` for azure://. */
export function storageFromUrl(url: string, s3: S3Settings = {}, local: LocalStorageOptions = {}, azure: AzureSettings = {}): Storage {
  const text = url.trim();
  // Error messages must never echo credentials someone put in the URL.
  const shown = redactUrl(text);
  if (text === '') throw new WalvaultError('CONFIG_INVALID', `the archive location is empty`, { fix: `${ACCEPTED}` });

  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) return new LocalStorage(path.resolve(text), local);

  if (scheme === 'file') {
    let dir: string;
    try {
      // Handles percent-escapes and refuses remote hosts (file://host/...).
      dir = fileURLToPath(text);
    } catch (err) {
      throw new WalvaultError('CONFIG_INVALID', `archive location "${shown}" is not a usable file URL (${(err as Error).message})`, { fix: `${ACCEPTED}`,
        cause: err,
      });
    }
    return new LocalStorage(dir, local);
  }
  if (scheme === 's3') {
    // Loaded only for S3 archives: the SDK is large, and wal-fetch from a local archive or a
    // prefetched file should not pay for it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { parseS3Url, S3Storage } = require('./s3') as typeof import('./s3');
    const location = parseS3Url(text);
    if (location === null) throw new WalvaultError('CONFIG_INVALID', `archive location "${shown}" is not a valid s3 URL`, { fix: `${ACCEPTED}` });
    return new S3Storage(location, s3);
  }
  if (scheme === 'azure') {
    // Parsed before the SDK is loaded, so that a malformed URL costs nothing.
    const location = parseAzureUrl(text);
    if (location === null) throw new WalvaultError('CONFIG_INVALID', `archive location "${shown}" is not a valid azure URL`, { fix: `${ACCEPTED}` });
    // Loaded only for Azure archives, as the S3 SDK is for S3 ones.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { AzureStorage } = require('./azure') as typeof import('./azure');
    return new AzureStorage(location, azure);
  }
  throw new WalvaultError('CONFIG_INVALID', `archive location "${shown}" has an unsupported scheme "${scheme}://"`, { fix: `${ACCEPTED}` });
}
