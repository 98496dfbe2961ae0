/**
 * The manifest an incremental backup is taken against, as walvault keeps it for that purpose
 * (`backups/<name>/upload_manifest`, stored unencrypted beside metadata.json).
 *
 * Why a second copy: the server's `backup_manifest` is stored like the backup's data (so
 * encrypted when the site encrypts), and the backup host holds only the public key. The copy
 * drops each file's checksum (a CRC32C of a small file, such as one holding a password, is a
 * clue to its contents); what the server needs from an uploaded manifest is the system
 * identifier, the file list and the WAL ranges.
 *
 * Manifest text (PostgreSQL's backup_manifest, version 1 or 2), one JSON value whose layout
 * the server fixes and we rely on:
 *   line 1            {"PostgreSQL-Backup-Manifest-Version": N,
 *   (v2)              "System-Identifier": <decimal>,
 *                     "Files": [
 *   one line per file { "Path": "...", "Size": n, "Last-Modified": "...", "Checksum-Algorithm": "CRC32C", "Checksum": "hex" },
 *                     ...
 *                     "WAL-Ranges": [ ... ],
 *   last line         "Manifest-Checksum": "<64 hex>"}
 * The Manifest-Checksum is the SHA-256 of every byte before the last line (up to and
 * including the newline that ends the line before it), as hex. The server checks it on upload.
 */
import { createHash } from 'node:crypto';
import { WalvaultError } from '../errors';

const FILE_CHECKSUM = /, "Checksum-Algorithm": "[A-Z0-9-]+", "Checksum": "[0-9a-f]*"( \},?)$/;
const CHECKSUM_LINE = /^"Manifest-Checksum": "([0-9a-f]{64})"\}$/;

/** The manifest's last line and everything before it; throws unless the layout is PostgreSQL's. */
function splitLastLine(text: string, what: string): { body: string; last: string } {
  if (!text.endsWith('\n')) throw new WalvaultError('ARCHIVE_CORRUPT', `${what} does not end with a newline: it is not a PostgreSQL backup manifest`);
  const end = text.lastIndexOf('\n', text.length - 2);
  if (end < 0) throw new WalvaultError('ARCHIVE_CORRUPT', `${what} has a single line: it is not a PostgreSQL backup manifest`);
  return { body: text.slice(0, end + 1), last: text.slice(end + 1, -1) };
}

function manifestChecksum(body: string): string {
  return createHash('sha256').update(body, 'utf8').digest('hex');
}

/** Whether `manifest` carries the checksum of its own text (what the server checks on upload). */
export function manifestChecksumHolds(manifest: Buffer, what = 'the backup manifest'): boolean {
  const { body, last } = splitLastLine(manifest.toString('utf8'), what);
  const m = CHECKSUM_LINE.exec(last);
  return m !== null && m[1] === manifestChecksum(body);
}

/**
 * `manifest` with each line passed through `edit` (the last line, the Manifest-Checksum,
 * excepted) and the Manifest-Checksum recomputed over the result.
 */
export function rewriteManifest(manifest: Buffer, edit: (line: string) => string, what = 'the backup manifest'): Buffer {
  const { body } = splitLastLine(manifest.toString('utf8'), what);
  const edited = body.split('\n').map(edit).join('\n');
  return Buffer.from(`${edited}"Manifest-Checksum": "${manifestChecksum(edited)}"}\n`, 'utf8');
}

/**
 * `manifest` with every file's checksum removed and the Manifest-Checksum recomputed. Refuses
 * a manifest whose own checksum does not hold: the copy must say what the server sent.
 */
export function uploadManifestOf(manifest: Buffer, what = 'the backup manifest'): Buffer {
  if (!manifestChecksumHolds(manifest, what)) {
    throw new WalvaultError('PG_PROTOCOL', `${what} does not carry the checksum of its own text`, { fix: `it cannot serve as the parent of incremental backups` });
  }
  return rewriteManifest(manifest, (line) => line.replace(FILE_CHECKSUM, '$1'), what);
}
