/**
 * A test server's data directory, made one of three ways: initdb; a standby's copy of a
 * running primary (pg_basebackup, or a file-level copy for servers newer than the PG15
 * client tools); or an existing directory (one restored by walvault) adopted as it is.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from 'pg';
import { parseLsn, segmentFileName, segmentNumber } from '../../src/wal/lsn';
import { clientBin, CLIENT_MAJOR } from './pg-binaries';
import { chownForServer } from './os-users';
import { run } from './run-command';
import { HOST, quoteConf, SUPERUSER, writeServerFile } from './server-config';
import type { PgCluster } from './pg-cluster';

/** What of the cluster being made these steps use. */
type NewCluster = Pick<PgCluster, 'major' | 'binDir' | 'baseDir' | 'dataDir'>;

export async function initdb(cluster: NewCluster, segMiB: number): Promise<void> {
  await run(
    path.join(cluster.binDir, 'initdb'),
    [
      '-D',
      cluster.dataDir,
      '-A',
      'trust',
      '-U',
      SUPERUSER,
      `--wal-segsize=${segMiB}`,
      // The embedded builds and Debian disagree on available locales; C is
      // everywhere and makes output independent of the machine.
      '--locale=C',
      '-E',
      'UTF8',
      // Skips only initdb's final fsync of the template files (about 10x
      // faster); the running server keeps fsync=on, which is what we test.
      '--no-sync',
    ],
    { asServer: true, cwd: cluster.baseDir, timeoutMs: 120_000 },
  );
}

