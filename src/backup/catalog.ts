/**
 * Base backups in an archive. Layout under the site's prefix:
 *
 *   backups/<name>/parts/<archive>.<NNNNNN>   the tar archives (base.tar, <oid>.tar) in parts
 *   backups/<name>/backup_manifest            the server's manifest, as sent
 *   backups/<name>/index/<archive>            the block index of a tar archive walvault
 *                                             compressed itself (./block-index.ts)
 *   backups/<name>/upload_manifest            PostgreSQL 17+: that manifest without file
 *                                             checksums, unencrypted: what an incremental
 *                                             backup taken against this one uploads
 *   backups/<name>/metadata.json              what the backup is (written when the stream ends)
 *   backups/<name>/complete.json              the completion marker: written last, and only
 *                                             once the WAL from start to stop LSN is archived
 *
 * Only a backup with a completion marker is listed as restorable; anything else under
 * backups/ is a backup in progress or the leftover of one that died.
 */
import { createHash } from 'node:crypto';
import type { Archive } from '../archive/archive';
import { WalvaultError } from '../errors';
import { parseLsn, type Lsn } from '../wal/lsn';
import type { StoredPart } from './part-uploader';

const BACKUPS_PREFIX = 'backups/';
export const METADATA_FILE = 'metadata.json';
export const COMPLETE_FILE = 'complete.json';
export const MANIFEST_FILE = 'backup_manifest';
export const UPLOAD_MANIFEST_FILE = 'upload_manifest';
const INDEX_DIR = 'index/';

/** Where the block index of `archiveName` in backup `name` is stored. */
export function indexKey(name: string, archiveName: string): string {
  return `${backupPrefix(name)}${INDEX_DIR}${archiveName}`;
}

/** A stored object the metadata vouches for: its key, plaintext size and SHA-256 (hex). */
export interface RecordedObject {
  key: string;
  size: number;
  sha256: string;
}

export interface BackupArchive {
  /** base.tar or <oid>.tar */
  name: string;
  /** Tablespace OID; null for the main data directory. */
  tablespaceOid: string | null;
  /** The tablespace's location on the server; null for the main data directory. */
  location: string | null;
  /**
   * 'zstd': the server compressed the archive (name ends in .zst) and the parts hold that
   * stream; null: the parts hold the tar itself.
   */
  compression: 'zstd' | null;
  /** Uncompressed tar bytes (server-compressed: as the server counted them). */
  rawBytes: number;
  storedBytes: number;
  parts: StoredPart[];
  /**
   * The archive's block index: present when walvault saw the tar's plain bytes (compression
   * null) and took the backup after indexes existed; older backups lack it.
   */
  index?: RecordedObject;
}

export interface BackupMetadata {
  format: 1;
  name: string;
  label: string;
  systemId: string;
  pgVersionNum: number;
  walSegmentSize: number;
  startLsn: string;
  startTimeline: number;
  checkpointLsn: string;
  stopLsn: string;
  stopTimeline: number;
  /** ISO 8601, as this host saw it. */
  startedAt: string;
  stoppedAt: string;
  /** START TIME of backup_label, in the server's words. */
  serverStartTime: string;
  backupFrom: string;
  rawBytes: number;
  storedBytes: number;
  archives: BackupArchive[];
  manifest: RecordedObject;
  /** Absent in backups older than incremental support: those are full backups. */
  kind?: 'full' | 'incremental';
  /** An incremental's parent: the backup whose manifest it was taken against. */
  parent?: string;
  /** An incremental's chain, from its full backup to its parent (restoring it needs every one). */
  chain?: string[];
  /** The server's block_size (PostgreSQL 17+ backups): the unit of an incremental's files. */
  blockSize?: number;
}

export function isIncremental(meta: BackupMetadata): boolean {
  return meta.kind === 'incremental';
}

/** Every backup that restoring `meta` reads, from its full backup to itself. */
export function chainOf(meta: BackupMetadata): string[] {
  return [...(meta.chain ?? []), meta.name];
}

export interface CompletionMarker {
  name: string;
  completedAt: string;
  /** SHA-256 (hex) of metadata.json's plaintext: the marker vouches for that metadata. */
  metadataSha256: string;
  metadata: BackupMetadata;
}

export function backupPrefix(name: string): string {
  return `${BACKUPS_PREFIX}${name}/`;
}

/** Names are chosen by us (UTC start time): anything else is refused before it reaches a key. */
export function checkBackupName(name: string): void {
  if (!/^[0-9]{8}T[0-9]{6}Z(?:-[0-9]+)?$/.test(name)) {
    throw new WalvaultError('BACKUP_NOT_FOUND', `"${name}" is not a backup name (names look like 20261201T150405Z)`, { fix: `run "walvault backup list" to see them` });
  }
}

