/**
 * `walvault wal-fetch WALFILENAME DEST`, the restore_command form (`%f %p`).
 * Exit 0: DEST written atomically. Exit 1, silently: the archive does not have the file
 * (PostgreSQL probes for files that may not exist), and holds no WAL after it that recovery
 * through it would read (../restore/wal-miss.ts: a gap stops recovery instead, unless
 * --accept-gap). Anything else: a message and exit 126.
 *
 * Why 126: PostgreSQL reads any exit status up to 125 as "no such file", and archive
 * recovery then ends and promotes right there, skipping every later segment. A status above
 * 125 (what a shell reports for a command it cannot run) makes it stop recovery instead
 * (RestoreArchivedFile, wait_result_is_any_signal), so a damaged object or an unreachable
 * store cannot end a restore early and quietly. Storage failures are retried first.
 *
 * A store that does not answer must not hold recovery forever either: each attempt ends when
 * the store has given no answer or progress for `--timeout` seconds (the S3 deadlines, see
 * ../storage/s3.ts), after three the command says so and exits 126.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Archive } from '../archive/archive';
import { isWalvaultError, WalvaultError } from '../errors';
import { isHistoryFileName, isSegmentFileName } from '../wal/lsn';
import type { WalClusterIdentity } from '../wal/wal-identity';
import { DestinationWriteError } from '../restore/durable-file';
import { fetchWalFile } from '../restore/fetch-wal-file';
import { dataDirOf, lockPrefetchDir, nudgePrefetcher, prefetchDirFor, runPrefetcher, takePrefetched, unlockPrefetchDir } from '../restore/prefetch';
import type { S3Settings } from '../storage/s3';
import { archiveFromOptions } from './archive-option';
import { reportAndExit } from './fail';

export async function walFetchCommand(
  walFileName: string,
  dest: string,
  opts: WalFetchOptions,
): Promise<number> {
  try {
    if (!isSegmentFileName(walFileName) && !isHistoryFileName(walFileName) && !/^[0-9A-F]{24}\.partial$/.test(walFileName)) {
      throw new WalvaultError(
        'WAL_BAD_NAME',
        `"${walFileName}" is not a WAL file name (24 upper-case hex digits, or TTTTTTTT.history)`, { fix: `pass %f from restore_command` },
      );
    }
    const ahead = prefetchCount(opts.prefetch);
    const prefetchable = ahead > 0 && isSegmentFileName(walFileName);
    const nudge = () => nudgePrefetcher(fs.realpathSync(process.argv[1]), archiveArgs(opts), walFileName, prefetchDirFor(dest), ahead).catch(() => undefined);
    // A file the prefetcher left is moved into place; no archive is opened. (restore's
    // restore_command does this in the shell before Node starts; this is for hand-written ones.)
    if (prefetchable && (await takePrefetched(walFileName, dest))) {
      await nudge();
      return 0;
    }
    // A miss: the prefetcher is told (or started) first, so it fetches what comes next while
    // this call fetches this one.
    if (prefetchable) await nudge();
    const { openSiteReader } = await import('../archive/site-archive');
    const archive = openSiteReader(archiveFromOptions(opts), warnLine, fetchDeadlines(opts.timeout));
    // Nothing is renamed to DEST unless the whole object decoded, matched its checksums and
    // is the file its name says.
    const fetch = (name: string, padToSegment?: boolean) => withRetry(() => fetchWalFile(archive, name, dest, { cluster: () => clusterOf(archive, name), padToSegment }));
    if (await fetch(walFileName)) return 0;
    // The end of the archive, or a gap in it (a WAL_GAP error unless accepted or a
    // standby), or a segment a running receiver is still storing, now there. Decided
    // before a partial is served: a partial left beside a lost segment must not hide a gap.
    const miss = await (await import('../restore/wal-miss')).missingWal(archive, walFileName, { dest, acceptGap: opts.acceptGap === true });
    if (miss === 'arrived') {
      if (await fetch(walFileName)) return 0;
      throw new WalvaultError('STORAGE_IO', `${archive.label(Archive.walKey(walFileName))} appeared and vanished again while it was fetched`, { fix: `find what deletes from this archive (walvault writes it only through its receiver and commands) and stop it` });
    }
    // The end of the archive: a segment that was never completed exists only as NAME.partial
    // (the receiver's newest upload, or a timeline's last segment). Served as the full
    // segment, zero-padded, recovery replays every byte received and then finds the end of WAL.
    if (opts.servePartial && isSegmentFileName(walFileName) && (await fetch(`${walFileName}.partial`, true))) return 0;
    return miss;
  } catch (err) {
    reportAndExit(err);
    return FAILED;
  }
}

export interface WalFetchOptions {
  config?: string;
  site?: string;
  archive?: string;
  privateKey?: string;
  servePartial?: boolean;
  /** A gap in the archive ends recovery (exit 1, with a line) instead of stopping it. */
  acceptGap?: boolean;
  /** Segments to keep ready ahead (commander gives a string); 0 or absent: none. */
  prefetch?: string;
  /** Seconds an attempt waits for an answer or progress from the store (commander gives a string). */
  timeout?: string;
}

function prefetchCount(text: string | undefined): number {
  if (text === undefined) return 0;
  if (!/^[0-9]+$/.test(text) || Number(text) > 64) throw new WalvaultError('CONFIG_INVALID', `--prefetch ${JSON.stringify(text)}: give how many segments to keep ready, 0 to 64`);
  return Number(text);
}

/** The options that name the archive, for the background prefetcher (absolute paths). */
function archiveArgs(o: WalFetchOptions): string[] {
  const args = o.config ? ['--config', path.resolve(o.config), ...(o.site ? ['--site', o.site] : [])] : ['--archive', o.archive ?? ''];
  if (o.privateKey) args.push('--private-key', path.resolve(o.privateKey));
  if (o.timeout !== undefined) args.push('--timeout', o.timeout);
  return args;
}

