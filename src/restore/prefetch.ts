/**
 * Prefetch for restore_command. PostgreSQL runs restore_command once per segment and waits
 * for it, so anything slower than a rename per call makes recovery wait on the store (and
 * on starting Node). One background prefetcher per recovery keeps the next segments ready,
 * verified and fsynced, in `pg_wal/walvault-prefetch/`; restore writes a restore_command
 * whose shell part moves a prefetched segment into place before Node is even started:
 *
 *   mv -f pg_wal/walvault-prefetch/%f %p 2>/dev/null || node walvault wal-fetch ... %f %p
 *
 * Only a miss runs wal-fetch, which fetches the file itself and then tells the prefetcher
 * where recovery is (the `.wanted` file), or starts one. The prefetcher sees segments leave
 * its directory as recovery consumes them and refills the window behind them; it follows a
 * jump (a timeline switch, a restarted recovery) through `.wanted`, and when nothing has
 * moved for a while it removes what it left and exits. It exits at once when the server it
 * serves stops or leaves recovery: nothing will ask for its files, and a promoted cluster's
 * pg_wal should not keep filling for a while after.
 *
 * Only finished segments are prefetched: they are immutable, so a copy taken earlier is the
 * same object. Partials change and are always fetched fresh. Each file is checked against its
 * name (its pages are that segment's, of this cluster) and fsynced before it is renamed into
 * the directory, because the shell's `mv` hands it to PostgreSQL unchecked.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { processAlive, processArgs } from '../util/process-alive';
import { sleep } from '../util/timers';
import { isSegmentFileName, parseSegmentFileName, segmentFileName } from '../wal/lsn';

const PREFETCH_DIR = 'walvault-prefetch';
const LOCK_FILE = '.prefetcher.pid';
const WANTED_FILE = '.wanted';
/** Segments fetched at once (object stores answer each GET with latency). */
const PARALLEL = 2;
/** How long an idle prefetcher waits before it cleans up and exits (test hook: WALVAULT_PREFETCH_IDLE_MS). */
const IDLE_EXIT_MS = 30000;
/** Re-asks the store for the next segment this often at the end of the archive. */
const END_POLL_MS = 1000;
/** Checks the directory at least this often (inotify wakes it sooner). */
const DIR_POLL_MS = 200;

/** Where prefetched segments for restore_command's destination `dest` (%p) live. */
export function prefetchDirFor(dest: string): string {
  return path.join(path.dirname(path.resolve(dest)), PREFETCH_DIR);
}

/** The shell part of restore_command that serves a prefetched segment (PostgreSQL runs it in the data directory). */
export function prefetchShortcut(): string {
  return `mv -f pg_wal/${PREFETCH_DIR}/%f %p 2>/dev/null`;
}

