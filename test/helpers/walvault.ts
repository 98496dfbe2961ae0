/**
 * Runs the real `walvault` command in tests, and reads what it left in an archive.
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Archive } from '../../src/archive/archive';
import { storageFromUrl } from '../../src/storage/open';
import {
  formatLsn,
  isSegmentFileName,
  parseLsn,
  parseSegmentFileName,
  segmentFileName,
  segmentNumber,
  segmentStartOfNumber,
  type Lsn,
} from '../../src/wal/lsn';
import { serverUser, type PgCluster } from './pg-cluster';
import { repoRoot } from './repo-root';

export const WALVAULT_BIN = path.join(repoRoot(), 'bin', 'walvault');

export interface SiteSettings {
  pg: string;
  archive: string;
  state: string;
  slot?: string;
  mode?: 'archive' | 'sync';
  application_name?: string;
  partial_interval_seconds?: number;
  status_interval_seconds?: number;
  create_slot?: boolean;
  upload_concurrency?: number;
  compression?: string;
  archive_file_mode?: string;
  encryption_public_key_file?: string;
  backup_interval_hours?: number;
  full_backup_interval_days?: number;
  max_incremental_chain?: number;
  backup_fast_checkpoint?: boolean;
  backup_compression?: 'server' | 'client';
  retain_backups?: number;
  recovery_window_days?: number;
  check_interval_hours?: number;
  drill_interval_hours?: number;
  drill_pg_bin?: string;
  drill_query?: string;
  storage_stall_seconds?: number;
  spool_alert_mib?: number;
  /** The site's [s3] table. */
  s3?: Record<string, string | number | boolean>;
  /** The site's [azure] table. */
  azure?: Record<string, string | number | boolean>;
}

/**
 * A local archive that servers running as another OS user (restored clusters, whose
 * restore_command runs `walvault wal-fetch` as `postgres`) can read, set up as the
 * documentation tells operators to: the archive directory belongs to the server user's group
 * with the setgid bit, so everything below inherits that group, and the site writes objects
 * 0640 (`archive_file_mode`). Returns the settings to add; none when the servers run as us.
 */
