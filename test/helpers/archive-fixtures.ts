/**
 * What the checked-in archive fixtures (fixtures/, docs/archive-format.md) are, shared by
 * their generator (./make-fixtures.ts) and the tests that read them
 * (test/unit/archive-fixtures.test.ts, test/integration/archive-fixtures.test.ts): where
 * they live, how their plaintexts are made, and what the small archive's table holds.
 *
 * The plaintexts are regenerated from their seeds rather than stored: index.json records
 * their SHA-256, so a test can both compare a decoded object with the digest and, when it
 * wants the bytes, make them again.
 */
import * as path from 'node:path';
import type { CodecName } from '../../src/archive/codecs';
import { FRAME_PLAINTEXT_MAX } from '../../src/archive/framed-body';
import { repoRoot } from './repo-root';

const FIXTURES_DIR = path.join(repoRoot(), 'fixtures');
/** An archive directory holding one object per codec, encryption and size, plus leases. */
export const OBJECTS_ARCHIVE = path.join(FIXTURES_DIR, 'objects', 'archive');
export const OBJECTS_INDEX = path.join(FIXTURES_DIR, 'objects', 'index.json');
export const TEST_PRIVATE_KEY = path.join(FIXTURES_DIR, 'keys', 'test-only.key');
export const TEST_PUBLIC_KEY = path.join(FIXTURES_DIR, 'keys', 'test-only.pub');
/** A complete archive written by `walvault run` and `walvault backup push`. */
export const SMALL_ARCHIVE = path.join(FIXTURES_DIR, 'archive-small');
/** What the small archive's generator recorded about it (outside the archive: verify reads every object there). */
export const SMALL_ARCHIVE_INFO = path.join(FIXTURES_DIR, 'archive-small.json');

/**
 * cluster.json of the objects archive: a made-up system identifier (no server wrote these
 * objects), which every object there is bound to.
 */
export const OBJECTS_CLUSTER = { systemId: '7000000000000000001', pgVersionNum: 150000, walSegmentSize: 16 * 1024 * 1024 } as const;

export type FixtureSize = 'empty' | 'small' | 'large';

/** Plaintext sizes: large crosses a frame boundary (two frames), so frame headers, the final bit and the trailer's frame count all matter. */
export const FIXTURE_SIZES: Record<FixtureSize, { bytes: number; seed: number }> = {
  empty: { bytes: 0, seed: 0 },
  small: { bytes: 3000, seed: 1 },
  large: { bytes: FRAME_PLAINTEXT_MAX + 4096, seed: 2 },
};

export interface ObjectFixture {
  key: string;
  codec: CodecName;
  encryption: 'none' | 'aes-256-gcm';
  size: FixtureSize;
  /** fixturePlaintext(seed, plaintextBytes) is the plaintext. */
  seed: number;
  /** Which Archive method wrote it. */
  writtenBy: 'putImmutable' | 'putSealedFile';
  plaintextBytes: number;
  plaintextSha256: string;
  /** The object file as stored, so a fixture changed in the tree is told apart from a reader that changed. */
  storedBytes: number;
  storedSha256: string;
  framed: boolean;
  /** Frames of a framed body (its trailer's count); null when unframed. */
  frames: number | null;
}

export interface ObjectsIndex {
  note: string;
  generator: string;
  plaintext: string;
  cluster: typeof OBJECTS_CLUSTER;
  keyId: string;
  objects: ObjectFixture[];
  /** Objects that are not data: leases, whose plaintext is JSON that names where they were written. */
  leases: Array<{ key: string; storedBytes: number; storedSha256: string }>;
}

/** The key of the data object for one codec, encryption and size. */
export function objectKey(codec: CodecName, encrypted: boolean, size: FixtureSize): string {
  return `data/${codec}/${encrypted ? 'aes-256-gcm' : 'plain'}/${size}`;
}

/** The object putSealedFile wrote (a spool file linked in as it is): 64-byte header, no extension. */
export const SEALED_KEY = 'data/none/plain/sealed-small';
export const SEALED_SEED = 3;

/**
 * Deterministic, compressible but not trivial plaintext: text lines of a sequence number,
 * then words drawn from a small vocabulary and a number, or a recent line's words again,
 * from a 32-bit PRNG (mulberry32) seeded with `seed`. Codecs find repeats in it without it
 * being a run of one byte.
 */
export function fixturePlaintext(seed: number, bytes: number): Buffer {
  const words = [
    'alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel',
    'india', 'juliet', 'kilo', 'lima', 'mike', 'november', 'oscar', 'papa',
    'quebec', 'romeo', 'sierra', 'tango', 'uniform', 'victor', 'whiskey', 'xray',
    'yankee', 'zulu', 'wal', 'segment', 'frame', 'trailer', 'header', 'vault',
  ];
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const out = Buffer.alloc(bytes);
  const recent: string[] = [];
  let at = 0;
  for (let line = 0; at < bytes; line++) {
    // Three lines in four repeat one of the last sixteen, as records of one kind do in WAL.
    let body: string;
    if (recent.length > 0 && next() % 4 !== 0) {
      body = recent[next() % recent.length];
    } else {
      const parts: string[] = [];
      for (let w = 0; w < 6; w++) parts.push(words[next() % words.length]);
      parts.push(String(next() % 100000));
      body = parts.join(' ');
      recent.push(body);
      if (recent.length > 16) recent.shift();
    }
    at += out.write(`${String(line).padStart(8, '0')} ${body}\n`, at, 'latin1');
  }
  return out;
}

/** The table the small archive's cluster holds, row by row, and when each row was written. */
export const SMALL_TABLE = 'fixture_rows';

export interface SmallRow {
  id: number;
  note: string;
}

/**
 * Rows 1-10 before the backup; 11-15 after it on timeline 1; 16-20 on timeline 1 after a
 * segment switch (in timeline 1's .partial, and in timeline 2's first segment); 21-25 on
 * timeline 2; 26-30 on timeline 2 after another switch, only in the archive's last .partial.
 */
export function smallTableRows(): SmallRow[] {
  const rows: SmallRow[] = [];
  for (let id = 1; id <= 30; id++) {
    const when = id <= 10 ? 'before the backup' : id <= 20 ? 'after the backup, timeline 1' : 'timeline 2';
    rows.push({ id, note: `row ${id}: ${when}` });
  }
  return rows;
}

export function insertRowsSql(from: number, to: number): string {
  const values = smallTableRows()
    .filter((r) => r.id >= from && r.id <= to)
    .map((r) => `(${r.id}, '${r.note.replace(/'/g, "''")}')`)
    .join(', ');
  return `INSERT INTO ${SMALL_TABLE} (id, note) VALUES ${values}`;
}

export interface SmallArchiveInfo {
  note: string;
  backup: string;
  systemId: string;
  pgVersionNum: number;
  compression: CodecName;
  /** Every object, its size and the SHA-256 of its stored bytes. */
  objects: Array<{ key: string; storedBytes: number; storedSha256: string }>;
}
