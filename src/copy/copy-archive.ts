/**
 * Brings one archive up to date from another: every WAL file and every complete backup the
 * destination lacks. Each object is read from the source through its checks (envelope,
 * checksums, binding to its key and cluster; a backup part, block index or manifest also
 * against the sha256 and size its backup's metadata records) and written to the destination with the destination's own
 * codec and key, verified after the write as every archive write is. An object the
 * destination already holds is never written over: a name it holds with other bytes is a
 * failure, named, and the copy goes on with the rest.
 *
 * Order: WAL first, then backups oldest first (a parent before its incrementals), and within
 * a backup its completion marker last: the destination lists a backup only once everything
 * it needs from that backup is there. Run again, a copy picks up where it stopped; a part
 * written by an interrupted run is found unchanged and kept.
 */
import { createHash } from 'node:crypto';
import type { Archive } from '../archive/archive';
import { claimArchive, type NoteLog } from '../archive/archive-settings';
import type { ClusterInfo } from '../archive/cluster-marker';
import { walKey } from '../archive/layout';
import { BACKUP_FRAME_SIZE, type StoredPart } from '../backup/part-uploader';
import {
  backupPrefix,
  listBackups,
  scanBackups,
  storeCompletion,
  storeMetadata,
  UPLOAD_MANIFEST_FILE,
  type BackupArchive,
  type BackupMetadata,
  type RecordedObject,
} from '../backup/catalog';
import { errorMessage, WalvaultError } from '../errors';
import { runPool } from '../util/run-pool';
import { walIdentityChecker } from '../wal/wal-identity';

export interface CopyOptions {
  from: Archive;
  to: Archive;
  /** Only say what would be copied. */
  dryRun: boolean;
  /** Objects read and written at once. */
  concurrency: number;
  log: NoteLog;
  /** Where a site pins the destination's key (see ../archive/key-pin.ts); none for a bare URL. */
  stateDir?: string;
  /** Backups only: a receiver writes the site's WAL to every archive itself. */
  backupsOnly?: boolean;
}

export interface CopyReport {
  from: string;
  to: string;
  dryRun: boolean;
  /** WAL files (segments, history files, partials) copied, or to copy in a dry run. */
  wal: string[];
  /** WAL files the destination held already. */
  walPresent: number;
  /** Complete backups copied, or to copy in a dry run. */
  backups: string[];
  backupsPresent: string[];
  /** Backups still running (or abandoned) in the source: not copied. */
  backupsIncomplete: string[];
  /** Plaintext bytes read from the source and written. */
  bytes: number;
  failures: Array<{ object: string; error: string }>;
  ok: boolean;
}

const PROGRESS_EVERY_MS = 10_000;

export async function copyArchive(o: CopyOptions): Promise<CopyReport> {
  const { from, to } = o;
  const report: CopyReport = {
    from: from.storage.description,
    to: to.storage.description,
    dryRun: o.dryRun,
    wal: [],
    walPresent: 0,
    backups: [],
    backupsPresent: [],
    backupsIncomplete: [],
    bytes: 0,
    failures: [],
    ok: true,
  };
  await claimDestination(o);

  const progress = new ProgressLine(o.log);
  try {
    if (!o.backupsOnly) await copyWal(o, report, progress);
    await copyBackups(o, report, progress);
  } finally {
    progress.stop();
  }
  report.ok = report.failures.length === 0;
  return report;
}

/** The destination is empty or holds the same database system; only then is it claimed. */
async function claimDestination(o: CopyOptions): Promise<void> {
  const source = await o.from.readCluster();
  if (source === null) {
    throw new WalvaultError('ARCHIVE_NOT_FOUND', `${o.from.storage.description} has no cluster.json: it is not an archive walvault wrote, or it is empty`, {
      fix: 'name as --from the archive that holds the history to copy',
    });
  }
  const theirs = await o.to.readCluster();
  if (theirs && theirs.systemId !== source.systemId) {
    throw new WalvaultError(
      'ARCHIVE_OTHER_CLUSTER',
      `${o.to.storage.description} belongs to database system ${theirs.systemId}, but ${o.from.storage.description} holds the history of ${source.systemId}`,
      { fix: 'copy into an empty archive or one of the same database system' },
    );
  }
  if (o.dryRun) return;
  await claimArchive(o.to, { systemId: source.systemId, pgVersionNum: source.pgVersionNum, walSegmentSize: source.walSegmentSize }, o.log, o.stateDir);
}

