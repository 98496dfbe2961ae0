/**
 * `walvault restore`: one complete backup into a data directory, checked file by file
 * against the server's backup manifest, then made ready to recover from the archive.
 *
 * Parts are read several at once, each as it arrives (verified by its envelope, frame by
 * frame, whose proven SHA-256 must also be the one the metadata records), decompressed into
 * shared-memory slabs when the server compressed the archive, parsed here and written by
 * writer threads that hash and fsync each file. Only when every file matches the manifest are the recovery settings
 * written and pg_control put in place: until then no server can start on the directory.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { ArchiveSet } from '../archive/archive-set';
import { workerSha256 } from '../archive/read/hash-worker';
import { ReadAhead, type BlockSource } from '../archive/read/read-ahead';
import { chainOf, isIncremental, listBackups, readCompleted, type BackupArchive, type BackupMetadata } from '../backup/catalog';
import { isWalvaultError, WalvaultError } from '../errors';
import { formatBytes, Progress } from '../observe/progress';
import { parseLsn } from '../wal/lsn';
import { Extractor, PENDING_CONTROL_FILE, syncDirs, type ExtractedFile } from './extract';
import { FileWriterPool } from './file-writers';
import { compareWithManifest, parseManifest, type ParsedManifest } from './manifest-files';
import { recoverySettings, type RecoveryTarget } from './recovery-settings';
import { SlabRing } from './slab-ring';
import { fillSlabs } from './tar-slabs';
import { PartPrefetch } from './part-prefetch';
import { TarReader, type TarSink } from '../util/tar-reader';
import { chainManifest, fileFacts, type FileFacts } from './chain-manifest';
import { BLOCK_SIZE, ChainPatcher } from './chain-patcher';
import { checkDeltaRoots, checkDeltaTarget, dropOldControl, extraDirs, removeEntries, startDelta, type DeltaStart, type DeltaSummary } from './delta';
import { blockDeltaUnusable, loadBlockIndexes, restoreDeltaByBlocks, type BlockIndexes } from './delta-blocks';
import { isEmptyDir, prepareDir } from './target-dir';

/** Parts read at once: the one being extracted and those after it. */
const PARTS_AHEAD = 4;
/** Bytes of each part that may wait ahead of the extraction (a whole part at the default part size). */
const PART_AHEAD_BYTES = 4 * 1024 * 1024;
/** Tar bytes in flight to the writer threads: SLABS x SLAB_SIZE. */
const SLABS = 24;
/** Slabs hold tar bytes and, first, the parts' bytes as read (./tar-slabs.ts). */
const SLAB_SIZE = 1024 * 1024;
/** Slabs the parts read ahead may hold at once (a part's last block may be partial). */
const AHEAD_SLABS = PARTS_AHEAD * (PART_AHEAD_BYTES / SLAB_SIZE + 2);

export interface RestoreOptions {
  archive: Archive;
  backup: string;
  targetDir: string;
  target: RecoveryTarget;
  standby: boolean;
  primaryConninfo?: string;
  /** Writes archive_mode = off: a restored copy must not archive into the source's archive (its system id is the same). */
  archiveOff?: boolean;
  force: boolean;
  /**
   * Restore into a stopped cluster's data directory, keeping the files that match the
   * backup (./delta.ts); with `force`, also one of another cluster.
   */
  delta?: boolean;
  tablespaceMap: Map<string, string>;
  /** The full restore_command line. */
  restoreCommand: string;
  log: Logger;
  progressOut?: NodeJS.WriteStream;
}

export interface RestoreResult {
  meta: BackupMetadata;
  files: number;
  bytes: number;
  tablespaces: Array<{ oid: string; dir: string }>;
  /** A delta restore's counts. */
  delta?: DeltaSummary;
}