/** Moves a prefetched `name` to `dest`; false when it is not there. Touches no archive. */
export async function takePrefetched(name: string, dest: string): Promise<boolean> {
  const file = path.join(prefetchDirFor(dest), name);
  try {
    await fsp.rename(file, dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  return true;
}

async function lockHolder(dir: string): Promise<number | null> {
  const pid = Number(await fsp.readFile(path.join(dir, LOCK_FILE), 'utf8').catch(() => ''));
  return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : null;
}

/**
 * Takes the prefetch directory's lock for this process; false when a live prefetcher has
 * it. A lock left by a dead one is taken over.
 */
export async function lockPrefetchDir(dir: string): Promise<boolean> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const lock = path.join(dir, LOCK_FILE);
  for (let i = 0; i < 2; i++) {
    try {
      await fsp.writeFile(lock, String(process.pid), { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if ((await lockHolder(dir)) !== null) return false;
      await fsp.rm(lock, { force: true });
    }
  }
  return false;
}

export async function unlockPrefetchDir(dir: string): Promise<void> {
  const lock = path.join(dir, LOCK_FILE);
  const pid = Number(await fsp.readFile(lock, 'utf8').catch(() => ''));
  if (pid === process.pid) await fsp.rm(lock, { force: true });
}

/**
 * After wal-fetch served `name`: tells the running prefetcher that recovery is there, or
 * starts one (`walvault wal-prefetch`, detached from PostgreSQL's restore_command; its output
 * goes nowhere, and its failures only mean later calls fetch for themselves).
 */
export async function nudgePrefetcher(walvault: string, archiveArgs: string[], name: string, dir: string, count: number): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  // Each write differs (pid, time), so asking for the same segment again counts as activity.
  const tmp = path.join(dir, `${WANTED_FILE}.${process.pid}.tmp`);
  await fsp.writeFile(tmp, `${name} ${process.pid} ${Date.now()}\n`, { mode: 0o600 });
  await fsp.rename(tmp, path.join(dir, WANTED_FILE));
  if ((await lockHolder(dir)) !== null) return;
  const child = spawn(process.execPath, [walvault, 'wal-prefetch', ...archiveArgs, '--count', String(count), '--dir', dir, name], {
    detached: true,
    stdio: 'ignore',
  });
  child.on('error', () => undefined);
  child.unref();
}

/** The data directory whose server the prefetch directory `dir` serves, or null when `dir` is not pg_wal/walvault-prefetch. */
export function dataDirOf(dir: string): string | null {
  const abs = path.resolve(dir);
  const walDir = path.dirname(abs);
  return path.basename(abs) === PREFETCH_DIR && path.basename(walDir) === 'pg_wal' ? path.dirname(walDir) : null;
}

/**
 * Stops the prefetcher serving the data directory `dataDir`, if one runs, and waits until it
 * is gone, so that the directory can be removed without a late file landing in it. Only a
 * process whose command line is that directory's prefetcher is signalled (a stale lock's pid
 * may belong to anything by now).
 */
export async function stopPrefetcher(dataDir: string, timeoutMs = 10000): Promise<void> {
  // The prefetcher was started in the server's working directory, whose path has no symlinks.
  const real = await fsp.realpath(dataDir).catch(() => path.resolve(dataDir));
  const dir = path.join(real, 'pg_wal', PREFETCH_DIR);
  const pid = await lockHolder(dir);
  if (pid === null) return;
  const args = processArgs(pid);
  if (!args || !args.includes('wal-prefetch') || !args.includes(dir)) return;
  try {
    process.kill(pid, 'SIGKILL'); // it only ever holds copies; a half-written one is a temporary file
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() > deadline) throw new WalvaultError('INTERNAL', `the prefetcher for ${dataDir} (pid ${pid}) did not exit within ${timeoutMs / 1000} s of SIGKILL`);
    await sleep(20);
  }
}

/**
 * Whether recovery in `dataDir` is over for good: its server stopped (postmaster.pid gone)
 * or it left recovery (PostgreSQL removes recovery.signal and standby.signal when it
 * promotes). Only what was there when the prefetcher started counts, so a directory that is
 * not a running server's is served until idle.
 */
function recoveryWatch(dataDir: string | null | undefined): () => boolean {
  if (!dataDir) return () => false;
  const has = (f: string) => fs.existsSync(path.join(dataDir, f));
  const signals = () => has('recovery.signal') || has('standby.signal');
  const hadServer = has('postmaster.pid');
  const hadSignal = signals();
  return () => (hadServer && !has('postmaster.pid')) || (hadSignal && !signals());
}

export interface PrefetcherOptions {
  dir: string;
  /** The data directory recovering through `dir`: the prefetcher exits when its recovery ends (see dataDirOf). */
  dataDir?: string | null;
  count: number;
  /** The segment recovery asked for last. */
  start: string;
  segSize: number;
  /**
   * Fetches the finished segment `name` into `file` (./fetch-wal-file.ts: verified, checked
   * against its name, fsynced, renamed into place); false when the archive has none (yet).
   * A segment that fails is never placed: the prefetcher stops there (throwing), and
   * wal-fetch, fetching that segment itself, reports it and stops recovery.
   */
  fetch(name: string, file: string): Promise<boolean>;
  idleExitMs?: number;
}

/**
 * Keeps the `count` segments after the one recovery consumed last in `dir`, until nothing has
 * happened for a while; then removes what it left there. The caller holds the directory's lock.
 */
export async function runPrefetcher(o: PrefetcherOptions): Promise<void> {
  const idleExitMs = o.idleExitMs ?? (Number(process.env.WALVAULT_PREFETCH_IDLE_MS) || IDLE_EXIT_MS);
  let { tli, segNo: consumed } = parseSegmentFileName(o.start, o.segSize);
  // Segment files present after the last pass: one that vanishes was taken by recovery.
  let seen = new Set<string>();
  for (const f of await fsp.readdir(o.dir)) {
    if (/^\..*\.walvault-[0-9]+\.tmp$/.test(f)) await fsp.rm(path.join(o.dir, f), { force: true }); // a dead prefetcher's
  }
  const recoveryOver = recoveryWatch(o.dataDir);
  let lastWanted = '';
  let lastActivity = Date.now();
  let wake: (() => void) | null = null;
  const watcher = (() => {
    try {
      return fs.watch(o.dir, () => wake?.());
    } catch {
      return null; // polling alone still works
    }
  })();
  const nap = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        wake = null;
        resolve();
      }, ms);
      wake = () => {
        clearTimeout(t);
        wake = null;
        resolve();
      };
    });
  try {
    for (;;) {
      if (recoveryOver()) return;
      const wanted = (await fsp.readFile(path.join(o.dir, WANTED_FILE), 'utf8').catch(() => '')).trim();
      if (wanted !== lastWanted) {
        lastWanted = wanted;
        const name = wanted.split(' ')[0];
        if (isSegmentFileName(name)) {
          ({ tli, segNo: consumed } = parseSegmentFileName(name, o.segSize));
          lastActivity = Date.now();
        }
      }
      const listed = await fsp.readdir(o.dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null; // the directory was removed: nothing to serve
        throw err;
      });
      if (listed === null) return;
      const present = new Set(listed.filter(isSegmentFileName));
      for (const name of seen) {
        if (present.has(name)) continue;
        // Gone, so recovery took it: it is at least there now.
        const seg = parseSegmentFileName(name, o.segSize);
        if (seg.tli === tli && seg.segNo > consumed) consumed = seg.segNo;
        lastActivity = Date.now();
      }
      // What recovery will not ask for any more (behind it, or another timeline) goes.
      for (const name of present) {
        const seg = parseSegmentFileName(name, o.segSize);
        if (seg.tli !== tli || seg.segNo <= consumed) {
          await fsp.rm(path.join(o.dir, name), { force: true });
          present.delete(name);
        }
      }
      const missing: string[] = [];
      for (let i = 1n; i <= BigInt(o.count) && missing.length < PARALLEL; i++) {
        const name = segmentFileName(tli, consumed + i, o.segSize);
        if (!present.has(name)) missing.push(name);
      }
      let atEnd = missing.length === 0;
      if (missing.length > 0) {
        // Each lands in the directory as soon as it is whole and checked; all have settled
        // before a failure stops the prefetcher, so none lands after its clean-up.
        const got = await Promise.allSettled(missing.map((name) => o.fetch(name, path.join(o.dir, name))));
        const failed = got.find((g): g is PromiseRejectedResult => g.status === 'rejected');
        if (failed) throw failed.reason;
        if (recoveryOver()) return;
        for (let i = 0; i < missing.length; i++) {
          if ((got[i] as PromiseFulfilledResult<boolean>).value) {
            present.add(missing[i]);
            lastActivity = Date.now();
          } else {
            atEnd = true; // the end of the archive, for now
          }
        }
      }
      seen = present;
      if (Date.now() - lastActivity > idleExitMs) return;
      if (atEnd) await nap(missing.length === 0 ? DIR_POLL_MS : END_POLL_MS);
    }
  } finally {
    watcher?.close();
    // Cheap to fetch again should recovery come back; left here they would only take space.
    for (const f of await fsp.readdir(o.dir).catch(() => [] as string[])) {
      if (isSegmentFileName(f) || f.endsWith(`.walvault-${process.pid}.tmp`)) await fsp.rm(path.join(o.dir, f), { force: true });
    }
  }
}
