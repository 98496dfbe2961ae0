/**
 * `walvault restore --delta`: a restore into a stopped cluster's data directory (and its
 * tablespace directories) that keeps what already matches the backup.
 *
 * 1. Refusals, before anything is written: a postmaster.pid naming a live process (the pid
 *    named), a directory whose global/pg_control belongs to another cluster (its system
 *    identifier differs from the backup's), or a non-empty directory with no pg_control at
 *    all (not a data directory: the delta would empty it), unless --force.
 * 2. pg_control is set aside (DELTA_OLD_CONTROL: no server starts on the directory from now
 *    on, and a delta run again after an interruption still knows the cluster).
 * 3. What cannot be kept goes: files the backup lacks or lists with another size, symbolic
 *    links (tablespace links and a linked pg_wal too: the restore makes them as a full
 *    restore does; a link is removed, never followed), anything else that is not a file or
 *    directory, and a directory where the backup has a file. Every other file the manifest
 *    lists is read and checksummed by the writer threads (FileWriterPool.digestFiles: a
 *    buffer per thread) while the backup is read (DeltaCheck); one whose checksum is the
 *    manifest's is kept untouched; a large one (8 MiB or more: relation segments) that
 *    differs is patched in place, only the 8 KiB pages that differ written; a smaller one is
 *    removed before its entry is written.
 * 4. The backup's tars are read as in a full restore; a kept file's bytes are passed over
 *    (./extract.ts, which waits for the file's verdict), everything else written.
 *    Directories the backup does not have are then removed, so the result is the directory
 *    a full restore gives.
 *
 * Nothing the backup lacks is kept: a delta restore gives exactly what a full restore gives
 * (as pgBackRest's restore --delta removes every file its manifest does not name). Settings
 * that must survive a restore belong outside the data directory (an include file), or are
 * given again (--primary-conninfo, --archive-mode preserve).
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { WalvaultError } from '../errors';
import { processAlive } from '../util/process-alive';
import { runPool } from '../util/run-pool';
import { PATCH_MIN_SIZE, type FileWriterPool, type WrittenFile } from './file-writers';
import { isIncrementalPath, nonIncrementalPath } from './incremental-file';
import type { ManifestChecksumAlgorithm } from './manifest-checksum';
import { isEmptyDir } from './target-dir';

/** Where a delta restore keeps the directory's own pg_control until the backup's is in place. */
export const DELTA_OLD_CONTROL = 'global/pg_control.walvault-delta-old';
const CONTROL_FILE = 'global/pg_control';

/** What is there now, by the path the manifest would name it. */
export interface ExistingEntry {
  /** Manifest path ('' prefix for the main directory, `pg_tblspc/<oid>/` for a tablespace's). */
  path: string;
  abs: string;
  /** 'other': a symbolic link, socket, FIFO or device: never followed, always removed. */
  kind: 'file' | 'dir' | 'other';
  size: number;
  /** A file's permission bits. */
  mode?: number;
}

export interface ManifestFiles {
  algorithm: ManifestChecksumAlgorithm;
  files: Array<{ path: string; size: number; checksum: string }>;
}

export interface DeltaPlan {
  /** Files to read and compare with the manifest. */
  check: ExistingEntry[];
  /** Entries to remove before the backup is read. */
  remove: ExistingEntry[];
  /** The directories left: those the backup does not make are removed after it is read. */
  dirs: ExistingEntry[];
}

export interface DeltaSummary {
  /** Files read and checksummed. */
  checked: number;
  kept: number;
  keptBytes: number;
  fetched: number;
  fetchedBytes: number;
  /** Of the files fetched, those patched in place, and the bytes written into them. */
  patched: number;
  patchedBytesWritten: number;
  /** Files, links and directories removed. */
  removed: number;
}

/** The system identifier in a pg_control file (its first 8 bytes), or null when there is none. */
async function controlSystemId(file: string): Promise<string | null> {
  let h;
  try {
    h = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const b = Buffer.alloc(8);
    const { bytesRead } = await h.read(b, 0, 8, 0);
    return bytesRead === 8 ? b.readBigUInt64LE(0).toString() : null;
  } finally {
    await h.close();
  }
}

/**
 * Refuses a delta restore into `dir` while a server runs on it, or when it is another
 * cluster's (or nothing walvault can tell as a cluster's) without `force`. Reads only.
 */