/** The backup a restore starts from: by name, or the newest that finished before the target. */
export async function chooseBackup(archive: Archive, which: string, target: RecoveryTarget): Promise<BackupMetadata> {
  if (which !== 'LATEST') return readCompleted(archive, which);
  const all = await listBackups(archive);
  let usable = all;
  if (target.lsn !== undefined) {
    const lsn = parseLsn(target.lsn);
    usable = all.filter((b) => parseLsn(b.stopLsn) <= lsn);
  } else if (target.time !== undefined) {
    const at = Date.parse(target.time);
    usable = all.filter((b) => Date.parse(b.stoppedAt) < at);
  }
  const pick = usable[usable.length - 1];
  if (!pick) {
    throw new WalvaultError(
      'BACKUP_NOT_FOUND',
      all.length === 0
        ? `no complete backup in ${archive.storage.description}; take one with "walvault backup push"`
        : `no complete backup finished before the recovery target (the oldest stops at ${all[0].stopLsn}, ${all[0].stoppedAt}); choose a later target`,
    );
  }
  return pick;
}

/**
 * The members of an incremental backup's chain below it (parent first, full backup last),
 * each with its manifest: all there and complete, or a refusal before anything is written.
 */
async function loadChain(archive: Archive, meta: BackupMetadata): Promise<Array<{ meta: BackupMetadata; manifest: ParsedManifest }>> {
  if (meta.blockSize !== undefined && meta.blockSize !== BLOCK_SIZE) {
    throw new WalvaultError(
      'BACKUP_UNRESTORABLE',
      `backup ${meta.name} is incremental, from a server built with ${meta.blockSize}-byte blocks`, { fix: `walvault rebuilds chains of ${BLOCK_SIZE}-byte blocks only: restore its full backup ${chainOf(meta)[0]}` },
    );
  }
  const out: Array<{ meta: BackupMetadata; manifest: ParsedManifest }> = [];
  for (const name of [...(meta.chain ?? [])].reverse()) {
    let m: BackupMetadata;
    try {
      m = await readCompleted(archive, name);
    } catch (err) {
      if (!(err instanceof WalvaultError) || err.code !== 'BACKUP_NOT_FOUND') throw err;
      throw new WalvaultError(
        'BACKUP_UNRESTORABLE',
        `backup ${meta.name} is incremental and its chain (${chainOf(meta).join(' <- ')}) needs backup ${name}, which is not restorable: ${err.message}`, { fix: `restore an older backup whose chain is whole (walvault check names them)` },
      );
    }
    const bytes = await archive.get(m.manifest.key);
    if (!bytes) throw new WalvaultError('BACKUP_UNRESTORABLE', `${m.manifest.key} is missing: backup ${name}, which ${meta.name} is built on, cannot be checked`);
    out.push({ meta: m, manifest: parseManifest(bytes, m.manifest.key) });
  }
  return out;
}

/** Replaces a small file's text, durably (temporary file, fsync, rename). */
async function rewriteFile(file: string, edit: (text: string) => string): Promise<void> {
  const st = await fsp.stat(file);
  const tmp = `${file}.walvault-tmp`;
  const h = await fsp.open(tmp, 'wx', st.mode & 0o777);
  try {
    await h.writeFile(edit(await fsp.readFile(file, 'utf8')));
    await h.sync();
  } finally {
    await h.close();
  }
  await fsp.rename(tmp, file);
}

/**
 * A reader for each part of one backup archive, read as it arrives (../archive/read/read-ahead.ts:
 * at most PART_AHEAD_BYTES of it waiting); ./part-prefetch.ts keeps PARTS_AHEAD of them open
 * at once, across archives, so fetching and checking the next parts overlaps with extracting
 * this one.
 * Each part is checked as the archive checks any object (../archive/read/decode-object.ts:
 * frames, trailer, SHA-256 of its plaintext, hashed by the worker pool), and against the
 * metadata: a part copied over another position or from another backup is refused by its
 * envelope's binding (ARCHIVE_MISPLACED, naming what it is), and, for parts written before
 * bindings, by the size and SHA-256 the metadata records for this position, before any of
 * its bytes are passed on. A part's last bytes come only after its verdict; a part that
 * fails fails the restore, and pg_control is put in place only after every part passed.
 * From a site's several archives (../archive/archive-set.ts) a part that fails in one is read
 * from the next, so it is passed on only whole and verified.
 */
