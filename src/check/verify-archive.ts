/**
 * `walvault verify`: reads every stored object as it arrives (memory stays at a few frames
 * per object whatever its size; SHA-256 in worker threads) and checks it on its own bytes
 * (envelope header CRC, size, plaintext SHA-256; for an encrypted object without the private
 * key, the trailer's SHA-256 of the stored bytes), that it is the object its name says (its
 * envelope's binding, when it has one, names this key and cluster), and every WAL file
 * against its own name (../wal/wal-identity.ts: a segment's page headers carry its position,
 * timeline and cluster; a history file's parents are below its timeline). Each bad or
 * misplaced object is reported by key; nothing is written.
 */
import type { Archive } from '../archive/archive';
import type { EnvelopeHeader } from '../archive/envelope';
import { workerSha256 } from '../archive/read/hash-worker';
import { isWalvaultError, WalvaultError } from '../errors';
import { runPool } from '../util/run-pool';
import { walIdentityChecker } from '../wal/wal-identity';

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
  if (!cluster) throw new WalvaultError('ARCHIVE_NOT_FOUND', `${archive.storage.description} has no cluster.json: it is not a walvault archive (or not this one)`, { fix: `check the location` });
  const keys = (await archive.storage.list('')).map((o) => o.key);
  const report: VerifyReport = { archive: archive.storage.description, checkedAt: new Date().toISOString(), objects: keys.length, storedBytes: 0, checkedWithoutKey: 0, bad: [], ok: true };

  const verifyOne = async (key: string): Promise<void> => {
    try {
      // WAL files are checked against their names as their plaintext streams past.
      const identity = key.startsWith('wal/') ? (h: EnvelopeHeader) => walIdentityChecker(key.slice(4), h.plaintextSize, cluster, key) : undefined;
      const got = await archive.checkObject(key, identity, { hasher: workerSha256 });
      if (!got) return; // deleted since the listing (retention)
      report.storedBytes += got.storedBytes;
      if (!got.plaintextChecked) report.checkedWithoutKey++;
    } catch (err) {
      // Damage shows as a bad envelope, bad pages, or (encrypted) a frame failing authentication;
      // an object under another's name by its binding or its content.
      if (!isWalvaultError(err) || !['ARCHIVE_CORRUPT', 'WAL_BAD_PAGE', 'ARCHIVE_AUTH_FAILED', 'ARCHIVE_MISPLACED'].includes(err.code)) throw err;
      report.bad.push({ key, problem: err.message });
    }
  };
  let done = 0;
  await runPool(keys, CONCURRENCY, async (key) => {
    await verifyOne(key);
    onProgress?.(++done, keys.length);
  });
  report.bad.sort((a, b) => (a.key < b.key ? -1 : 1));
  report.ok = report.bad.length === 0;
  return report;
}

export function formatVerifyReport(r: VerifyReport): string {
  const lines = [`archive ${r.archive}: ${r.objects} objects, ${(r.storedBytes / 1048576).toFixed(1)} MiB read: ${r.ok ? 'all good' : `${r.bad.length} bad`}`];
  if (r.checkedWithoutKey > 0) lines.push(`note: ${r.checkedWithoutKey} encrypted objects checked by their stored checksum only; give --private-key to check their contents too`);
  for (const b of r.bad) lines.push(`bad: ${b.key}: ${b.problem}`);
  return lines.join('\n') + '\n';
}