export async function checkDeltaTarget(o: { dir: string; systemId: string; backup: string; force: boolean }): Promise<void> {
  const empty = await isEmptyDir(o.dir);
  if (empty !== false) return;
  let pidLine: string | null = null;
  try {
    pidLine = (await fsp.readFile(path.join(o.dir, 'postmaster.pid'), 'utf8')).split('\n')[0].trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (pidLine !== null && /^[0-9]+$/.test(pidLine) && Number(pidLine) > 0 && processAlive(Number(pidLine))) {
    throw new WalvaultError('RESTORE_TARGET_RUNNING', `a server runs on ${o.dir}: its postmaster.pid names process ${pidLine}, which is alive`, {
      fix: `stop it first (pg_ctl -D ${o.dir} stop -m fast); if process ${pidLine} is not PostgreSQL, remove ${path.join(o.dir, 'postmaster.pid')}`,
    });
  }
  if (o.force) return;
  const id = (await controlSystemId(path.join(o.dir, CONTROL_FILE))) ?? (await controlSystemId(path.join(o.dir, DELTA_OLD_CONTROL)));
  if (id === null) {
    throw new WalvaultError('RESTORE_OTHER_CLUSTER', `${o.dir} is not empty and holds no ${CONTROL_FILE}: walvault cannot tell which cluster's data directory it is, and --delta would remove everything backup ${o.backup} does not have`, {
      fix: `point --delta at the cluster's data directory, or add --force to replace what it holds`,
    });
  }
  if (id !== o.systemId) {
    throw new WalvaultError('RESTORE_OTHER_CLUSTER', `${o.dir} is the data directory of cluster ${id}, and backup ${o.backup} is of cluster ${o.systemId}`, {
      fix: `restore a backup of that cluster into it, or add --force to replace it with this one`,
    });
  }
}

/**
 * Refuses roots that hold one another: a tablespace directory inside the data directory (or
 * another tablespace's) would be scanned as part of it, and its files removed.
 */
export function checkDeltaRoots(roots: ReadonlyArray<{ dir: string; what: string }>): void {
  for (const a of roots) {
    for (const b of roots) {
      if (a !== b && (a.dir === b.dir || b.dir.startsWith(`${a.dir}${path.sep}`))) {
        throw new WalvaultError('CONFIG_INVALID', `${b.what} ${b.dir} lies in ${a.what} ${a.dir}: a delta restore of one would remove the other's files`, {
          fix: `give the tablespace a directory of its own (--tablespace-map OID=DIR)`,
        });
      }
    }
  }
}

/** Sets the directory's pg_control aside: from now on no server starts on it. */
export async function setControlAside(dir: string): Promise<void> {
  try {
    await fsp.rename(path.join(dir, CONTROL_FILE), path.join(dir, DELTA_OLD_CONTROL));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Removes the set-aside pg_control, once the backup's is in place. */
export async function dropOldControl(dir: string): Promise<void> {
  await fsp.rm(path.join(dir, DELTA_OLD_CONTROL), { force: true });
}

/** Everything under `root` (not `root` itself), never following a link. Absent: nothing. */
export async function scanTree(root: string, prefix: string): Promise<ExistingEntry[]> {
  const out: ExistingEntry[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    let names;
    try {
      names = await fsp.readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && dir === root) return;
      throw err;
    }
    const pending: Array<Promise<void>> = [];
    for (const d of names) {
      const abs = path.join(dir, d.name);
      const p = rel + d.name;
      if (d.isDirectory()) {
        out.push({ path: p, abs, kind: 'dir', size: 0 });
        pending.push(walk(abs, `${p}/`));
      } else if (d.isFile()) {
        // Synchronous: a database directory holds thousands of files, and each lstat's trip
        // through the thread pool costs the main thread ten times the call itself.
        const st = fs.lstatSync(abs);
        out.push({ path: p, abs, kind: 'file', size: st.size, mode: st.mode & 0o7777 });
      } else {
        out.push({ path: p, abs, kind: 'other', size: 0 });
      }
    }
    await Promise.all(pending);
  };
  await walk(root, prefix);
  return out;
}

/**
 * Which of the existing entries to compare with the manifest and which to remove first.
 * A file is compared when the manifest lists it with its size and a checksum to compare
 * with: not pg_control (always the backup's, written last), not a file an incremental
 * backup rebuilds (the manifest has its INCREMENTAL form's checksum only), and no file of a
 * manifest without checksums.
 */
export function planDelta(manifest: ManifestFiles, existing: readonly ExistingEntry[]): DeltaPlan {
  const comparable = new Map<string, number>();
  const backupFiles = new Set<string>();
  for (const f of manifest.files) {
    if (isIncrementalPath(f.path)) {
      backupFiles.add(nonIncrementalPath(f.path));
      continue;
    }
    backupFiles.add(f.path);
    if (f.path !== CONTROL_FILE && manifest.algorithm !== 'NONE') comparable.set(f.path, f.size);
  }
  const check: ExistingEntry[] = [];
  const remove: ExistingEntry[] = [];
  const dirs: ExistingEntry[] = [];
  const removedDirs: string[] = [];
  const under = (p: string) => removedDirs.some((d) => p.startsWith(`${d}/`));
  for (const e of [...existing].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    if (e.path === DELTA_OLD_CONTROL || under(e.path)) continue;
    if (e.kind === 'file') {
      if (comparable.get(e.path) === e.size) check.push(e);
      else remove.push(e);
    } else if (e.kind === 'other') {
      remove.push(e);
    } else if (backupFiles.has(e.path)) {
      remove.push(e);
      removedDirs.push(e.path);
    } else {
      dirs.push(e);
    }
  }
  return { check, remove, dirs };
}

/**
 * The directories left before the backup was read (DeltaPlan.dirs) that it did not make: the
 * backup does not have them.
 */
export function extraDirs(left: readonly ExistingEntry[], made: ReadonlySet<string>): ExistingEntry[] {
  const dirs = left.filter((e) => !made.has(e.abs));
  // Only the topmost: removing it removes what is under it.
  return dirs.filter((d) => !dirs.some((o) => o !== d && d.abs.startsWith(`${o.abs}${path.sep}`)));
}

/** Removes entries (links themselves, never what they point at), several at once. */
export async function removeEntries(entries: readonly ExistingEntry[]): Promise<void> {
  await runPool(entries, 16, (e) => fsp.rm(e.abs, { recursive: e.kind === 'dir', force: true }));
}

/**
 * A file's verdict: kept (its size and checksum), patched in place (a large file that
 * differs: only the pages that differ are written), or removed (null: written anew).
 */
export type DeltaVerdict = WrittenFile | 'patch' | null;

/**
 * The check of the files there (step 3), run beside the restore's reading of the backup: the
 * writer threads read and checksum the candidates in the manifest's order (the order the
 * server sent them, so the checks keep ahead of the tars), and each file's verdict is a
 * promise the extractor waits for when its entry comes: its size and checksum when it
 * matches (kept); 'patch' for a large file (a relation segment) that differs, which is
 * opened as it is and has only its differing pages written; or null once a small file that
 * differs has been removed (written anew).
 */
export class DeltaCheck {
  /** Verdicts by manifest path. */
  readonly verdicts = new Map<string, Promise<DeltaVerdict>>();
  readonly total: number;
  checked = 0;
  kept = 0;
  keptBytes = 0;
  differed = 0;
  /** Of those that differed, the ones removed (the others are patched in place). */
  removed = 0;
  /** Every candidate checked (and, differing, removed); rejects as the first failure does. */
  readonly done: Promise<void>;

  constructor(writers: FileWriterPool, manifest: ManifestFiles, candidates: readonly ExistingEntry[]) {
    const order = new Map(manifest.files.map((f, i) => [f.path, i]));
    const queue = [...candidates].sort((a, b) => order.get(a.path)! - order.get(b.path)!);
    const listed = new Map(manifest.files.map((f) => [f.path, f]));
    const settle = new Map<string, { resolve: (v: DeltaVerdict) => void; reject: (err: Error) => void }>();
    for (const e of queue) {
      const verdict = new Promise<DeltaVerdict>((resolve, reject) => settle.set(e.path, { resolve, reject }));
      verdict.catch(() => undefined); // the failure is also done's
      this.verdicts.set(e.path, verdict);
    }
    this.total = queue.length;
    this.done = writers
      .digestFiles(
        queue.map((e) => e.abs),
        async (i, facts) => {
          const e = queue[i];
          const want = listed.get(e.path)!;
          this.checked++;
          if (facts.size === want.size && facts.checksum === want.checksum) {
            this.kept++;
            this.keptBytes += facts.size;
            settle.get(e.path)!.resolve(facts);
          } else if (facts.size >= PATCH_MIN_SIZE) {
            this.differed++;
            settle.get(e.path)!.resolve('patch');
          } else {
            await fsp.rm(e.abs, { force: true });
            this.differed++;
            this.removed++;
            settle.get(e.path)!.resolve(null);
          }
          settle.delete(e.path);
        },
      )
      .catch((err: Error) => {
        for (const s of settle.values()) s.reject(err);
        throw err;
      });
    this.done.catch(() => undefined); // awaited by the restore
  }
}

/** What the delta's first steps leave for the restore. */
export interface DeltaStart {
  check: DeltaCheck;
  /** The directories left (DeltaPlan.dirs). */
  dirs: ExistingEntry[];
  /** Entries removed before the backup is read. */
  removed: number;
}

/**
 * Step 2 and the start of 3 (after checkDeltaTarget): pg_control set aside, what is there
 * scanned, what cannot be kept removed, and the check of the rest started on `writers`; each
 * root then exists, mode 0700. `roots`: the data directory ('' prefix) and each tablespace's
 * directory (`pg_tblspc/<oid>/`).
 */
export async function startDelta(o: { targetDir: string; roots: Array<{ dir: string; prefix: string }>; manifest: ManifestFiles; writers: FileWriterPool; log: Logger }): Promise<DeltaStart> {
  await setControlAside(o.targetDir);
  const existing = (await Promise.all(o.roots.map((r) => scanTree(r.dir, r.prefix)))).flat();
  const plan = planDelta(o.manifest, existing);
  await removeEntries(plan.remove);
  for (const r of o.roots) {
    await fsp.mkdir(r.dir, { recursive: true, mode: 0o700 });
    await fsp.chmod(r.dir, 0o700);
  }
  o.log.info({ there: existing.length, toCheck: plan.check.length, removed: plan.remove.length }, 'delta: what the backup does not have removed; checking the rest as the backup is read');
  return { check: new DeltaCheck(o.writers, o.manifest, plan.check), dirs: plan.dirs, removed: plan.remove.length };
}