function partOpeners(archive: Archive, a: BackupArchive, blocks: BlockSource): Array<() => ReadAhead> {
  const several = archive instanceof ArchiveSet;
  return a.parts.map(
    (p) => () =>
      new ReadAhead(
        async (push, lend) => {
          const found = await archive.read(
            p.key,
            async (part) => {
              if (part.header.plaintextSize !== p.size || part.header.sha256.toString('hex') !== p.sha256) {
                throw new WalvaultError(
                  'ARCHIVE_CORRUPT',
                  `${p.key} in ${archive.storage.description} is not the part the backup's metadata records there (its size or SHA-256 differs): another object was copied over it, or it was rewritten`, { fix: `the backup cannot be restored as it is` },
                );
              }
              if (!several) {
                for await (const chunk of part.chunks) await push(chunk);
                return;
              }
              // Another archive may be read when this one's copy fails, so nothing is passed on
              // before the verdict: the part (4 MiB) is held whole until then.
              const held: Buffer[] = [];
              for await (const chunk of part.chunks) held.push(Buffer.from(chunk));
              for (const chunk of held) await push(chunk);
            },
            // Read straight into the ring's slabs, which go on to the parser and the writers
            // (not from several archives: what is held for a retry is copied anyway).
            { hasher: workerSha256, readInto: several ? undefined : lend },
          );
          if (found === null) throw new WalvaultError('ARCHIVE_CORRUPT', `${p.key} in ${archive.storage.description} is missing`, { fix: `the backup cannot be restored` });
        },
        blocks,
        PART_AHEAD_BYTES,
      ),
  );
}

export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  const meta = await chooseBackup(o.archive, o.backup, o.target);
  const log = o.log.child({ backup: meta.name });
  const targetDir = path.resolve(o.targetDir);
  const tablespaces = meta.archives
    .filter((a) => a.tablespaceOid !== null)
    .map((a) => ({ oid: a.tablespaceOid!, dir: path.resolve(o.tablespaceMap.get(a.tablespaceOid!) ?? a.location!) }));
  for (const oid of o.tablespaceMap.keys()) {
    if (!tablespaces.some((t) => t.oid === oid)) {
      throw new WalvaultError('CONFIG_INVALID', `--tablespace-map ${oid}: backup ${meta.name} has no tablespace with OID ${oid}`, { fix: `it has ${tablespaces.map((t) => t.oid).join(', ') || 'none'}` });
    }
  }
  // Checked before anything is written, so a refusal changes nothing.
  if (o.delta) {
    checkDeltaRoots([{ dir: targetDir, what: 'the data directory' }, ...tablespaces.map((t) => ({ dir: t.dir, what: `the directory of tablespace ${t.oid}` }))]);
    await checkDeltaTarget({ dir: targetDir, systemId: meta.systemId, backup: meta.name, force: o.force });
  } else {
    for (const dir of [targetDir, ...tablespaces.map((t) => t.dir)]) {
      if ((await isEmptyDir(dir)) === false && !o.force) {
        throw new WalvaultError('CONFIG_INVALID', `${dir} is not empty`, { fix: `choose an empty directory, add --delta to restore into a data directory of this cluster, or add --force to delete its contents first` });
      }
    }
  }
  const manifestBytes = await o.archive.get(meta.manifest.key);
  if (!manifestBytes) throw new WalvaultError('ARCHIVE_CORRUPT', `${meta.manifest.key} is missing`, { fix: `backup ${meta.name} cannot be checked` });
  const manifest = parseManifest(manifestBytes, meta.manifest.key);
  let whyWhole = o.delta ? blockDeltaUnusable(o.archive, meta, manifest) : null;
  const roots = new Map<string | null, string>([[null, targetDir], ...tablespaces.map((t) => [t.oid, t.dir] as [string, string])]);
  let indexes: BlockIndexes | null = null;
  if (o.delta && whyWhole === null) {
    // The indexes only spare work: one that cannot be used costs the delta its speed, not the restore.
    try {
      indexes = await loadBlockIndexes(o.archive, meta, manifest, roots);
    } catch (err) {
      if (!isWalvaultError(err, 'ARCHIVE_CORRUPT')) throw err;
      whyWhole = `its block index cannot be used: ${err.message}`;
      log.warn({ reason: whyWhole }, 'delta: a block index of the backup is missing or damaged ("walvault check" names a missing one, "walvault verify" a damaged one); the whole backup is read instead');
    }
  }
  let got: ReadResult;
  if (indexes) {
    const writers = new FileWriterPool(manifest.algorithm);
    try {
      const r = await restoreDeltaByBlocks({ archive: o.archive, meta, indexes, roots, writers, log, progressOut: o.progressOut });
      got = { files: r.files, dirs: r.dirs, rebuilt: null, delta: r.summary };
    } finally {
      await writers.destroy();
    }
  } else {
    if (whyWhole) log.info({ reason: whyWhole }, 'delta: the whole backup is read (it cannot be compared block by block)');
    got = await readTars(o, { meta, manifest, log, targetDir, tablespaces });
  }
  return finishRestore(o, { meta, manifest, manifestBytes, log, targetDir, tablespaces }, got);
}