/** `20261201T150405Z` for the instant `d`. */
export function backupNameFor(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.[0-9]+Z$/, 'Z');
}

/** Picks a name no object in the archive uses yet. */
export async function freshBackupName(archive: Archive, at: Date): Promise<string> {
  const base = backupNameFor(at);
  for (let n = 1; n < 100; n++) {
    const name = n === 1 ? base : `${base}-${n}`;
    if ((await archive.storage.list(backupPrefix(name))).length === 0) return name;
  }
  throw new WalvaultError('BACKUP_CONFLICT', `backup names ${base} to ${base}-99 are all taken in ${archive.storage.description}`);
}

function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value, null, 2) + '\n', 'utf8');
}

function parseJson<T>(buf: Buffer, what: string): T {
  try {
    return JSON.parse(buf.toString('utf8')) as T;
  } catch (err) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${what} is not valid JSON: ${(err as Error).message}`);
  }
}

export interface BackupEntry {
  name: string;
  complete: boolean;
  /** Present for complete backups. */
  metadata: BackupMetadata | null;
  /** Keys of every object of this backup. */
  keys: string[];
}

/** Every backup directory in the archive, complete or not. */
export async function scanBackups(archive: Archive): Promise<BackupEntry[]> {
  const objects = await archive.listAvailable(BACKUPS_PREFIX);
  const byName = new Map<string, string[]>();
  for (const o of objects) {
    const rest = o.key.slice(BACKUPS_PREFIX.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) continue;
    const name = rest.slice(0, slash);
    let keys = byName.get(name);
    if (!keys) byName.set(name, (keys = []));
    keys.push(o.key);
  }
  const entries: BackupEntry[] = [];
  for (const [name, keys] of byName) {
    const hasMarker = keys.includes(backupPrefix(name) + COMPLETE_FILE);
    entries.push({ name, complete: hasMarker, metadata: hasMarker ? await readCompleted(archive, name) : null, keys });
  }
  return entries;
}

/** Complete backups, oldest first by their stop position (never by name). */
export async function listBackups(archive: Archive): Promise<BackupMetadata[]> {
  const done = (await scanBackups(archive)).filter((e) => e.complete).map((e) => e.metadata!);
  return done.sort((a, b) => compareLsn(parseLsn(a.stopLsn), parseLsn(b.stopLsn)) || a.stoppedAt.localeCompare(b.stoppedAt));
}

function compareLsn(a: Lsn, b: Lsn): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The metadata of a complete backup; refuses an unknown or incomplete one. */
export async function readCompleted(archive: Archive, name: string): Promise<BackupMetadata> {
  checkBackupName(name);
  const key = backupPrefix(name) + COMPLETE_FILE;
  const buf = await archive.get(key);
  if (!buf) {
    const partial = await archive.storage.list(backupPrefix(name));
    throw new WalvaultError(
      'BACKUP_NOT_FOUND',
      partial.length > 0
        ? `backup ${name} is not complete (no completion marker): it is still running, waiting for its WAL, or died; it cannot be restored`
        : `no backup named ${name} in ${archive.storage.description}; run "walvault backup list" to see them`,
    );
  }
  const marker = parseJson<CompletionMarker>(buf, key);
  if (marker.name !== name || !marker.metadata || marker.metadata.name !== name) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${key} does not describe backup ${name}`);
  }
  return marker.metadata;
}

/** Stores metadata.json (immutable) and returns its SHA-256. */
export async function storeMetadata(archive: Archive, meta: BackupMetadata): Promise<string> {
  const body = encodeJson(meta);
  // The catalog stays readable without the private key: listing and retention run on the
  // backup host, which has only the public one. It holds positions and sizes, no data.
  await archive.asPlain().putImmutable(backupPrefix(meta.name) + METADATA_FILE, body);
  return createHash('sha256').update(body).digest('hex');
}

/** Writes the completion marker: from here on the backup is listed. */
export async function storeCompletion(archive: Archive, meta: BackupMetadata, metadataSha256: string): Promise<void> {
  const marker: CompletionMarker = { name: meta.name, completedAt: new Date().toISOString(), metadataSha256, metadata: meta };
  await archive.asPlain().putImmutable(backupPrefix(meta.name) + COMPLETE_FILE, encodeJson(marker));
}

/** Metadata of a backup whose stream finished but which has no completion marker yet. */
export async function readPendingMetadata(archive: Archive, name: string): Promise<{ meta: BackupMetadata; sha256: string } | null> {
  const buf = await archive.get(backupPrefix(name) + METADATA_FILE);
  if (!buf) return null;
  return { meta: parseJson<BackupMetadata>(buf, backupPrefix(name) + METADATA_FILE), sha256: createHash('sha256').update(buf).digest('hex') };
}
