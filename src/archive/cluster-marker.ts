/**
 * cluster.json, the archive's marker: which database system the archive belongs to, and how
 * it stores objects (./archive-settings.ts). Written once, when the archive is claimed, as
 * JSON in a plain envelope, so that it reads without the private key (docs/archive-format.md,
 * section 10):
 *
 *   { "systemId": "<decimal uint64>", "pgVersionNum": <int>, "walSegmentSize": <bytes>,
 *     "createdAt": "<ISO 8601>", "settings": { "compression": <codec>, "encryption": null | {...} } }
 */
import { WalvaultError } from '../errors';
import { isValidSegmentSize } from '../wal/lsn';
import { parseRecordedSettings, type RecordedSettings } from './archive-settings';
import { bindingExtension } from './binding';
import { encodeEnvelope } from './envelope';
import { CLUSTER_KEY } from './layout';

export interface ClusterInfo {
  /** Decimal uint64, as IDENTIFY_SYSTEM prints it. */
  systemId: string;
  pgVersionNum: number;
  walSegmentSize: number;
  createdAt?: string;
  /** How the archive stores objects, as recorded at its creation (./archive-settings.ts). */
  settings?: RecordedSettings;
}

const UINT64_MAX = (1n << 64n) - 1n;

/** The marker as stored: bound to its key, to no cluster (it is what names the cluster). */
export function encodeClusterMarker(marker: ClusterInfo): Buffer {
  return encodeEnvelope(Buffer.from(JSON.stringify(marker, null, 2) + '\n', 'utf8'), bindingExtension(CLUSTER_KEY, null));
}

/** Refuses an archive `stored` for another cluster than `ours`; `desc` names the archive. */
export function assertSameCluster(stored: ClusterInfo, ours: ClusterInfo, desc: string): void {
  if (stored.systemId !== ours.systemId) {
    throw new WalvaultError(
      'ARCHIVE_OTHER_CLUSTER',
      `archive ${desc} belongs to database system ${stored.systemId}, but the server is ${ours.systemId}: use a separate archive for each cluster`,
    );
  }
  if (stored.walSegmentSize !== ours.walSegmentSize) {
    // wal_segment_size is fixed at initdb, so this is not the cluster that made the archive.
    throw new WalvaultError(
      'ARCHIVE_OTHER_CLUSTER',
      `archive ${desc} was created for database system ${stored.systemId} with wal_segment_size ${stored.walSegmentSize} bytes, ` +
        `but the server reports ${ours.walSegmentSize} bytes: this is not the same cluster`, { fix: `use a separate archive for each cluster` },
    );
  }
}

function isUint64Decimal(text: unknown): text is string {
  return typeof text === 'string' && /^\d{1,20}$/.test(text) && BigInt(text) <= UINT64_MAX;
}

function clusterInfoProblem(info: Record<string, unknown>): string | null {
  if (!isUint64Decimal(info.systemId)) return `systemId ${JSON.stringify(info.systemId)} is not a decimal uint64`;
  if (!Number.isInteger(info.pgVersionNum) || (info.pgVersionNum as number) <= 0) {
    return `pgVersionNum ${JSON.stringify(info.pgVersionNum)} is not a positive integer`;
  }
  if (!isValidSegmentSize(info.walSegmentSize as number)) {
    return `walSegmentSize ${JSON.stringify(info.walSegmentSize)} is not a power of two from 1 MiB to 1 GiB`;
  }
  if (info.createdAt !== undefined && typeof info.createdAt !== 'string') return 'createdAt is not a string';
  return null;
}

export function checkClusterInfo(info: ClusterInfo): void {
  const problem = clusterInfoProblem(info as unknown as Record<string, unknown>);
  if (problem) throw new WalvaultError('INTERNAL', `invalid cluster identity: ${problem}`);
}

export function parseClusterInfo(plaintext: Buffer, label: string): ClusterInfo {
  let value: unknown;
  try {
    value = JSON.parse(plaintext.toString('utf8'));
  } catch (err) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: not a JSON object`);
  }
  const obj = value as Record<string, unknown>;
  const problem = clusterInfoProblem(obj);
  if (problem) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${problem}`);
  const info: ClusterInfo = {
    systemId: obj.systemId as string,
    pgVersionNum: obj.pgVersionNum as number,
    walSegmentSize: obj.walSegmentSize as number,
  };
  if (typeof obj.createdAt === 'string') info.createdAt = obj.createdAt;
  const settings = parseRecordedSettings(obj.settings, label);
  if (settings) info.settings = settings;
  return info;
}