/** What reading a backup leaves for finishRestore. */
interface ReadResult {
  files: Map<string, ExtractedFile>;
  dirs: Set<string>;
  /** A chain's rebuilt files (their facts for the new manifest); null for one backup. */
  rebuilt: Map<string, FileFacts> | null;
  /** The chain restored, oldest first, with the files it rebuilt. */
  chain?: { names: string[]; rebuilt: number };
  delta?: DeltaSummary;
}

interface Chosen {
  meta: BackupMetadata;
  manifest: ParsedManifest;
  log: Logger;
  targetDir: string;
  tablespaces: Array<{ oid: string; dir: string }>;
}

/** The backup's tars (and a chain's older members') read and extracted: a full restore, or a delta that reads the whole backup. */
async function readTars(o: RestoreOptions, { meta, manifest, log, targetDir, tablespaces }: Chosen): Promise<ReadResult> {
  const older = isIncremental(meta) ? await loadChain(o.archive, meta) : [];
  const writers = new FileWriterPool(manifest.algorithm);
  let delta: DeltaStart | null = null;
  try {
    if (o.delta) {
      const roots = [{ dir: targetDir, prefix: '' }, ...tablespaces.map((t) => ({ dir: t.dir, prefix: `pg_tblspc/${t.oid}/` }))];
      delta = await startDelta({ targetDir, roots, manifest, writers, log });
    } else {
      await prepareDir(targetDir, o.force, 'target directory');
      for (const t of tablespaces) await prepareDir(t.dir, o.force, `tablespace ${t.oid} directory`);
    }
  } catch (err) {
    await writers.destroy();
    throw err;
  }
  const check = delta?.check;

  log.info({ target: targetDir, start: meta.startLsn, stop: meta.stopLsn, delta: o.delta === true }, 'restoring backup');
  let done = 0;
  let keptBytes = 0;
  const progress = new Progress({
    what: `restore ${meta.name}`,
    log,
    out: o.progressOut,
    ...(check ? { detail: () => `${check.checked} of ${check.total} files there checked, ${check.kept} kept; ${formatBytes(keptBytes)} kept, ${formatBytes(done - keptBytes)} fetched` } : {}),
  });
  progress.setTotal(meta.rawBytes);
  const files = new Map<string, ExtractedFile>();
  const dirs = new Set<string>([targetDir, ...tablespaces.map((t) => t.dir)]);
  const tablespaceDirs = new Map(tablespaces.map((t) => [t.oid, t.dir]));
  const ring = new SlabRing(SLABS + AHEAD_SLABS, SLAB_SIZE);
  // The read-ahead has its own bound, so it never waits for a slab.
  const blocks: BlockSource = { acquire: () => ring.take(), release: (b) => ring.release(b) };
  const writeFailure = writers.whenFailed();
  writeFailure.catch(() => undefined); // raced below
  let rebuilt: Map<string, FileFacts> | null = null;
  const patcher = older.length > 0 ? new ChainPatcher(ring, writers, older.map((m) => ({ name: m.meta.name, manifest: m.manifest }))) : null;
  // Every tar this restore reads, in order: the newest backup's, then, for a chain, each
  // older member's (parent first) for the tablespaces the newest backup has.
  const tars: Array<{ a: BackupArchive; member: number }> = meta.archives.map((a) => ({ a, member: -1 }));
  older.forEach((m, member) => {
    for (const a of m.meta.archives) if (meta.archives.some((n) => n.tablespaceOid === a.tablespaceOid)) tars.push({ a, member });
  });
  const prefetch = new PartPrefetch(
    tars.map((t) => partOpeners(o.archive, t.a, blocks)),
    PARTS_AHEAD,
  );
  const stream = async (tar: number, owner: string, sink: TarSink & { slab: Buffer | null }) => {
    const label = `${tars[tar].a.name} of backup ${owner}`;
    const reader = new TarReader(sink, label);
    const parse = async (slab: Buffer, filled: Buffer) => {
      sink.slab = slab;
      try {
        await reader.write(filled);
      } finally {
        ring.release(slab);
      }
    };
    try {
      await Promise.race([fillSlabs(prefetch.partsOf(tar), tars[tar].a.compression, ring, parse, label), writeFailure]);
      reader.finish();
    } catch (err) {
      throw err instanceof WalvaultError ? err : new WalvaultError('ARCHIVE_CORRUPT', `${label} cannot be read: ${(err as Error).message}`, { cause: err });
    }
  };
  // Files still closing: the next tar does not wait for them (the last ones of a tar, and
  // of a chain member, would otherwise leave the writer threads alone while the parser waits).
  const closing: Array<Promise<void>> = [];
  try {
    for (const [tar, { a, member }] of tars.entries()) {
      if (member >= 0) {
        const m = older[member];
        await stream(tar, m.meta.name, patcher!.memberSink({ name: m.meta.name, manifest: m.manifest }, a.tablespaceOid === null ? '' : `pg_tblspc/${a.tablespaceOid}/`));
        if (tars[tar + 1]?.member !== member) patcher!.endMember(m.meta.name, member === older.length - 1);
        continue;
      }
      const isBase = a.tablespaceOid === null;
      const root = isBase ? targetDir : tablespaceDirs.get(a.tablespaceOid!)!;
      const extractor = new Extractor({
        root,
        manifestPrefix: isBase ? '' : `pg_tblspc/${a.tablespaceOid}/`,
        isBase,
        tablespaceDirs,
        files,
        dirs,
        writers,
        ring,
        onBytes: (n) => progress.update((done += n)),
        ...(check ? { keep: check.verdicts, onKept: (n: number) => void (keptBytes += n) } : {}),
        ...(patcher ? { chain: { patcher, member: meta.name, algorithm: manifest.algorithm } } : {}),
      });
      await stream(tar, meta.name, extractor);
      const finished = extractor.finish();
      finished.catch(() => undefined); // awaited below
      closing.push(finished);
    }
    await Promise.race([Promise.all(closing), writeFailure]);
    await check?.done;
    rebuilt = patcher ? await patcher.finish(manifest.algorithm) : null;
  } catch (err) {
    progress.finish();
    throw err;
  } finally {
    await prefetch.cancel();
    await writers.destroy();
  }
  progress.finish();
  let deltaSummary: DeltaSummary | undefined;
  if (delta) {
    // What the backup does not have: the directories it did not make.
    const extra = extraDirs(delta.dirs, dirs);
    await removeEntries(extra);
    const total = [...files.values()].reduce((s, f) => s + f.size, 0);
    const c = delta.check;
    const patched = [...files.values()].filter((f) => f.rewritten !== undefined);
    deltaSummary = {
      checked: c.checked,
      kept: c.kept,
      keptBytes: c.keptBytes,
      fetched: files.size - c.kept,
      fetchedBytes: total - c.keptBytes,
      patched: patched.length,
      patchedBytesWritten: patched.reduce((s, f) => s + f.rewritten!, 0),
      removed: delta.removed + c.removed + extra.length,
    };
  }

  return { files, dirs, rebuilt, ...(patcher ? { chain: { names: chainOf(meta), rebuilt: patcher.files } } : {}), ...(deltaSummary ? { delta: deltaSummary } : {}) };
}

