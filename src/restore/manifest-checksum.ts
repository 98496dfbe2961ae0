/**
 * The per-file checksums of a PostgreSQL backup manifest ("Checksum-Algorithm" and
 * "Checksum" of each entry in "Files"), computed incrementally so a restore can check each
 * file as it writes it.
 *
 * "Checksum" is the checksum's bytes in hex. For the SHA-2 family those are the digest. For
 * CRC32C the server copies its in-memory uint32 (checksum_helper.c, pg_checksum_final), so
 * the bytes are the CRC little-endian (PostgreSQL runs on little-endian hosts here; a
 * big-endian server would write them the other way round, which is not supported).
 * CRC32C is what walvault asks for (PostgreSQL's default, and ~5x faster than SHA-256 here:
 * the SSE4.2 instruction through @node-rs/crc32).
 */
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';

export type ManifestChecksumAlgorithm = 'CRC32C' | 'SHA224' | 'SHA256' | 'SHA384' | 'SHA512' | 'NONE';

export const MANIFEST_CHECKSUM_ALGORITHMS: readonly ManifestChecksumAlgorithm[] = ['CRC32C', 'SHA224', 'SHA256', 'SHA384', 'SHA512', 'NONE'];

export interface IncrementalChecksum {
  update(bytes: Uint8Array): void;
  /** Hex, as the manifest writes it; '' for NONE. */
  digest(): string;
}

export function isManifestChecksumAlgorithm(s: string): s is ManifestChecksumAlgorithm {
  return (MANIFEST_CHECKSUM_ALGORITHMS as readonly string[]).includes(s);
}

/** A CRC-32C register as the manifest writes it: its bytes little-endian, in hex. */
export function crc32cHex(crc: number): string {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(crc >>> 0);
  return out.toString('hex');
}

export function newChecksum(algorithm: ManifestChecksumAlgorithm): IncrementalChecksum {
  if (algorithm === 'NONE') return { update: () => undefined, digest: () => '' };
  if (algorithm === 'CRC32C') {
    let crc = 0;
    return {
      update(bytes) {
        crc = crc32c(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), crc);
      },
      digest: () => crc32cHex(crc),
    };
  }
  const h = createHash(algorithm.toLowerCase());
  return {
    update: (bytes) => void h.update(bytes),
    digest: () => h.digest('hex'),
  };
}