/**
 * `walvault wal-prefetch ... --count N --dir DIR NAME`, started by wal-fetch: keeps the N
 * finished segments after the one recovery took last in DIR (see ../restore/prefetch.ts)
 * until recovery stops asking. One per directory at a time.
 */
export async function walPrefetchCommand(name: string, opts: WalFetchOptions & { count: string; dir: string }): Promise<number> {
  const dir = path.resolve(opts.dir);
  const count = prefetchCount(opts.count);
  if (!isSegmentFileName(name) || count === 0) return 0;
  if (!(await lockPrefetchDir(dir))) return 0;
  try {
    const { openSiteReader } = await import('../archive/site-archive');
    const { ArchiveSet } = await import('../archive/archive-set');
    // Objects a site's several archives served from another than the first: the prefetcher's
    // output goes nowhere, so it leaves those to wal-fetch, which says so in the server's log.
    const tookOver = new Set<string>();
    const archive = openSiteReader(archiveFromOptions(opts), (_line, key) => tookOver.add(key), fetchDeadlines(opts.timeout));
    const fetchOne = archive instanceof ArchiveSet ? (n: string, file: string, cluster: WalClusterIdentity) => prefetchUnlessTakenOver(archive, n, file, cluster, tookOver) : (n: string, file: string, cluster: WalClusterIdentity) => fetchWalFile(archive, n, file, { cluster: async () => cluster });
    try {
      const cluster = await archive.readCluster();
      if (!cluster) return 0;
      await runPrefetcher({
        dir,
        dataDir: dataDirOf(dir),
        count,
        start: name,
        segSize: cluster.walSegmentSize,
        fetch: (n, file) => withRetry(() => fetchOne(n, file, cluster)),
      });
    } finally {
      await archive.close();
    }
    return 0;
  } catch {
    // Prefetching only saves time: whatever failed here, wal-fetch fetches for itself.
    return 0;
  } finally {
    await unlockPrefetchDir(dir);
  }
}

/**
 * A segment prefetched from a site's several archives: fetched under a name the shell's `mv`
 * does not look for, and put in place only when the first archive that should hold it served
 * it. One that came from a later archive is dropped (false: not prefetched), so that wal-fetch
 * fetches it when recovery asks and its warning reaches the server's log.
 */
async function prefetchUnlessTakenOver(archive: Archive, name: string, file: string, cluster: WalClusterIdentity, tookOver: Set<string>): Promise<boolean> {
  const held = path.join(path.dirname(file), `.held-${name}`);
  // Only this attempt's reads count: a failed attempt (every archive unreadable) is named too,
  // and its retry may be served by the first archive.
  tookOver.delete(Archive.walKey(name));
  if (!(await fetchWalFile(archive, name, held, { cluster: async () => cluster }))) return false;
  if (tookOver.delete(Archive.walKey(name))) {
    await fs.promises.rm(held, { force: true });
    return false;
  }
  await fs.promises.rename(held, file);
  return true;
}

/** The archive's cluster, which a WAL file must belong to (../wal/wal-identity.ts). */
async function clusterOf(archive: Archive, name: string): Promise<WalClusterIdentity> {
  const cluster = await archive.cluster();
  if (!cluster) throw new WalvaultError('ARCHIVE_CORRUPT', `${archive.storage.description} has no cluster.json, so whether wal/${name} belongs to this cluster cannot be told`, { fix: `point restore_command at this cluster's archive (walvault writes its cluster.json with the first object it archives)` });
  return cluster;
}

/** A site's object read from another of its archives: said in the server's log, where restore_command's stderr goes. */
function warnLine(line: string): void {
  process.stderr.write(`walvault: warning: ${line}\n`);
}

/** Any failure other than "not in the archive": PostgreSQL stops recovery on it. */
const FAILED = 126;
const ATTEMPTS = 3;

/**
 * wal-fetch's S3 deadlines: one request per attempt (the attempts are counted here), each
 * ended when the store gives no answer or progress for `--timeout` seconds (default: the
 * site's request_timeout_seconds, else 30). With the default connect deadline (10 s) that
 * bounds a fetch at about 3 x 43 s when nothing answers.
 */
function fetchDeadlines(timeout: string | undefined): Partial<S3Settings> {
  if (timeout === undefined) return { attempts: 1 };
  const seconds = Number(timeout);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(timeout.trim()) || !(seconds > 0)) {
    throw new WalvaultError('CONFIG_INVALID', `--timeout ${JSON.stringify(timeout)}: give the seconds an attempt may wait for the store's answer or progress, e.g. --timeout 30`);
  }
  return { attempts: 1, requestTimeoutSeconds: seconds };
}

/** `attempt` again with backoff when the store fails (not when the object is damaged). */
async function withRetry<T>(attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      const timedOut = isWalvaultError(err, 'STORAGE_TIMEOUT');
      const transient = timedOut || (isWalvaultError(err) && (err.code === 'STORAGE_IO' || err.code === 'STORAGE_OBJECT_UNREADABLE') && !(err instanceof DestinationWriteError));
      if (!transient) throw err;
      if (n >= ATTEMPTS) {
        if (!timedOut) throw err;
        throw new WalvaultError(
          'STORAGE_TIMEOUT',
          `gave up after ${ATTEMPTS} attempts: ${(err as Error).message}`,
          { fix: `recovery stops here instead of ending early: ` + 'start the server again once the store answers (wal-fetch --timeout sets how long an attempt waits)', cause: err },
        );
      }
      await new Promise((r) => setTimeout(r, 500 * 2 ** n));
    }
  }
}