/** Checks what was read against the manifest, then writes the recovery settings and puts pg_control in place. */
async function finishRestore(o: RestoreOptions, { meta, manifest, manifestBytes, log, targetDir, tablespaces }: Chosen & { manifestBytes: Buffer }, got: ReadResult): Promise<RestoreResult> {
  const { files, dirs, rebuilt } = got;
  const deltaSummary = got.delta;
  const problems = compareWithManifest(manifest, files);
  if (problems.length > 0) {
    throw new WalvaultError(
      'ARCHIVE_CORRUPT',
      `the restored files do not match the backup manifest of ${meta.name} (${problems.length} problems, first: ${problems.slice(0, 3).join('; ')})`, { fix: `${targetDir} is left without global/pg_control so no server starts on it` },
    );
  }

  // The manifest goes with the data directory, as pg_basebackup leaves it, so
  // pg_verifybackup can check the restore later.
  if (!rebuilt) {
    await fsp.writeFile(path.join(targetDir, 'backup_manifest'), manifestBytes, { mode: 0o600 });
  } else {
    // PostgreSQL refuses to start on a backup_label that says INCREMENTAL FROM: the chain is
    // rebuilt now, so it is the label of a full backup; the manifest says what is there now.
    const labelFile = path.join(targetDir, 'backup_label');
    await rewriteFile(labelFile, (text) => text.replace(/^INCREMENTAL FROM (?:LSN|TLI): .*\n/gm, ''));
    rebuilt.set('backup_label', await fileFacts(labelFile, manifest.algorithm));
    await fsp.writeFile(path.join(targetDir, 'backup_manifest'), chainManifest(manifestBytes, rebuilt, meta.manifest.key), { mode: 0o600 });
  }
  // Recovery settings, then pg_control last: the directory becomes startable only now.
  // A backup taken on a standby holds its standby.signal: only the one asked for may stay.
  for (const f of ['standby.signal', 'recovery.signal']) await fsp.rm(path.join(targetDir, f), { force: true });
  const signal = path.join(targetDir, o.standby ? 'standby.signal' : 'recovery.signal');
  await fsp.writeFile(signal, '', { mode: 0o600 });
  const autoConf = path.join(targetDir, 'postgresql.auto.conf');
  const settings = recoverySettings({ restoreCommand: o.restoreCommand, target: o.target, primaryConninfo: o.primaryConninfo, archiveOff: o.archiveOff });
  await fsp.appendFile(autoConf, settings, { mode: 0o600 });
  for (const f of [signal, autoConf, path.join(targetDir, 'backup_manifest')]) {
    const h = await fsp.open(f, 'r+');
    await h.sync();
    await h.close();
  }
  await fsp.rename(path.join(targetDir, PENDING_CONTROL_FILE), path.join(targetDir, 'global', 'pg_control'));
  if (o.delta) await dropOldControl(targetDir);
  await syncDirs(dirs);
  const bytes = [...files.values()].reduce((s, f) => s + f.size, 0);
  log.info({ files: files.size, bytes, ...(got.chain ? { chain: got.chain.names, rebuilt: got.chain.rebuilt } : {}), ...(deltaSummary ? { delta: deltaSummary } : {}) }, 'backup restored and verified against its manifest');
  return { meta, files: files.size, bytes, tablespaces, ...(deltaSummary ? { delta: deltaSummary } : {}) };
}
