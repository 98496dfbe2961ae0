/**
 * A site's archives. The one-archive form keeps the archive's keys in the site's own table
 * (`archive`, `compression`, the key files, `archive_file_mode`, `[sites.NAME.s3]`,
 * `[sites.NAME.azure]`), as it always has; the several-archive form has one
 * `[[sites.NAME.archives]]` table per archive (`url` and the same keys, its own `s3` or
 * `azure` table), in the order readers try them. The two forms do not mix: with `archives`,
 * an archive key left in the site's table would be ambiguous (one archive's, or every
 * archive's default?), so it is refused, naming where it belongs.
 *
 * Messages number the entries from 1, in the order the file lists them.
 */
import * as path from 'path';
import { CODEC_NAMES, isCodecName, type CodecName } from '../archive/codecs';
import { loadPublicKey } from '../archive/encryption';
import { isWalvaultError } from '../errors';
import type { ArchiveTarget } from './config-types';
import { CONFIG_KEYS, defaultCompression, defaultOf } from './keys';
import { fail, isTable, keyPath, rejectUnknownKeys, stringKey, typeName, type Ctx, type Table } from './messages';
import { parseAzureTable } from './azure-table';
import { parseS3Table } from './s3-table';

/** The site keys that describe its one archive, which the several-archive form moves into each entry. */
const ONE_ARCHIVE_KEYS = ['archive', 'compression', 'archive_file_mode', 'encryption_public_key_file', 'encryption_private_key_file', 's3', 'azure'];

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

/** Every archive of site `name`, first the one commands write to. */
export function siteArchives(ctx: Ctx, name: string, raw: Table): ArchiveTarget[] {
  if (raw.archives === undefined) {
    return [archiveTarget(ctx, raw, 'archive', (key) => keyPath(ctx, name, key), { path: `sites.${name}`, header: `sites.${name}` }, name)];
  }
  const list = `sites.${name}.archives`;
  const oneTablePerArchive = ctx.format === 'json' ? `write "archives": [ { "url": "..." }, { "url": "..." } ]` : `write one [[${list}]] table per archive, each with url = "..."`;
  for (const key of ONE_ARCHIVE_KEYS) {
    if (raw[key] === undefined) continue;
    const fix = key === 'archive' ? `remove it and give that archive as the url of one of the ${list} tables` : `move it into each ${list} table it is meant for: with archives, each archive has its own`;
    fail(ctx, `sites.${name}.${key}`, `is given beside archives`, fix);
  }
  const entries = raw.archives;
  if (!Array.isArray(entries) || entries.length === 0) {
    fail(ctx, list, Array.isArray(entries) ? 'is empty' : `expected an array of tables, got ${typeName(entries)}`, oneTablePerArchive);
  }
  const targets = entries.map((entry: unknown, i: number) => {
    const at = `${list}[${i + 1}]`;
    if (!isTable(entry)) fail(ctx, at, `expected a table, got ${typeName(entry)}`, oneTablePerArchive);
    rejectUnknownKeys(ctx, entry, `${at}.`, CONFIG_KEYS.archive);
    return archiveTarget(ctx, entry, 'url', (key) => `${at}.${key}`, { path: at, header: list }, name);
  });
  targets.forEach((t, i) => {
    const j = targets.findIndex((u) => u.archive === t.archive);
    if (j < i) fail(ctx, `${list}[${i + 1}].url`, `same archive as ${list}[${j + 1}].url`, 'name each archive once');
  });
  return targets;
}

/**
 * One archive's keys from `raw` (the site's table, or an archives entry); `where` names a key
 * in messages, `table` is where the archive's s3 and azure tables sit.
 */
function archiveTarget(ctx: Ctx, raw: Table, urlKey: 'archive' | 'url', where: (key: string) => string, table: { path: string; header: string }, site: string): ArchiveTarget {
  const str = (key: string, required: boolean, example: string) => stringKey(ctx, raw, where(key), key, { required, example });
  const archiveRaw = str(urlKey, true, `"file:///var/lib/walvault/archive/${site}"`) as string;
  const compressionRaw = str('compression', false, '"zstd"');
  const publicKeyRaw = str('encryption_public_key_file', false, '"/etc/walvault/site.pub"');
  const privateKeyRaw = str('encryption_private_key_file', false, '"/secure/walvault/site.key"');
  const fileModeText = str('archive_file_mode', false, '"0640"') ?? defaultOf('site', 'archive_file_mode', 'string');
  const archiveFileMode = parseArchiveFileMode(fileModeText);
  if (archiveFileMode === null) fail(ctx, where('archive_file_mode'), `${JSON.stringify(fileModeText)} is not a mode for archive objects`, ARCHIVE_FILE_MODE_HINT);

  if (compressionRaw !== undefined && !isCodecName(compressionRaw)) {
    fail(ctx, where('compression'), `${JSON.stringify(compressionRaw)} is not a codec`, `use one of ${CODEC_NAMES.map((c) => `"${c}"`).join(', ')}, or remove it for the default (zstd for s3:// and azure:// archives, none for a local directory)`);
  }
  const encryptionPublicKeyFile = publicKeyRaw === undefined ? undefined : path.resolve(ctx.baseDir, publicKeyRaw);
  if (encryptionPublicKeyFile !== undefined) {
    try {
      loadPublicKey(encryptionPublicKeyFile);
    } catch (err) {
      fail(ctx, where('encryption_public_key_file'), isWalvaultError(err) ? err.what : (err as Error).message, 'point it at the public key written by "walvault keys create"');
    }
  }
  return {
    archive: resolveArchive(ctx, archiveRaw),
    s3: parseS3Table(ctx, { path: `${table.path}.s3`, header: `${table.header}.s3` }, raw.s3),
    azure: parseAzureTable(ctx, { path: `${table.path}.azure`, header: `${table.header}.azure` }, raw.azure),
    archiveFileMode,
    compression: (compressionRaw as CodecName | undefined) ?? defaultCompression(archiveRaw),
    compressionChosen: compressionRaw !== undefined,
    ...(encryptionPublicKeyFile !== undefined ? { encryptionPublicKeyFile } : {}),
    ...(privateKeyRaw !== undefined ? { encryptionPrivateKeyFile: path.resolve(ctx.baseDir, privateKeyRaw) } : {}),
  };
}

/** URLs (file://, s3://, azure://, ...) are kept for the storage layer to judge; plain paths become absolute. */
function resolveArchive(ctx: Ctx, archive: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(archive)) return archive;
  return path.resolve(ctx.baseDir, archive);
}
