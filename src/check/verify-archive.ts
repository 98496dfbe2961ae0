/**
 * `walvault verify`: reads every stored object and checks it on its own bytes (envelope
 * header CRC, size, plaintext SHA-256; for an encrypted object without the private key, the
 * trailer's SHA-256 of the stored bytes), and every WAL segment's page headers against the
 * archive's cluster (system identifier, segment and block size, the timeline in its name).
 * Each bad object is reported by key; nothing is written.
 */
import type { Archive } from '../archive/archive';
import { isWalvaultError, WalvaultError } from '../errors';
import { isSegmentFileName } from '../wal/lsn';
import { checkWalFile } from '../wal/page-header';

export interface VerifyReport {
  archive: string;
  checkedAt: string;
  objects: number;
  storedBytes: number;
  /** Encrypted objects checked without their plaintext (no private key given). */
  checkedWithoutKey: number;
  bad: Array<{ key: string; problem: string }>;
  ok: boolean;
}

/** Objects read at once. */
const CONCURRENCY = 4;

export async function verifyArchive(archive: Archive, onProgress?: (done: number, total: number) => void): Promise<VerifyReport> {
  const cluster = await archive.readCluster();
  if (!cluster) throw new WalvaultError('ARCHIVE_NOT_FOUND', `${archive.storage.description} has no cluster.json: it is not a walvault archive (or not this one); check the location`);
  const systemId = BigInt(cluster.systemId);
  const keys = (await archive.storage.list('')).map((o) => o.key);
  const report: VerifyReport = { archive: archive.storage.description, checkedAt: new Date().toISOString(), objects: keys.length, storedBytes: 0, checkedWithoutKey: 0, bad: [], ok: true };

  const verifyOne = async (key: string): Promise<void> => {
    try {
      const got = await archive.checkObject(key);
      if (!got) return; // deleted since the listing (retention)
      report.storedBytes += got.storedBytes;
      if (got.plaintext === null) {
        report.checkedWithoutKey++;
        return;
      }
      const name = key.startsWith('wal/') ? key.slice(4) : '';
      if (isSegmentFileName(name) || /^[0-9A-F]{24}\.partial$/.test(name)) checkWal(got.plaintext, name, key, systemId, cluster.walSegmentSize);
    } catch (err) {
      // Damage shows as a bad envelope, bad pages, or (encrypted) a frame failing authentication.
      if (!isWalvaultError(err) || !['ARCHIVE_CORRUPT', 'WAL_BAD_PAGE', 'ARCHIVE_AUTH_FAILED'].includes(err.code)) throw err;
      report.bad.push({ key, problem: err.message });
    }
  };
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < keys.length) {
      await verifyOne(keys[next++]);
      onProgress?.(++done, keys.length);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  report.bad.sort((a, b) => (a.key < b.key ? -1 : 1));
  report.ok = report.bad.length === 0;
  return report;
}

function checkWal(data: Buffer, name: string, key: string, systemId: bigint, segSize: number): void {
  const h = checkWalFile(data, name, key);
  if (h.systemId !== systemId) throw new WalvaultError('WAL_BAD_PAGE', `${key} belongs to database system ${h.systemId}, but the archive to ${systemId}`);
  if (h.segSize !== segSize) throw new WalvaultError('WAL_BAD_PAGE', `${key} says segments are ${h.segSize} bytes, but the archive's are ${segSize}`);
}

export function formatVerifyReport(r: VerifyReport): string {
  const lines = [`archive ${r.archive}: ${r.objects} objects, ${(r.storedBytes / 1048576).toFixed(1)} MiB read: ${r.ok ? 'all good' : `${r.bad.length} bad`}`];
  if (r.checkedWithoutKey > 0) lines.push(`note: ${r.checkedWithoutKey} encrypted objects checked by their stored checksum only; give --private-key to check their contents too`);
  for (const b of r.bad) lines.push(`bad: ${b.key}: ${b.problem}`);
  return lines.join('\n') + '\n';
}