/** A standby's data directory: a base backup of `primary`, with standby.signal and primary_conninfo. */
export async function baseBackupFrom(cluster: NewCluster, primary: PgCluster): Promise<void> {
  if (!primary.isRunning) throw new Error(`primary on port ${primary.port} is not running`);
  if (primary.major <= CLIENT_MAJOR) {
    await run(
      clientBin('pg_basebackup'),
      ['-D', cluster.dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync', '-h', HOST, '-p', String(primary.port), '-U', SUPERUSER],
      // pg_basebackup creates the data dir, so it must already be the server user.
      { asServer: true, cwd: cluster.baseDir, env: { HOME: cluster.baseDir }, timeoutMs: 120_000 },
    );
  } else {
    // pg_basebackup 15 refuses newer servers ("incompatible server version")
    // and the npm packages ship no client tools.
    await fileCopyBackupFrom(cluster.dataDir, primary);
  }
  // -R writes the conninfo of PG15's libpq, including options older servers'
  // walreceivers reject (PG13: invalid connection option "sslsni"): replace it
  // with the minimal one every version understands.
  const autoConf = path.join(cluster.dataDir, 'postgresql.auto.conf');
  const kept = fs.existsSync(autoConf)
    ? fs
        .readFileSync(autoConf, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '' && !/^\s*primary_conninfo\s*=/.test(l))
    : [];
  kept.push(`primary_conninfo = ${quoteConf(`host=${HOST} port=${primary.port} user=${primary.superuser}`)}`);
  writeServerFile(autoConf, `${kept.join('\n')}\n`);
  writeServerFile(path.join(cluster.dataDir, 'standby.signal'), '');
}

/** Takes over an existing data directory of the cluster's major version. */
export function adoptDataDir(cluster: NewCluster): void {
  if (!fs.existsSync(path.join(cluster.dataDir, 'PG_VERSION'))) {
    throw new Error(`${cluster.dataDir} is not a PostgreSQL data directory (no PG_VERSION)`);
  }
  const version = fs.readFileSync(path.join(cluster.dataDir, 'PG_VERSION'), 'utf8').trim();
  if (Number(version) !== cluster.major) {
    throw new Error(`${cluster.dataDir} is a PostgreSQL ${version} data directory but major ${cluster.major} was asked for`);
  }
  // A data dir left by a crashed server would make pg_ctl think one is running.
  fs.rmSync(path.join(cluster.dataDir, 'postmaster.pid'), { force: true });
  chownForServer(cluster.dataDir);
  // The server refuses group/world-accessible data dirs.
  fs.chmodSync(cluster.dataDir, 0o700);
}

// ---------------------------------------------------------------------------
// File-level base backup (for servers newer than the PG15 pg_basebackup)

/**
 * A non-exclusive low-level base backup: copy the live data dir between
 * backup start and stop, add the backup_label, and the WAL the copy needs so
 * it reaches consistency even if the primary recycles segments meanwhile.
 */
async function fileCopyBackupFrom(dataDir: string, primary: PgCluster): Promise<void> {
  const client = new Client(primary.clientConfig());
  client.on('error', () => undefined);
  await client.connect();
  try {
    // PG15 renamed the functions and dropped the exclusive-mode argument.
    const modern = primary.major >= 15;
    await client.query(modern ? `SELECT pg_backup_start('walvault-harness', true)` : `SELECT pg_start_backup('walvault-harness', true, false)`);
    let copyError: unknown;
    try {
      copyDataDir(primary.dataDir, dataDir);
    } catch (err) {
      copyError = err;
    }
    // The backup must be stopped on this session even if the copy failed.
    const res = await client.query(
      modern
        ? `SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(false)`
        : `SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)`,
    );
    if (copyError) throw copyError;
    const { lsn, labelfile, spcmapfile } = res.rows[0] as { lsn: string; labelfile: string; spcmapfile: string | null };
    fs.writeFileSync(path.join(dataDir, 'backup_label'), labelfile);
    if (spcmapfile) fs.writeFileSync(path.join(dataDir, 'tablespace_map'), spcmapfile);
    copyBackupWal(primary, dataDir, labelfile, lsn);
  } finally {
    await client.end().catch(() => undefined);
  }
  chownForServer(dataDir);
  fs.chmodSync(dataDir, 0o700);
}

// What pg_basebackup leaves out too: runtime state that must not reach a new
// cluster (a copied postmaster.pid would make the copy look already running).
const SKIP_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'backup_label.old',
  'tablespace_map',
  'standby.signal',
  'recovery.signal',
  'current_logfiles',
  'pg_internal.init',
]);
const EMPTY_DIRS = new Set(['pg_wal', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans']);

function copyDataDir(src: string, dst: string): void {
  const copy = (from: string, to: string, top: boolean): void => {
    fs.mkdirSync(to, { recursive: true, mode: 0o700 });
    for (const name of fs.readdirSync(from)) {
      if (SKIP_FILES.has(name) || name.startsWith('pgsql_tmp')) continue;
      const f = path.join(from, name);
      const t = path.join(to, name);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(f);
      } catch (err) {
        // The server removes files while we copy; WAL replay recreates what matters.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (st.isDirectory()) {
        if (top && EMPTY_DIRS.has(name)) {
          fs.mkdirSync(t, { mode: 0o700 });
          if (name === 'pg_wal') fs.mkdirSync(path.join(t, 'archive_status'), { mode: 0o700 });
        } else {
          copy(f, t, false);
        }
      } else if (st.isSymbolicLink()) {
        fs.symlinkSync(fs.readlinkSync(f), t);
      } else if (st.isFile()) {
        try {
          fs.copyFileSync(f, t);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
    }
  };
  copy(src, dst, true);
}

/** Copies the segments from the backup's start to its stop, plus timeline history files. */
function copyBackupWal(primary: PgCluster, dstDataDir: string, labelfile: string, stopLsn: string): void {
  const start = /START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)/.exec(labelfile)?.[1];
  const tli = Number(/START TIMELINE: (\d+)/.exec(labelfile)?.[1]);
  if (!start || !tli) throw new Error(`unexpected backup_label:\n${labelfile}`);
  const stop = segmentFileName(tli, segmentNumber(parseLsn(stopLsn), primary.walSegSize), primary.walSegSize);
  const srcWal = path.join(primary.dataDir, 'pg_wal');
  for (const name of fs.readdirSync(srcWal)) {
    const wanted = /^[0-9A-F]{8}\.history$/.test(name) || (/^[0-9A-F]{24}$/.test(name) && name.slice(0, 8) === start.slice(0, 8) && name >= start && name <= stop);
    if (wanted) fs.copyFileSync(path.join(srcWal, name), path.join(dstDataDir, 'pg_wal', name));
  }
}
