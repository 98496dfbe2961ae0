/**
 * The files of a PostgreSQL backup manifest ("Files": path, size, checksum), and the check of
 * a restored directory's files against them.
 */
import { WalvaultError } from '../errors';
import type { ExtractedFile } from './extract';
import { isManifestChecksumAlgorithm, MANIFEST_CHECKSUM_ALGORITHMS, type ManifestChecksumAlgorithm } from './manifest-checksum';

interface ManifestEntry {
  Path?: string;
  'Encoded-Path'?: string;
  Size: number;
  'Checksum-Algorithm'?: string;
  Checksum?: string;
}

export interface ParsedManifest {
  /** The one checksum algorithm of its files (the server uses one per backup). */
  algorithm: ManifestChecksumAlgorithm;
  files: Array<{ path: string; size: number; checksum: string }>;
}

/** The files of a backup manifest; refuses one that cannot be checked. */
export function parseManifest(manifest: Buffer, label: string): ParsedManifest {
  let parsed: { Files?: ManifestEntry[] };
  try {
    parsed = JSON.parse(manifest.toString('utf8'));
  } catch (err) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label} is not valid JSON: ${(err as Error).message}`);
  }
  const entries = parsed.Files ?? [];
  const algorithms = new Set(entries.map((f) => f['Checksum-Algorithm'] ?? 'NONE'));
  const algorithm = [...algorithms][0] ?? 'NONE';
  if (algorithms.size > 1 || !isManifestChecksumAlgorithm(algorithm)) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label} uses checksum algorithms ${[...algorithms].join(', ')}`, { fix: `expected one of ${MANIFEST_CHECKSUM_ALGORITHMS.join(', ')}` });
  }
  return {
    algorithm,
    files: entries.map((f) => ({ path: f.Path ?? Buffer.from(f['Encoded-Path'] ?? '', 'hex').toString('utf8'), size: f.Size, checksum: (f.Checksum ?? '').toLowerCase() })),
  };
}

/** Every file the manifest names, with its size and checksum, and nothing it does not. */
export function compareWithManifest(manifest: ParsedManifest, files: Map<string, ExtractedFile>): string[] {
  const problems: string[] = [];
  const listed = new Set<string>();
  for (const f of manifest.files) {
    listed.add(f.path);
    const got = files.get(f.path);
    if (!got) problems.push(`${f.path}: missing`);
    else if (got.size !== f.size) problems.push(`${f.path}: ${got.size} bytes, the manifest says ${f.size}`);
    else if (manifest.algorithm !== 'NONE' && got.checksum !== f.checksum) problems.push(`${f.path}: ${manifest.algorithm} checksum differs from the manifest`);
  }
  for (const p of files.keys()) if (!listed.has(p)) problems.push(`${p}: not in the manifest`);
  return problems;
}
