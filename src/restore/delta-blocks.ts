/**
 * A delta restore by blocks: with a block index for each of the backup's tars
 * (../backup/block-index.ts), the files there are compared with the backup block by block,
 * and only the blocks that differ are fetched (./delta-fetch.ts), out of the frames of the
 * parts that hold them: the rest of the backup is never read or decompressed.
 *
 * 1. The indexes are read (each checked against the size and SHA-256 the metadata records)
 *    and must name every file of the manifest with its size; if one cannot be used, nothing
 *    has been written yet and restore reads the whole backup instead.
 * 2. pg_control is set aside (./delta.ts); what the backup does not have as a file or
 *    directory goes: other files, links, anything else, and a directory where the backup has
 *    a file.
 * 3. Every file the backup has and the directory holds, whatever its size, is read by the
 *    writer threads, each block's XXH64 computed and compared with the index's (a 64-bit
 *    check: two different blocks agree by chance about once in 2^64). A block that
 *    differs, and every block past a file's end, is to be fetched; a file the directory lacks
 *    is fetched whole.
 * 4. Each fetched block is checked against the index (CRC-32C and XXH64) before it is written; a file that
 *    shrank is cut to its size; then every file is made durable, in one syncfs per file system.
 *
 * The manifest check is the one a full restore makes: each file's CRC-32C, here folded from
 * its blocks' (../util/crc32c-combine.ts), since every block on disk now has the index's
 * CRCs, against the manifest's. It proves the index and the manifest agree on every file.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { ArchiveSet } from '../archive/archive-set';
import { decodeBlockIndex, type IndexMember as BlockIndexMember } from '../backup/block-index';
import { isIncremental, type BackupArchive, type BackupMetadata } from '../backup/catalog';
import { WalvaultError } from '../errors';
import { formatBytes, Progress } from '../observe/progress';
import { BLOCK_HASH_LENGTH, indexCrc32c } from '../util/block-hash';
import { crc32cCombine, crc32cCombiner } from '../util/crc32c-combine';
import { runPool } from '../util/run-pool';
import { syncFilesystems } from '../util/sync-filesystem';
import { DELTA_OLD_CONTROL, extraDirs, removeEntries, scanTree, setControlAside, type DeltaSummary, type ExistingEntry, type ManifestFiles } from './delta';
import { BlockFetcher, type FileRuns } from './delta-fetch';
import { PENDING_CONTROL_FILE } from './extract';
import type { FileWriterPool, WrittenFile } from './file-writers';
import { crc32cHex } from './manifest-checksum';

const CONTROL_FILE = 'global/pg_control';
/** restore reads the whole backup then: the index only spares work. */
const UNUSABLE_INDEX_FIX = 'a delta reads the whole backup instead; "walvault verify" reports a damaged object';

/** Why a delta restore of this backup cannot go by blocks (it then reads the whole backup), or null. */
export function blockDeltaUnusable(archive: Archive, meta: BackupMetadata, manifest: ManifestFiles): string | null {
  if (archive instanceof ArchiveSet) return 'the site has several archives';
  if (isIncremental(meta)) return 'it is an incremental backup';
  if (manifest.algorithm !== 'CRC32C') return `its manifest's checksums are ${manifest.algorithm}, not CRC32C`;
  const bare = meta.archives.find((a) => !a.index);
  if (bare) return `${bare.name} has no block index (${bare.compression ? 'the server compressed it' : 'taken before walvault kept one'})`;
  return null;
}

/** One tar of the backup with its index, and where its entries go. */
interface IndexedTar {
  tar: BackupArchive;
  members: BlockIndexMember[];
  blockSize: number;
  root: string;
  /** How its paths are named in the manifest ('' or `pg_tblspc/<oid>/`). */
  prefix: string;
  isBase: boolean;
}

/** A file of the backup: where it goes, and its entry in its tar's index. */
interface BackupFile {
  key: string;
  abs: string;
  member: BlockIndexMember;
  tar: number;
}