async function copyWal(o: CopyOptions, report: CopyReport, progress: ProgressLine): Promise<void> {
  const theirs = new Set(await o.to.listWal());
  const ours = await o.from.listWal();
  const whole = new Set([...ours, ...theirs].filter((n) => !n.endsWith('.partial')));
  const todo: string[] = [];
  for (const name of ours) {
    if (theirs.has(name)) report.walPresent++;
    // A partial whose segment is archived whole (in either archive) is superseded.
    else if (!(name.endsWith('.partial') && whole.has(name.slice(0, -'.partial'.length)))) todo.push(name);
  }
  progress.set(() => `WAL files: ${report.wal.length} of ${todo.length} copied`);
  if (o.dryRun) {
    report.wal.push(...todo);
    return;
  }
  const cluster = (await o.from.readCluster())!;
  await runPool(todo, o.concurrency, async (name) => {
    const key = walKey(name);
    try {
      const data = await readWal(o.from, name, cluster);
      if (data === null) throw new WalvaultError('ARCHIVE_NOT_FOUND', `${key} vanished from ${o.from.storage.description} while copying (retention?)`);
      // A partial is replaced as the segment grows; everything else is immutable.
      if (name.endsWith('.partial')) await o.to.putPartial(key, data);
      else await o.to.putImmutable(key, data);
      report.wal.push(name);
      report.bytes += data.length;
    } catch (err) {
      report.failures.push({ object: key, error: errorMessage(err) });
    }
  });
  report.wal.sort();
}

async function copyBackups(o: CopyOptions, report: CopyReport, progress: ProgressLine): Promise<void> {
  const entries = await scanBackups(o.from);
  report.backupsIncomplete = entries.filter((e) => !e.complete).map((e) => e.name).sort();
  const done = new Set((await scanBackups(o.to)).filter((e) => e.complete).map((e) => e.name));
  // Oldest first by stop position: an incremental's parent stopped before it.
  const todo: BackupMetadata[] = [];
  for (const meta of await listBackups(o.from)) {
    if (done.has(meta.name)) report.backupsPresent.push(meta.name);
    else todo.push(meta);
  }
  progress.set(() => `backups: ${report.backups.length} of ${todo.length} copied`);
  if (o.dryRun) {
    report.backups.push(...todo.map((m) => m.name));
    return;
  }
  const failed = new Set<string>();
  for (const meta of todo) {
    const missingParent = (meta.chain ?? []).find((n) => failed.has(n));
    if (missingParent) {
      failed.add(meta.name);
      report.failures.push({ object: backupPrefix(meta.name), error: `not copied: it needs backup ${missingParent}, which was not copied` });
      continue;
    }
    try {
      report.bytes += await copyBackup(o, meta);
      report.backups.push(meta.name);
    } catch (err) {
      failed.add(meta.name);
      report.failures.push({ object: backupPrefix(meta.name), error: errorMessage(err) });
    }
  }
}

/** One complete backup: parts and block indexes, manifests, then its metadata and completion marker. Returns the bytes copied. */
async function copyBackup(o: CopyOptions, meta: BackupMetadata): Promise<number> {
  const prefix = backupPrefix(meta.name);
  let bytes = 0;
  const archives: BackupArchive[] = [];
  for (const a of meta.archives) {
    // Parts the server compressed are stored as they came, in the destination too.
    const codec = a.compression === 'zstd' ? ('none' as const) : undefined;
    const parts: StoredPart[] = new Array(a.parts.length);
    await runPool(a.parts.map((p, i) => ({ p, i })), o.concurrency, async ({ p, i }) => {
      const data = await readAsRecorded(o.from, p.key, p.size, p.sha256, `part of backup ${meta.name}`);
      // Small frames as the backup wrote them, for delta restores from the copy too.
      await o.to.putOwnedBuffer(p.key, data, Buffer.from(p.sha256, 'hex'), codec ? { codec } : { frameSize: BACKUP_FRAME_SIZE });
      parts[i] = { ...p, storedSize: await storedSize(o.to, p.key) };
      bytes += data.length;
    });
    if (a.index) bytes += await copyRecorded(o, a.index, `block index of backup ${meta.name}`);
    archives.push({ ...a, parts, storedBytes: parts.reduce((s, p) => s + p.storedSize, 0) });
  }
  bytes += await copyRecorded(o, meta.manifest, `manifest of backup ${meta.name}`);
  // PostgreSQL 17+ backups keep the manifest an incremental child uploads, in the clear.
  const upload = await o.from.asPlain().get(prefix + UPLOAD_MANIFEST_FILE);
  if (upload !== null) await o.to.asPlain().putImmutable(prefix + UPLOAD_MANIFEST_FILE, upload);

  const copied: BackupMetadata = {
    ...meta,
    archives,
    storedBytes: archives.reduce((s, a) => s + a.storedBytes, 0) + (await storedSize(o.to, meta.manifest.key)),
  };
  const sha = await storeMetadata(o.to, copied);
  await storeCompletion(o.to, copied, sha);
  return bytes;
}

