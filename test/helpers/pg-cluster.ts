/**
 * Throwaway PostgreSQL clusters for the test suite: real servers, no mocks. PgCluster starts
 * (initdb, a standby of another, or an existing data directory), stops, restarts, promotes
 * and removes one, and gives the tests their ways in (connections, psql, pgbench).
 *
 * Its parts, each with one job: pg-binaries.ts (which binaries, per major version),
 * os-users.ts (the server OS user when we are root; runTestAs), run-command.ts (running
 * PostgreSQL's programs), server-config.ts (settings and pg_hba.conf), cluster-data-dir.ts
 * (initdb, a standby's base backup, adopting a directory), cluster-reaper.ts (no server
 * outlives its test process), temp-dirs.ts, free-port.ts, wait-for.ts. The names tests use
 * from those are exported from here too.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import { stopPrefetcher } from '../../src/restore/prefetch';
import { adoptDataDir, baseBackupFrom, initdb } from './cluster-data-dir';
import { BASE_PREFIX, forgetCluster, reapOrphans, trackCluster, writeOwnerRecord } from './cluster-reaper';
import { freePort, releasePort } from './free-port';
import { serverUser } from './os-users';
import { binDirFor, clientBin, DEFAULT_MAJOR, ensureClientTools } from './pg-binaries';
import { CommandError, run, runSync, spawnOptions, type RunResult } from './run-command';
import { HOST, SUPERUSER, writeClusterConfig, writeHarnessConf, type ServerSettings } from './server-config';
import { checkTraversable, removeDir } from './temp-dirs';
import { waitFor } from './wait-for';

export { availableMajors, binDirFor, CLIENT_BIN_DIR, clientBin, DEBIAN_PG15_BIN, DEFAULT_MAJOR, SUPPORTED_MAJORS, verifybackupReads, waldumpReads } from './pg-binaries';
export { chownForServer, runTestAs, serverUser, unprivilegedUser, type ServerUser } from './os-users';
export { removeDir, tmpDir } from './temp-dirs';
export { freePort } from './free-port';
export { waitFor } from './wait-for';

export interface ClusterOptions {
  major?: number;
  walSegSizeMiB?: number;
  settings?: Record<string, string | number>;
  hba?: string[];
  standbyOf?: PgCluster;
  /**
   * Start on an existing data directory (for example one restored by walvault)
   * instead of running initdb. It is chowned to the server user, its port and
   * socket settings are replaced, and destroy() leaves it in place: the test
   * that made it removes it.
   */
  dataDir?: string;
}

export interface ConnectOptions {
  user?: string;
  password?: string;
  database?: string;
}

export type StopMode = 'smart' | 'fast' | 'immediate';

function sqlRowsFirst<T>(rows: any[], col: string): T {
  if (rows.length === 0) throw new Error(`query returned no rows (wanted ${col})`);
  return rows[0][col] as T;
}

export class PgCluster {
  readonly major: number;
  readonly host = HOST;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly binDir: string;
  readonly baseDir: string;
  readonly logFile: string;
  superuser = SUPERUSER;

  private _port: number;
  private _walSegSize = 0;
  private running = false;
  private destroyed = false;
  private readonly opts: ClusterOptions;
  private readonly children = new Set<ChildProcess>();

  private constructor(args: {
    major: number;
    binDir: string;
    baseDir: string;
    dataDir: string;
    port: number;
    opts: ClusterOptions;
  }) {
    this.major = args.major;
    this.binDir = args.binDir;
    this.baseDir = args.baseDir;
    this.dataDir = args.dataDir;
    this.socketDir = path.join(args.baseDir, 'sock');
    this.logFile = path.join(args.baseDir, 'server.log');
    this._port = args.port;
    this.opts = args.opts;
  }

  get port(): number {
    return this._port;
  }

