/**
 * `azure://container[/prefix]` archive URLs, parsed without loading the Azure SDK (the config
 * loader and the codec default only need to know what the URL names).
 */
import { WalvaultError } from '../errors';

export interface AzureLocation {
  container: string;
  /** '' or a prefix ending in '/'. */
  prefix: string;
}

/** Whether `url` names an Azure Blob Storage archive (well formed or not). */
export function isAzureUrl(url: string): boolean {
  return /^azure:\/\//i.test(url.trim());
}

/** Parses `azure://container[/prefix]`; null when `url` is not an azure URL at all. */
export function parseAzureUrl(url: string): AzureLocation | null {
  const m = /^azure:\/\/([^/]*)(?:\/(.*))?$/i.exec(url.trim());
  if (!m) return null;
  const container = m[1];
  if (container.includes('@')) {
    // Never echoed: the part before '@' would be an account key or a SAS.
    throw new WalvaultError('CONFIG_INVALID', 'the archive URL carries credentials (user:secret@)', {
      fix: 'remove them and use AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY, or a managed identity',
    });
  }
  if (container.includes('?')) {
    // A SAS token pasted onto the URL: it would end up in logs and error messages.
    throw new WalvaultError('CONFIG_INVALID', 'the archive URL carries a query string (a SAS token?)', {
      fix: 'remove it and give the SAS as AZURE_STORAGE_SAS_TOKEN, or use another credential',
    });
  }
  // Azure's container naming rules: 3-63 characters, lower-case letters, digits and single
  // hyphens, starting and ending with a letter or digit.
  if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(container)) {
    throw new WalvaultError('CONFIG_INVALID', `archive azure://${container}/...: "${container}" is not a valid container name`, {
      fix: 'use 3-63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit, e.g. azure://wal-archive/cluster1',
    });
  }
  const rest = m[2] ?? '';
  if (rest.includes('?') || rest.includes('#')) {
    throw new WalvaultError('CONFIG_INVALID', `archive azure://${container}/...: the prefix carries a query string or fragment (a SAS token?)`, {
      fix: 'remove it and give the SAS as AZURE_STORAGE_SAS_TOKEN, or use another credential',
    });
  }
  const raw = rest.replace(/\/+$/, '');
  if (raw !== '' && raw.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new WalvaultError('CONFIG_INVALID', `archive azure://${container}/${rest}: the prefix has an empty, "." or ".." part`, {
      fix: `write it like azure://${container}/cluster1`,
    });
  }
  return { container, prefix: raw === '' ? '' : raw + '/' };
}