/** An object the metadata records (a manifest, a block index), checked against it and stored alike; returns its plaintext bytes. */
async function copyRecorded(o: CopyOptions, object: RecordedObject, what: string): Promise<number> {
  const plaintext = await readAsRecorded(o.from, object.key, object.size, object.sha256, what);
  await o.to.putImmutable(object.key, plaintext);
  return plaintext.length;
}

/**
 * A WAL file's verified plaintext, also checked against its name (page addresses, timeline,
 * system identifier; a history file's parents), as restore would: a segment adopted from the
 * spool carries no binding of its own, its pages are what bind it.
 */
async function readWal(archive: Archive, name: string, cluster: ClusterInfo): Promise<Buffer | null> {
  return archive.read(walKey(name), async (object) => {
    const check = walIdentityChecker(name, object.header.plaintextSize, cluster, archive.label(walKey(name)));
    const chunks: Buffer[] = [];
    for await (const chunk of object.chunks) {
      check.write(chunk);
      chunks.push(Buffer.from(chunk));
    }
    check.end();
    return Buffer.concat(chunks);
  });
}

/** The plaintext of `key`, refused unless it is the size and sha256 the backup recorded. */
async function readAsRecorded(archive: Archive, key: string, size: number, sha256: string, what: string): Promise<Buffer> {
  const data = await archive.get(key);
  if (data === null) {
    throw new WalvaultError('BACKUP_UNRESTORABLE', `${key} (${what}) is missing from ${archive.storage.description}`, {
      fix: `this backup cannot be copied from there: copy it from another archive that holds it, or take a new backup`,
    });
  }
  const got = createHash('sha256').update(data).digest('hex');
  if (data.length !== size || got !== sha256) {
    throw new WalvaultError(
      'ARCHIVE_CORRUPT',
      `${key} (${what}) in ${archive.storage.description} reads as ${data.length} bytes with sha256 ${got}, but the backup recorded ${size} bytes with sha256 ${sha256}`,
      { fix: `this backup cannot be copied from there: copy it from another archive that holds it, or take a new backup` },
    );
  }
  return data;
}

async function storedSize(archive: Archive, key: string): Promise<number> {
  const info = await archive.storage.head(key);
  if (info === null) throw new WalvaultError('STORAGE_IO', `${key} is not in ${archive.storage.description} right after it was written and verified`);
  return info.size;
}

/** A line every PROGRESS_EVERY_MS on long copies: the phase's own count. */
class ProgressLine {
  private say: (() => string) | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(log: NoteLog) {
    this.timer = setInterval(() => {
      if (this.say) log.info({}, `copying: ${this.say()}`);
    }, PROGRESS_EVERY_MS);
    this.timer.unref();
  }

  set(say: () => string): void {
    this.say = say;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export function formatCopyReport(r: CopyReport): string {
  const mib = (r.bytes / 1048576).toFixed(1);
  const count = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;
  const lines = [
    r.dryRun
      ? `copy from ${r.from} to ${r.to} (dry run): would copy ${count(r.wal.length, 'WAL file')} and ${count(r.backups.length, 'backup')}`
      : `copy from ${r.from} to ${r.to}: ${count(r.wal.length, 'WAL file')} and ${count(r.backups.length, 'backup')} copied (${mib} MiB)`,
    `already there: ${count(r.walPresent, 'WAL file')}, ${count(r.backupsPresent.length, 'backup')}`,
  ];
  if (r.dryRun) for (const b of r.backups) lines.push(`would copy backup ${b}`);
  if (r.backupsIncomplete.length > 0) lines.push(`not complete in the source, left out: ${r.backupsIncomplete.join(', ')}`);
  for (const f of r.failures) lines.push(`NOT COPIED ${f.object}: ${f.error}`);
  if (r.failures.length > 0) lines.push(`${count(r.failures.length, 'object')} not copied: fix what each line says, then run the same copy again (it only copies what is missing)`);
  return lines.join('\n') + '\n';
}