  /** wal_segment_size in bytes, as reported by the running server. */
  get walSegSize(): number {
    return this._walSegSize;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** The harness's settings for this server (server-config.ts). */
  private serverSettings(): ServerSettings {
    return { port: this._port, socketDir: this.socketDir, settings: this.opts.settings };
  }

  static async start(opts: ClusterOptions = {}): Promise<PgCluster> {
    ensureClientTools();
    const primary = opts.standbyOf;
    if (primary && opts.major !== undefined && opts.major !== primary.major) {
      throw new Error(`a standby must run the primary's major version (${primary.major}), not ${opts.major}`);
    }
    if (primary && opts.dataDir) throw new Error('standbyOf and dataDir are mutually exclusive');
    const major = primary ? primary.major : (opts.major ?? DEFAULT_MAJOR);
    const segMiB = opts.walSegSizeMiB ?? 1;
    if (!Number.isInteger(segMiB) || segMiB < 1 || segMiB > 1024 || (segMiB & (segMiB - 1)) !== 0) {
      throw new Error(`walSegSizeMiB must be a power of two between 1 and 1024, got ${segMiB}`);
    }
    const binDir = binDirFor(major);
    const user = serverUser();

    reapOrphans();

    checkTraversable(os.tmpdir());
    // sun_path holds 107 bytes; PostgreSQL's own error for a longer one is cryptic.
    if (path.join(os.tmpdir(), `${BASE_PREFIX}XXXXXX`, 'sock', '.s.PGSQL.65535').length > 107) {
      throw new Error(`temp dir ${os.tmpdir()} is too long for a Unix socket path; set TMPDIR to a short path such as /tmp`);
    }
    const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), BASE_PREFIX));
    fs.chmodSync(baseDir, 0o755);
    const dataDir = opts.dataDir ? path.resolve(opts.dataDir) : path.join(baseDir, 'data');
    const cluster = new PgCluster({
      major,
      binDir,
      baseDir,
      dataDir,
      port: await freePort(),
      opts,
    });
    trackCluster(cluster);
    try {
      writeOwnerRecord(baseDir, binDir, dataDir);
      fs.mkdirSync(cluster.socketDir, { mode: 0o755 });
      fs.writeFileSync(cluster.logFile, '');
      if (user) {
        fs.chownSync(baseDir, user.uid, user.gid);
        fs.chownSync(cluster.socketDir, user.uid, user.gid);
        fs.chownSync(cluster.logFile, user.uid, user.gid);
      }

      if (primary) {
        await baseBackupFrom(cluster, primary);
      } else if (opts.dataDir) {
        adoptDataDir(cluster);
      } else {
        await initdb(cluster, segMiB);
      }
      writeClusterConfig(cluster.dataDir, cluster.serverSettings(), opts.hba);
      await cluster.startServer(true);
      cluster._walSegSize = Number(
        sqlRowsFirst<string>(await cluster.query(`SELECT pg_size_bytes(current_setting('wal_segment_size')) AS b`), 'b'),
      );
      if (primary) {
        await waitFor(
          async () => {
            const rows = await cluster.query(`SELECT status FROM pg_stat_wal_receiver`);
            return rows.length > 0 && rows[0].status === 'streaming';
          },
          { timeoutMs: 30_000, intervalMs: 50, what: `standby on port ${cluster.port} to stream from ${primary.port}` },
        );
      }
      return cluster;
    } catch (err) {
      const e = err as Error;
      // The dirs are about to go: keep what the server said in the error.
      if (cluster.running && !e.message.includes('server log tail')) {
        e.message += `\n--- server log tail ---\n${cluster.logTail()}`;
      }
      await cluster.destroy().catch(() => undefined);
      throw e;
    }
  }

  // -- lifecycle ------------------------------------------------------------

  private pgCtl(args: string[], timeoutMs = 90_000): Promise<RunResult> {
    return run(path.join(this.binDir, 'pg_ctl'), ['-D', this.dataDir, ...args], {
      asServer: true,
      cwd: this.baseDir,
      env: { HOME: this.baseDir },
      timeoutMs,
    });
  }

  /** The last lines of the server log, for error messages. */
  logTail(lines = 40): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-lines - 1).join('\n');
    } catch (err) {
      return `(no server log: ${(err as Error).message})`;
    }
  }

  private async startServer(allowPortRetry: boolean): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const logSizeBefore = fs.statSync(this.logFile).size;
      try {
        // pg_ctl -l redirects the postmaster's stdio to the log, so our pipes close when pg_ctl exits.
        await this.pgCtl(['-l', this.logFile, '-w', '-t', '60', 'start']);
        this.running = true;
        return;
      } catch (err) {
        const log = fs.readFileSync(this.logFile, 'utf8').slice(logSizeBefore);
        // Another process (a parallel test file) may grab the port between our probe and the bind.
        if (allowPortRetry && attempt < 5 && /could not bind|Address already in use/i.test(log)) {
          this._port = await freePort();
          writeHarnessConf(this.dataDir, this.serverSettings());
          continue;
        }
        const tail = log.split('\n').slice(-40).join('\n');
        throw new Error(
          `PostgreSQL ${this.major} failed to start on port ${this._port} (data ${this.dataDir}): ${(err as Error).message}\n--- server log tail ---\n${tail}`,
        );
      }
    }
  }

  async stop(mode: StopMode = 'fast'): Promise<void> {
    for (const child of this.children) child.kill('SIGTERM');
    if (!this.running && !fs.existsSync(path.join(this.dataDir, 'postmaster.pid'))) return stopPrefetcher(this.dataDir);
    try {
      await this.pgCtl(['-m', mode, '-w', '-t', '60', 'stop']);
    } catch (err) {
      // The server may have died on its own (a test killed it): then there is nothing to stop.
      if (fs.existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
        throw new Error(`${(err as Error).message}\n--- server log tail ---\n${this.logTail()}`);
      }
    }
    this.running = false;
    // A restored cluster's restore_command may have left a prefetcher, which could otherwise
    // still drop a segment into pg_wal while the test removes the directory.
    await stopPrefetcher(this.dataDir);
  }

  /** Starts a stopped server again, on the same port. */
  async start(): Promise<void> {
    await this.startServer(false);
  }

  async restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.stop(mode);
    // Same port: standbys and clients hold it in their connection settings.
    await this.startServer(false);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    try {
      // Immediate: the data is thrown away, no point in a shutdown checkpoint.
      await this.stop('immediate');
    } catch (err) {
      // Deleting the dirs under a live server would leave it running unseen: kill it first.
      this.killPostmaster();
      throw err;
    } finally {
      this.removeFiles();
    }
  }

  private killPostmaster(): void {
    try {
      const pid = Number(fs.readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }

  /** Synchronous destroy for the process 'exit' hook, where nothing async runs. */
  destroySync(): void {
    if (this.destroyed) return;
    for (const child of this.children) child.kill('SIGKILL');
    if (fs.existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
      try {
        runSync(path.join(this.binDir, 'pg_ctl'), ['-D', this.dataDir, '-m', 'immediate', '-w', '-t', '10', 'stop'], {
          asServer: true,
          cwd: this.baseDir,
        });
      } catch {
        // best effort
      }
    }
    this.running = false;
    if (process.env.WALVAULT_KEEP_PG) {
      this.destroyed = true;
      forgetCluster(this);
      return;
    }
    this.removeFiles();
  }

  private removeFiles(): void {
    this.destroyed = true;
    forgetCluster(this);
    releasePort(this._port);
    removeDir(this.baseDir);
  }

  /** pg_ctl promote -w, then wait until the server has left recovery. */
  async promote(): Promise<void> {
    await this.pgCtl(['-w', '-t', '60', 'promote']);
    await waitFor(async () => !(await this.isInRecovery()), {
      timeoutMs: 30_000,
      what: `server on port ${this._port} to leave recovery`,
    });
  }

  // -- access ---------------------------------------------------------------

  connectionString(opts: ConnectOptions = {}): string {
    const user = encodeURIComponent(opts.user ?? this.superuser);
    const auth = opts.password !== undefined ? `${user}:${encodeURIComponent(opts.password)}` : user;
    const db = encodeURIComponent(opts.database ?? 'postgres');
    return `postgresql://${auth}@${HOST}:${this._port}/${db}`;
  }

  /** A normal (non-replication) connection settings object for `pg`. */
  clientConfig(opts: ConnectOptions = {}) {
    return {
      host: HOST,
      port: this._port,
      user: opts.user ?? this.superuser,
      password: opts.password,
      database: opts.database ?? 'postgres',
    };
  }

  async query(sql: string, opts: ConnectOptions = {}): Promise<any[]> {
    const client = new Client(this.clientConfig(opts));
    // A server stopped under us emits 'error' on an idle client; unhandled it would crash the test process.
    client.on('error', () => undefined);
    await client.connect();
    try {
      const res = await client.query(sql);
      // Multi-statement SQL gives an array of results: return the last one's rows.
      const last = Array.isArray(res) ? res[res.length - 1] : res;
      return last?.rows ?? [];
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private clientEnv(): Record<string, string> {
    return {
      PGHOST: HOST,
      PGPORT: String(this._port),
      PGUSER: this.superuser,
      PGDATABASE: 'postgres',
      PGCLIENTENCODING: 'UTF8',
      PGCONNECT_TIMEOUT: '10',
    };
  }

  /** psql -X -At -v ON_ERROR_STOP=1 -c sql; resolves stdout without its final newline. */
  async psql(sql: string): Promise<string> {
    const { stdout } = await run(clientBin('psql'), ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
      env: this.clientEnv(),
    });
    return stdout.replace(/\n$/, '');
  }

  /** Runs PG15 pgbench with PGHOST/PGPORT/PGUSER/PGDATABASE pointing here (args may override). */
  async pgbench(args: string[]): Promise<string> {
    try {
      return (await run(clientBin('pgbench'), args, { env: this.clientEnv() })).stdout;
    } catch (err) {
      if (err instanceof CommandError) throw new Error(`pgbench ${args.join(' ')} failed: ${err.stderr || err.message}`);
      throw err;
    }
  }

  /** pgbench as a background load generator; killed by stop()/destroy() if still running. */
  pgbenchProcess(args: string[]): ChildProcess {
    const child = spawn(clientBin('pgbench'), args, { ...spawnOptions({ env: this.clientEnv() }), stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    // Unread pipes would fill up and stall pgbench; callers may still attach their own listeners.
    child.stdout!.resume();
    child.stderr!.resume();
    return child;
  }

  async isInRecovery(): Promise<boolean> {
    return sqlRowsFirst<boolean>(await this.query('SELECT pg_is_in_recovery() AS r'), 'r');
  }

  /** SELECT pg_switch_wal(); resolves the switch LSN (extra to the void the callers may ignore). */
  async switchWal(): Promise<string> {
    return sqlRowsFirst<string>(await this.query('SELECT pg_switch_wal()::text AS lsn'), 'lsn');
  }

  async currentWalLsn(): Promise<string> {
    const rows = await this.query(
      `SELECT CASE WHEN pg_is_in_recovery()
                   THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                   ELSE pg_current_wal_lsn() END::text AS lsn`,
    );
    return sqlRowsFirst<string>(rows, 'lsn');
  }

  /** Name of the WAL segment holding the current insert LSN (primary only). */
  async currentWalFileName(): Promise<string> {
    return sqlRowsFirst<string>(await this.query('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f'), 'f');
  }

  walFilePath(name: string): string {
    return path.join(this.dataDir, 'pg_wal', name);
  }

  async readWalFile(name: string): Promise<Buffer> {
    return fs.promises.readFile(this.walFilePath(name));
  }
}
