/**
 * Cross-checks for stored base backups that do not trust walvault's own reading code more
 * than needed: parts are fetched and joined, then the system `tar` extracts them, and every
 * file is compared with the server's backup_manifest (size and SHA-256), and the start and
 * stop positions with the backup history file the server wrote into pg_wal.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { crc32c } from '@node-rs/crc32';
import { openSiteArchive } from '../../src/archive/site-archive';
import type { BackupMetadata } from '../../src/backup/catalog';
import { chownForServer, type PgCluster } from './pg-cluster';

const run = promisify(execFile);

/** Joins each archive's parts into DIR/<archive name>, checking each part against the metadata. */
export async function fetchBackupTars(location: string, meta: BackupMetadata, dir: string, privateKeyFile?: string): Promise<string[]> {
  const archive = openSiteArchive({ archive: location, s3: {}, encryptionPrivateKeyFile: privateKeyFile }, 'read');
  const problems: string[] = [];
  try {
    fs.mkdirSync(dir, { recursive: true });
    for (const a of meta.archives) {
      const fd = fs.openSync(path.join(dir, a.name), 'w');
      try {
        for (const part of a.parts) {
          const body = await archive.get(part.key);
          if (!body) {
            problems.push(`${part.key} is missing`);
            continue;
          }
          if (body.length !== part.size) problems.push(`${part.key}: ${body.length} bytes, metadata says ${part.size}`);
          if (createHash('sha256').update(body).digest('hex') !== part.sha256) problems.push(`${part.key}: SHA-256 differs from the metadata`);
          fs.writeSync(fd, body);
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    const manifest = await archive.get(meta.manifest.key);
    if (!manifest) problems.push(`${meta.manifest.key} is missing`);
    else fs.writeFileSync(path.join(dir, 'backup_manifest'), manifest);
  } finally {
    await archive.close();
  }
  return problems;
}

/**
 * Extracts base.tar into `dataDir` and each tablespace tar into its own directory under
 * `tablespacesDir`, pointing pg_tblspc/<oid> at it (the tar's link names the server's path).
 */
export async function extractBackup(tarsDir: string, meta: BackupMetadata, dataDir: string, tablespacesDir: string): Promise<void> {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // GNU tar recognises a zstd stream (server-compressed archives) by itself.
  const base = meta.archives.find((a) => a.tablespaceOid === null)!;
  await run('tar', ['-xf', path.join(tarsDir, base.name), '-C', dataDir]);
  for (const a of meta.archives) {
    if (a.tablespaceOid === null) continue;
    const dir = path.join(tablespacesDir, a.tablespaceOid);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    await run('tar', ['-xf', path.join(tarsDir, a.name), '-C', dir]);
    const link = path.join(dataDir, 'pg_tblspc', a.tablespaceOid);
    fs.rmSync(link, { force: true });
    fs.symlinkSync(dir, link);
  }
}

interface ManifestFile {
  Path?: string;
  Size: number;
  'Checksum-Algorithm'?: string;
  Checksum?: string;
}

/**
 * A manifest checksum as the server writes it (CRC32C: its uint32's bytes, little-endian). The
 * CRC comes from the library restore uses too; the server's manifest is the reference it is
 * compared with, and test/unit/crc.test.ts checks the library against known values.
 */
function manifestChecksum(algorithm: string, data: Buffer): string | null {
  if (algorithm === 'CRC32C') {
    const out = Buffer.alloc(4);
    out.writeUInt32LE(crc32c(data));
    return out.toString('hex');
  }
  if (/^SHA(224|256|384|512)$/.test(algorithm)) return createHash(algorithm.toLowerCase()).update(data).digest('hex');
  return null;
}

/** Every file the manifest lists exists in `dataDir` with its size and checksum. */
export function compareWithManifest(dataDir: string, manifest: Buffer): { checked: number; problems: string[] } {
  const parsed = JSON.parse(manifest.toString('utf8')) as { Files: ManifestFile[] };
  const problems: string[] = [];
  let checked = 0;
  for (const f of parsed.Files) {
    if (f.Path === undefined) continue; // Encoded-Path: names that are not UTF-8; none here
    const file = path.join(dataDir, f.Path);
    let data: Buffer;
    try {
      data = fs.readFileSync(file);
    } catch (err) {
      problems.push(`${f.Path}: ${(err as Error).message}`);
      continue;
    }
    checked++;
    if (data.length !== f.Size) problems.push(`${f.Path}: ${data.length} bytes, manifest says ${f.Size}`);
    const algorithm = f['Checksum-Algorithm'] ?? 'NONE';
    const sum = manifestChecksum(algorithm, data);
    if (algorithm !== 'NONE' && sum === null) problems.push(`${f.Path}: unexpected checksum algorithm ${algorithm}`);
    else if (sum !== null && sum !== f.Checksum?.toLowerCase()) problems.push(`${f.Path}: ${algorithm} differs from the manifest`);
  }
  return { checked, problems };
}

export interface BackupHistory {
  start: string;
  stop: string;
  startTimeline: number;
  stopTimeline: number;
  label: string;
}

/** The backup history file (`<segment>.<offset>.backup`) the server wrote for the backup with this label. */
export async function backupHistoryFile(cluster: PgCluster, label: string): Promise<BackupHistory | null> {
  const walDir = path.dirname(cluster.walFilePath('000000010000000000000001'));
  for (const name of fs.readdirSync(walDir).filter((n) => n.endsWith('.backup'))) {
    const text = fs.readFileSync(path.join(walDir, name), 'utf8');
    const field = (k: string) => new RegExp(`^${k}: (.*)$`, 'm').exec(text)?.[1] ?? '';
    if (field('LABEL') !== label) continue;
    return {
      start: field('START WAL LOCATION').split(' ')[0],
      stop: field('STOP WAL LOCATION').split(' ')[0],
      startTimeline: Number(field('START TIMELINE')),
      stopTimeline: Number(field('STOP TIMELINE')),
      label,
    };
  }
  return null;
}

/** The tar itself: the file as stored, or decompressed when the server compressed it. */
export async function tarBytes(tarsDir: string, archive: { name: string; compression: 'zstd' | null }): Promise<Buffer> {
  const file = path.join(tarsDir, archive.name);
  if (!archive.compression) return fs.readFileSync(file);
  const { stdout } = await run('zstd', ['-dc', file], { encoding: 'buffer', maxBuffer: 1 << 30 });
  return stdout as unknown as Buffer;
}

/**
 * Creates tablespace `extra` in `dir` (made, and given to the server's user) with table
 * `in_extra` (20000 rows) in it; returns the tablespace's OID.
 */
export async function tablespaceWithTable(cluster: PgCluster, dir: string): Promise<string> {
  fs.mkdirSync(dir);
  chownForServer(dir);
  await cluster.query(`CREATE TABLESPACE extra LOCATION '${dir}'`);
  await cluster.query(`CREATE TABLE in_extra TABLESPACE extra AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 20000) g`);
  return String((await cluster.query(`SELECT oid::text AS oid FROM pg_tablespace WHERE spcname = 'extra'`))[0].oid);
}