async function readIndexes(archive: Archive, meta: BackupMetadata, roots: ReadonlyMap<string | null, string>): Promise<IndexedTar[]> {
  const out: IndexedTar[] = [];
  for (const tar of meta.archives) {
    const ref = tar.index!;
    const bytes = await archive.get(ref.key);
    if (!bytes) throw new WalvaultError('ARCHIVE_CORRUPT', `${ref.key} is missing in ${archive.storage.description}`, { fix: UNUSABLE_INDEX_FIX });
    if (bytes.length !== ref.size || createHash('sha256').update(bytes).digest('hex') !== ref.sha256) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${ref.key} in ${archive.storage.description} is not the block index backup ${meta.name} records (its size or SHA-256 differs)`, { fix: UNUSABLE_INDEX_FIX });
    }
    const index = decodeBlockIndex(bytes, ref.key);
    const isBase = tar.tablespaceOid === null;
    out.push({ tar, members: index.members, blockSize: index.blockSize, root: roots.get(tar.tablespaceOid)!, prefix: isBase ? '' : `pg_tblspc/${tar.tablespaceOid}/`, isBase });
  }
  return out;
}

/** Every file of the backup by manifest path; refuses indexes that do not name the manifest's files as it does. */
function backupFiles(tars: readonly IndexedTar[], manifest: ManifestFiles, label: string): Map<string, BackupFile> {
  const files = new Map<string, BackupFile>();
  tars.forEach((t, i) => {
    for (const m of t.members) {
      if (m.type !== 'file') continue;
      const key = t.prefix + m.path;
      const rel = t.isBase && m.path === CONTROL_FILE ? PENDING_CONTROL_FILE : m.path;
      files.set(key, { key, abs: path.join(t.root, rel), member: m, tar: i });
    }
  });
  for (const f of manifest.files) {
    const got = files.get(f.path);
    if (!got || got.member.size !== f.size) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `the block index of backup ${label} ${got ? `gives ${f.path} ${got.member.size} bytes, its manifest ${f.size}` : `lacks ${f.path}, which its manifest lists`}`, { fix: UNUSABLE_INDEX_FIX });
    }
  }
  return files;
}

/** The CRC-32C of a file from its blocks' CRCs in the index (the first 4 of each 8 bytes). */
function foldedCrc(m: BlockIndexMember, blockSize: number, wholeBlock: (crcA: number, crcB: number) => number): number {
  let crc = 0;
  for (let b = 0, at = 0; at < m.size; b++, at += blockSize) {
    const crcB = indexCrc32c(m.hashes, b);
    crc = at + blockSize <= m.size ? wholeBlock(crc, crcB) : crc32cCombine(crc, crcB, m.size - at);
  }
  return crc;
}

/**
 * The runs of blocks [from, to) of a file to fetch: those whose XXH64 there (`have`, 8 bytes
 * a block; null: the file is not there) is not the index's (`want`, its 12-byte records),
 * and those past what is there.
 */
export function differingRuns(want: Buffer, have: Buffer | null): Array<[number, number]> {
  const blocks = want.length / BLOCK_HASH_LENGTH;
  const runs: Array<[number, number]> = [];
  let start = -1;
  for (let b = 0; b <= blocks; b++) {
    const at = BLOCK_HASH_LENGTH * b + 4;
    // Two 32-bit reads, not Buffer#compare: this runs for every block of the data directory.
    const differs = b < blocks && (have === null || 8 * b + 8 > have.length || want.readInt32LE(at) !== have.readInt32LE(8 * b) || want.readInt32LE(at + 4) !== have.readInt32LE(8 * b + 4));
    if (differs && start < 0) start = b;
    if (!differs && start >= 0) {
      runs.push([start, b]);
      start = -1;
    }
  }
  return runs;
}

/** The tars' directories and links, as they have them (links to tablespaces go to their directories here): the files go into them. */
async function placeDirsAndLinks(tars: readonly IndexedTar[], roots: ReadonlyMap<string | null, string>, dirs: Set<string>): Promise<void> {
  for (const t of tars) {
    await fsp.mkdir(t.root, { recursive: true, mode: 0o700 });
    await fsp.chmod(t.root, 0o700);
    for (const m of t.members) {
      const abs = path.join(t.root, m.path);
      if (m.type === 'directory') {
        await fsp.mkdir(abs, { recursive: true, mode: m.mode || 0o700 });
        await fsp.chmod(abs, m.mode || 0o700);
        dirs.add(abs);
      } else if (m.type === 'symlink') {
        await fsp.mkdir(path.dirname(abs), { recursive: true, mode: 0o700 });
        const oid = t.isBase && /^pg_tblspc\/[0-9]+$/.test(m.path) ? m.path.slice('pg_tblspc/'.length) : null;
        await fsp.symlink(oid !== null ? (roots.get(oid) ?? m.target!) : m.target!, abs);
      }
    }
  }
}

/** A backup's block indexes, read and checked, and its files by manifest path. */
export interface BlockIndexes {
  tars: IndexedTar[];
  files: Map<string, BackupFile>;
}

/**
 * Step 1, before anything is written: an index missing, damaged or at odds with the manifest
 * throws ARCHIVE_CORRUPT, and the caller can still read the whole backup instead.
 */
export async function loadBlockIndexes(archive: Archive, meta: BackupMetadata, manifest: ManifestFiles, roots: ReadonlyMap<string | null, string>): Promise<BlockIndexes> {
  const tars = await readIndexes(archive, meta, roots);
  return { tars, files: backupFiles(tars, manifest, meta.name) };
}

export interface BlockDeltaResult {
  files: Map<string, WrittenFile>;
  dirs: Set<string>;
  summary: DeltaSummary;
}

/**
 * Steps 2-4 after checkDeltaTarget, with the indexes loadBlockIndexes gave. `roots`:
 * tablespace OID (null: the data directory) -> its directory.
 */
export async function restoreDeltaByBlocks(o: {
  archive: Archive;
  meta: BackupMetadata;
  indexes: BlockIndexes;
  roots: ReadonlyMap<string | null, string>;
  writers: FileWriterPool;
  log: Logger;
  progressOut?: NodeJS.WriteStream;
}): Promise<BlockDeltaResult> {
  const { meta, log } = o;
  const { tars, files } = o.indexes;
  const dataDir = o.roots.get(null)!;
  await setControlAside(dataDir);

  const links = new Set<string>();
  for (const t of tars) for (const m of t.members) if (m.type === 'symlink') links.add(t.prefix + m.path);
  const existing = (await Promise.all(tars.map((t) => scanTree(t.root, t.prefix)))).flat();
  const check: Array<{ e: ExistingEntry; f: BackupFile }> = [];
  const remove: ExistingEntry[] = [];
  const left: ExistingEntry[] = [];
  const removedDirs: string[] = [];
  for (const e of [...existing].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    if (e.path === DELTA_OLD_CONTROL || removedDirs.some((d) => e.path.startsWith(`${d}/`))) continue;
    const f = files.get(e.path);
    if (e.kind === 'file' && f && e.path !== CONTROL_FILE) check.push({ e, f });
    else if (e.kind === 'dir' && !f && !links.has(e.path)) left.push(e);
    else {
      remove.push(e);
      if (e.kind === 'dir') removedDirs.push(e.path);
    }
  }

  // Step 3 starts at once (it only reads), while what goes goes and the directories are
  // made; nothing is decided (no file created or fetched into) before they are.
  const blockSize = tars[0]?.blockSize ?? 8192;
  const runs = new Map<string, FileRuns>();
  let fetchedBytes = 0;
  const fetcher = new BlockFetcher({ archive: o.archive, writers: o.writers, tars: tars.map((t) => ({ tar: t.tar, blockSize: t.blockSize })), onFetched: (n) => void (fetchedBytes = n) });
  const inTarOrder = tars.map((_, t) => [...files.values()].filter((f) => f.tar === t).sort((a, b) => a.member.offset - b.member.offset));
  const next = tars.map(() => 0);
  const decided = new Set<string>();
  const decide = (f: BackupFile, r: FileRuns | null) => {
    if (r) {
      runs.set(f.key, r);
      fetcher.add(r);
    }
    decided.add(f.key);
    const order = inTarOrder[f.tar];
    while (next[f.tar] < order.length && decided.has(order[next[f.tar]].key)) next[f.tar]++;
    fetcher.decidedTo(f.tar, order[next[f.tar]]?.member.offset ?? Infinity);
  };
  check.sort((a, b) => a.f.tar - b.f.tar || a.f.member.offset - b.f.member.offset);
  const checkBytes = check.reduce((s, c) => s + c.e.size, 0);
  let checkedBytes = 0;
  let checked = 0;
  let kept = 0;
  let keptBytes = 0;
  const progress = new Progress({
    what: `delta against ${meta.name}`,
    log,
    out: o.progressOut,
    detail: () => `${checked} of ${check.length} files there checked, ${kept} kept whole; ${formatBytes(fetchedBytes)} of ${formatBytes(fetcher.stats.bytes)} decided so far fetched`,
  });
  progress.setTotal(checkBytes);
  let placed: () => void = () => undefined;
  let notPlaced: (err: Error) => void = () => undefined;
  const dirsMade = new Promise<void>((resolve, reject) => ((placed = resolve), (notPlaced = reject)));
  dirsMade.catch(() => undefined); // awaited by every file checked
  const checking = o.writers.digestFiles(
    check.map((c) => c.e.abs),
    async (i, facts) => {
      await dirsMade;
      const { f } = check[i];
      checked++;
      progress.update((checkedBytes += facts.size));
      const r = differingRuns(f.member.hashes, facts.blocks ?? null);
      const differ = r.reduce((s, [a, b]) => s + Math.min(f.member.size, b * blockSize) - a * blockSize, 0);
      keptBytes += f.member.size - differ;
      if (r.length === 0 && facts.size === f.member.size) kept++;
      decide(f, r.length === 0 && facts.size === f.member.size ? null : { file: f.abs, mode: f.member.mode || 0o600, tar: f.tar, member: f.member, runs: r, existingSize: facts.size });
    },
    blockSize,
    check.map((c) => c.e.size),
  );
  checking.catch(() => undefined); // awaited below, once the directories are made
  const dirs = new Set<string>(tars.map((t) => t.root));
  try {
    try {
      await removeEntries(remove);
      await placeDirsAndLinks(tars, o.roots, dirs);
      for (const f of files.values()) dirs.add(path.dirname(f.abs));
      const there = new Set(check.map((c) => c.f.key));
      for (const f of files.values()) {
        if (!there.has(f.key)) decide(f, { file: f.abs, mode: f.member.mode || 0o600, tar: f.tar, member: f.member, runs: f.member.size > 0 ? [[0, f.member.hashes.length / BLOCK_HASH_LENGTH]] : [], existingSize: null });
      }
      placed();
    } catch (err) {
      notPlaced(err as Error);
      await checking.catch(() => undefined);
      throw err;
    }
    await checking;
    log.info({ there: existing.length, checked, kept, removed: remove.length, toFetch: runs.size }, 'delta: files there checked block by block against the block index');
    await fetcher.finish();
  } catch (err) {
    await fetcher.abandon();
    throw err;
  } finally {
    progress.finish();
  }
  const fetched = fetcher.stats;
  // A file there already with the backup's mode is left as it is; one created here is set
  // (its creation mode went through the umask).
  const modeThere = new Map(check.map((c) => [c.f.key, c.e.mode]));
  await runPool(
    [...files.values()].filter((f) => modeThere.get(f.key) !== (f.member.mode || 0o600)),
    16,
    (f) => fsp.chmod(f.abs, f.member.mode || 0o600),
  );
  const extra = extraDirs(left, dirs);
  await removeEntries(extra);
  // Every file, kept (read, not written: it may hold bytes a crashed server left only in the
  // page cache) or written, made durable at once; each file's CRC-32C folded meanwhile.
  const durable = syncFilesystems(tars.map((t) => t.root), [...files.values()].map((f) => f.abs));
  durable.catch(() => undefined); // awaited below
  const written = new Map<string, WrittenFile>();
  const combiners = new Map(tars.map((t) => [t.blockSize, crc32cCombiner(t.blockSize)]));
  for (const f of files.values()) {
    const bs = tars[f.tar].blockSize;
    written.set(f.key, { size: f.member.size, checksum: crc32cHex(foldedCrc(f.member, bs, combiners.get(bs)!)) });
  }
  await durable;
  log.info({ kept, keptBytes, fetchedBlocks: fetched.blocks, fetchedBytes: formatBytes(fetched.bytes) }, 'delta: differing blocks fetched');
  return {
    files: written,
    dirs,
    summary: {
      checked,
      kept,
      keptBytes,
      fetched: runs.size,
      fetchedBytes: fetched.bytes,
      patched: [...runs.values()].filter((r) => r.existingSize !== null).length,
      patchedBytesWritten: fetched.patchedBytes,
      removed: remove.length + extra.length,
    },
  };
}
