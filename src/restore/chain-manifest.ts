/**
 * The backup_manifest a rebuilt incremental chain gets (as pg_combinebackup writes one): the
 * newest backup's manifest, each `INCREMENTAL.<file>` entry named as the rebuilt `<file>`
 * with its size and checksum, the rewritten backup_label's likewise, the Manifest-Checksum
 * recomputed. pg_verifybackup of the same major version then checks the restored directory.
 *
 * Each file entry is one line of the manifest (`{ "Path": ..., "Size": ..., ... },`, see
 * ../backup/upload-manifest-text.ts); other lines pass unchanged.
 */
import { promises as fsp } from 'node:fs';
import { rewriteManifest } from '../backup/upload-manifest-text';
import { isIncrementalPath, nonIncrementalPath } from './incremental-file';
import { newChecksum, type ManifestChecksumAlgorithm } from './manifest-checksum';

export interface FileFacts {
  size: number;
  checksum: string;
}

const FILE_LINE = /^(\s*)(\{.*\})(,?)$/;

interface FileEntry {
  Path?: string;
  'Encoded-Path'?: string;
  Size: number;
  Checksum?: string;
}

/** `replaced`: facts by the path the file has in the restored directory. */
export function chainManifest(newest: Buffer, replaced: ReadonlyMap<string, FileFacts>, label: string): Buffer {
  return rewriteManifest(
    newest,
    (line) => {
      const m = FILE_LINE.exec(line);
      if (!m) return line;
      let entry: FileEntry;
      try {
        entry = JSON.parse(m[2]) as FileEntry;
      } catch {
        return line;
      }
      const encoded = entry.Path === undefined && entry['Encoded-Path'] !== undefined;
      const from = encoded ? Buffer.from(entry['Encoded-Path']!, 'hex').toString('utf8') : entry.Path;
      if (from === undefined) return line; // a WAL range
      const to = isIncrementalPath(from) ? nonIncrementalPath(from) : from;
      const facts = replaced.get(to);
      if (!facts) return line;
      if (encoded) entry['Encoded-Path'] = Buffer.from(to, 'utf8').toString('hex');
      else entry.Path = to;
      entry.Size = facts.size;
      if (entry.Checksum !== undefined) entry.Checksum = facts.checksum;
      return `${m[1]}${JSON.stringify(entry)}${m[3]}`;
    },
    label,
  );
}

/** Size and checksum of a file as the manifest states them, reading it once. */
export async function fileFacts(file: string, algorithm: ManifestChecksumAlgorithm): Promise<FileFacts> {
  const sum = newChecksum(algorithm);
  const h = await fsp.open(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  let size = 0;
  try {
    for (;;) {
      const { bytesRead } = await h.read(buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      sum.update(buf.subarray(0, bytesRead));
      size += bytesRead;
    }
  } finally {
    await h.close();
  }
  return { size, checksum: sum.digest() };
}
