/**
 * The ledger's rows as the code uses them, and their mapping from the rows SQLite returns
 * (LSNs stored as X/Y text: ./migrations.ts says why).
 */
import { parseLsn } from '../wal/lsn';

export type SegmentState = 'receiving' | 'complete' | 'archived';

export interface SiteRow {
  site: string;
  systemId: string;
  timeline: number;
  walSegmentSize: number;
  serverVersionNum: number;
  receivedLsn: bigint;
  fsyncedLsn: bigint;
  archivedLsn: bigint;
}

export interface SegmentRow {
  site: string;
  timeline: number;
  segNo: bigint;
  name: string;
  startLsn: bigint;
  size: number;
  state: SegmentState;
  receivedBytes: number;
  sha256: string | null;
  objectKey: string | null;
  attempts: number;
  lastError: string | null;
}

export interface PartialRow {
  timeline: number;
  segNo: bigint;
  name: string;
  bytes: number;
  sha256: string;
}

export interface EventRow {
  site: string;
  at: string;
  level: 'info' | 'warn' | 'error';
  code: string;
  message: string;
}

// Raw rows come from statements with safeIntegers on, so INTEGER columns arrive as bigint.
export interface RawSite {
  site: string;
  system_id: string;
  timeline: bigint;
  wal_segment_size: bigint;
  server_version_num: bigint;
  received_lsn: string;
  fsynced_lsn: string;
  archived_lsn: string;
}

export interface RawSegment {
  site: string;
  timeline: bigint;
  seg_no: bigint;
  name: string;
  start_lsn: string;
  size: bigint;
  state: SegmentState;
  received_bytes: bigint;
  sha256: string | null;
  object_key: string | null;
  attempts: bigint;
  last_error: string | null;
}

export interface RawPartial {
  timeline: bigint;
  seg_no: bigint;
  name: string;
  bytes: bigint;
  sha256: string;
}

export function toSiteRow(r: RawSite): SiteRow {
  return {
    site: r.site,
    systemId: r.system_id,
    timeline: Number(r.timeline),
    walSegmentSize: Number(r.wal_segment_size),
    serverVersionNum: Number(r.server_version_num),
    receivedLsn: parseLsn(r.received_lsn),
    fsyncedLsn: parseLsn(r.fsynced_lsn),
    archivedLsn: parseLsn(r.archived_lsn),
  };
}

export function toSegmentRow(r: RawSegment): SegmentRow {
  return {
    site: r.site,
    timeline: Number(r.timeline),
    segNo: BigInt(r.seg_no),
    name: r.name,
    startLsn: parseLsn(r.start_lsn),
    size: Number(r.size),
    state: r.state,
    receivedBytes: Number(r.received_bytes),
    sha256: r.sha256,
    objectKey: r.object_key,
    attempts: Number(r.attempts),
    lastError: r.last_error,
  };
}

export function toPartialRow(r: RawPartial): PartialRow {
  return { timeline: Number(r.timeline), segNo: BigInt(r.seg_no), name: r.name, bytes: Number(r.bytes), sha256: r.sha256 };
}
