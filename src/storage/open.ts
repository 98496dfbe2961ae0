/**
 * Turns the archive location from configuration into a Storage backend.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WalvaultError } from '../errors';
import { LocalStorage, type LocalStorageOptions } from './local';
import type { S3Settings } from './s3';
import type { Storage } from './storage';

const ACCEPTED =
  'accepted forms: s3://bucket/prefix, file:///absolute/path, or a plain directory path (absolute or relative to the current directory)';

/** Error messages must never echo credentials someone put in the URL. */
function redact(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/@]*@/, '$1***@');
}

/** `s3`: the site's S3 overrides (unused for local archives); `local`: a local archive's (unused for S3). */
export function storageFromUrl(url: string, s3: S3Settings = {}, local: LocalStorageOptions = {}): Storage {
  const text = url.trim();
  const shown = redact(text);
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
  throw new WalvaultError('CONFIG_INVALID', `archive location "${shown}" has an unsupported scheme "${scheme}://"`, { fix: `${ACCEPTED}` });
}