function shareArchiveWithServer(archive: string): Partial<SiteSettings> {
  const user = serverUser();
  if (!user || /^[a-z][a-z0-9+.-]*:\/\//i.test(archive)) return {};
  if (!fs.existsSync(archive)) {
    fs.mkdirSync(archive, { recursive: true });
    fs.chownSync(archive, process.getuid!(), user.gid);
    fs.chmodSync(archive, 0o2750);
  }
  return { archive_file_mode: '0640' };
}

/**
 * Writes a JSON config with the given sites and returns its path. Scheduled base backups
 * (and archive checks) are off unless a site asks for them: most tests are about WAL, and a backup started
 * behind their back would take a walsender and add WAL. A local archive is shared with the
 * server user (see shareArchiveWithServer) unless the site sets archive_file_mode itself.
 */
export function writeConfig(dir: string, sites: Record<string, SiteSettings>, logLevel = 'debug'): string {
  const file = path.join(dir, `walvault-${Object.keys(sites).join('-')}.json`);
  const withDefaults = Object.fromEntries(
    Object.entries(sites).map(([k, v]) => [
      k,
      { backup_interval_hours: 0, check_interval_hours: 0, ...(v.archive_file_mode === undefined ? shareArchiveWithServer(v.archive) : {}), ...v },
    ]),
  );
  fs.writeFileSync(file, JSON.stringify({ log: { level: logLevel }, sites: withDefaults }, null, 2));
  return file;
}

/** Adds `[http] listen = 127.0.0.1:port` to a config file writeConfig wrote. */
export function listenHttp(config: string, port: number): void {
  const doc = JSON.parse(fs.readFileSync(config, 'utf8'));
  doc.http = { listen: `127.0.0.1:${port}` };
  fs.writeFileSync(config, JSON.stringify(doc, null, 2));
}

export function pgConninfo(cluster: PgCluster, user = 'postgres'): string {
  return `host=127.0.0.1 port=${cluster.port} user=${user} dbname=postgres`;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export class WalvaultProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  stderr = '';
  stdout = '';
  readonly exited: Promise<Exit>;
  private waiters: Array<() => void> = [];

  private constructor(args: string[], env: NodeJS.ProcessEnv, cwd?: string) {
    this.child = spawn(process.execPath, [WALVAULT_BIN, ...args], {
      env: { ...process.env, ...env },
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let partial = '';
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        try {
          this.lines.push(JSON.parse(line));
        } catch {
          this.lines.push({ msg: line });
        }
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.stdout += c));
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        for (const w of this.waiters.splice(0)) w();
        resolve({ code, signal });
      });
    });
  }

  static start(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): WalvaultProcess {
    return new WalvaultProcess(args, env, cwd);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits for a log line matching `pred`; fails early if the process exits. */
  async waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 30000, what = 'a log line'): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (!this.running) throw new Error(`walvault exited before ${what}; stderr:\n${this.stderr.slice(-4000)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stderr:\n${this.stderr.slice(-4000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 60000): Promise<Exit> {
    if (this.running) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async kill9(): Promise<Exit> {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }
}

/**
 * One site "main" for `cluster` under `work` (archive, state, partials and status every
 * second, plus `extra`), and its daemon started and streaming.
 */
export async function startStreamingSite(
  cluster: PgCluster,
  work: string,
  extra: Partial<SiteSettings> = {},
): Promise<{ config: string; archive: string; receiver: WalvaultProcess }> {
  const archive = path.join(work, 'archive');
  const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), partial_interval_seconds: 1, status_interval_seconds: 1, ...extra } }, 'info');
  const receiver = WalvaultProcess.start(['run', '--config', config]);
  await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
  return { config, archive, receiver };
}

/**
 * Runs `fn` while a `walvault run --config` daemon streams (from its 'starting replication'
 * on), then stops it with SIGTERM whatever `fn` did.
 */
export async function withReceiver<T>(config: string, fn: (receiver: WalvaultProcess) => Promise<T>): Promise<T> {
  const receiver = WalvaultProcess.start(['run', '--config', config]);
  try {
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    return await fn(receiver);
  } finally {
    await receiver.stop('SIGTERM', 30000);
  }
}

/** `walvault backup push --fast` with `args` (the site); the backup's name, or the test fails. */
export async function pushBackup(args: string[]): Promise<string> {
  const r = await runWalvault(['backup', 'push', ...args, '--fast'], {}, 120000);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs walvault to completion. */
export async function runWalvault(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60000): Promise<RunResult> {
  const p = WalvaultProcess.start(args, env);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const exit = await p.exited;
  clearTimeout(timer);
  return { code: exit.code, stdout: p.stdout, stderr: p.stderr };
}

/**
 * The archive at `location`: a directory, or an s3:// URL (the S3 server then comes from the
 * AWS_* environment, see S3Server.useInThisProcess). Close it when done: an S3 client keeps
 * connections open.
 */
export function openArchive(location: string): Archive {
  // What a test writes (an object put back, say) must stay readable by the servers' user, as
  // the site's own objects are (shareArchiveWithServer).
  return new Archive(storageFromUrl(location, {}, serverUser() ? { fileMode: 0o640 } : {}));
}

/** Opens the archive for one look and closes it again. */
export async function withArchive<T>(location: string, fn: (a: Archive) => Promise<T>): Promise<T> {
  const archive = openArchive(location);
  try {
    return await fn(archive);
  } finally {
    await archive.close();
  }
}

/** Names of finished segments in the archive, sorted. */
export async function archivedSegments(location: string): Promise<string[]> {
  return (await withArchive(location, (a) => a.listWal())).filter(isSegmentFileName).sort();
}

/**
 * End of the WAL the archive holds without a gap from its lowest segment on timeline `tli`
 * (finished segments, then the partial of the next one).
 */
export async function archivedCoverage(location: string, segSize: number, tli = 1): Promise<Lsn | null> {
  return withArchive(location, (archive) => coverageOf(archive, segSize, tli));
}

/**
 * A partial is overwritten in place while the receiver runs. S3 replaces objects atomically,
 * but s3rver writes into the existing file, so a GET racing a PUT can see a torn object, or
 * one that shrank under the read, whose answer then ends short of its announced length (the
 * receiver's own read-back proves what is at rest): such a read is repeated, for up to
 * about two seconds.
 */
export async function getPartial(archive: Archive, key: string): Promise<Buffer | null> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await archive.get(key);
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const torn = e.code === 'ARCHIVE_CORRUPT' || (e.code === 'STORAGE_IO' && /IncompleteBody/.test(e.message ?? ''));
      // On a loaded machine s3rver can take a second or more to finish the PUT it is in.
      if (attempt >= 20 || !torn) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function coverageOf(archive: Archive, segSize: number, tli: number): Promise<Lsn | null> {
  const names = await archive.listWal();
  const segs = names
    .filter(isSegmentFileName)
    .map((n) => parseSegmentFileName(n, segSize))
    .filter((s) => s.tli === tli)
    .map((s) => s.segNo)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (segs.length === 0) return null;
  let next = segs[0];
  for (const s of segs) {
    if (s !== next) break;
    next = s + 1n;
  }
  let end = segmentStartOfNumber(next, segSize);
  const partialName = names.find((n) => n.endsWith('.partial') && isSegmentFileName(n.slice(0, 24)) && parseSegmentFileName(n.slice(0, 24), segSize).segNo === next && parseSegmentFileName(n.slice(0, 24), segSize).tli === tli);
  if (partialName) {
    const data = await getPartial(archive, 'wal/' + partialName);
    if (data) end += BigInt(data.length);
  }
  return end;
}

/** Asserts with a message: segments from `first` to `last` (inclusive) all present. */
export function missingSegments(names: string[], segSize: number, tli: number): string[] {
  const nos = names.filter(isSegmentFileName).map((n) => parseSegmentFileName(n, segSize)).filter((s) => s.tli === tli).map((s) => s.segNo);
  if (nos.length === 0) return [];
  const set = new Set(nos.map(String));
  const min = nos.reduce((a, b) => (a < b ? a : b));
  const max = nos.reduce((a, b) => (a > b ? a : b));
  const missing: string[] = [];
  for (let s = min; s <= max; s++) if (!set.has(String(s))) missing.push(String(s));
  return missing;
}

/**
 * Fetches each named segment with `walvault wal-fetch` and compares it with the server's
 * pg_wal file. Returns the names that differ and the names the server no longer has.
 */
export async function compareFetchedWithServer(
  archiveDir: string,
  cluster: PgCluster,
  names: string[],
  workDir: string,
): Promise<{ compared: number; differ: string[]; fetchFailed: string[]; fetchedDir: string }> {
  const fetchedDir = path.join(workDir, 'fetched');
  fs.mkdirSync(fetchedDir, { recursive: true });
  const differ: string[] = [];
  const fetchFailed: string[] = [];
  let compared = 0;
  for (const name of names) {
    const dest = path.join(fetchedDir, name);
    const r = await runWalvault(['wal-fetch', '--archive', archiveDir, name, dest]);
    if (r.code !== 0) {
      fetchFailed.push(`${name}: exit ${r.code} ${r.stderr.trim()}`);
      continue;
    }
    let server: Buffer;
    try {
      server = await cluster.readWalFile(name);
    } catch {
      continue; // recycled by the server; compared by the caller's other checks
    }
    compared++;
    if (!server.equals(fs.readFileSync(dest))) differ.push(name);
  }
  return { compared, differ, fetchFailed, fetchedDir };
}

export { parseLsn, formatLsn };

/**
 * Ends the current segment on `cluster` and waits until the archive holds it. Returns the
 * switch position and the name of that last segment.
 */
export async function switchAndWaitArchived(
  cluster: PgCluster,
  archiveDir: string,
  tli = 1,
  timeoutMs = 120000,
): Promise<{ switchLsn: Lsn; lastName: string }> {
  const switchLsn = parseLsn(await cluster.switchWal());
  const segSize = cluster.walSegSize;
  const lastName = segmentFileName(tli, segmentNumber(switchLsn - 1n, segSize), segSize);
  const deadline = Date.now() + timeoutMs;
  // s3rver can answer a listing with HTTP 500 while objects are deleted under it (it stats
  // files it has just listed): a poll that fails is simply repeated.
  let lastError = '';
  const listed = () =>
    archivedSegments(archiveDir).catch((err: Error) => {
      lastError = err.message;
      return [] as string[];
    });
  while (!(await listed()).includes(lastName)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${lastName} to be archived${lastError ? ` (last listing error: ${lastError})` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { switchLsn, lastName };
}

/**
 * The archive's finished segments of timeline 1 have no gap, reach `lastName`, and each one
 * fetched with `walvault wal-fetch` equals the server's pg_wal file. Returns the names.
 */
export async function assertArchiveMatchesServer(
  archiveDir: string,
  cluster: PgCluster,
  workDir: string,
  lastName: string,
): Promise<{ names: string[]; fetchedDir: string }> {
  const names = await archivedSegments(archiveDir);
  assert.deepEqual(missingSegments(names, cluster.walSegSize, 1), [], 'no gap between the first and last archived segment');
  assert.ok(names.length > 0 && names[names.length - 1] >= lastName, `the archive reaches ${lastName}`);
  const cmp = await compareFetchedWithServer(archiveDir, cluster, names, workDir);
  assert.deepEqual(cmp.fetchFailed, [], 'every archived segment can be fetched');
  assert.deepEqual(cmp.differ, [], 'every fetched segment equals the server file');
  assert.equal(cmp.compared, names.length, 'every archived segment was compared with the server');
  return { names, fetchedDir: cmp.fetchedDir };
}
