/**
 * `walvault drill`: proves a backup is a backup by using it. Restores the chosen backup
 * (LATEST by default) into a private temporary directory, starts PostgreSQL on it as a hot
 * standby that replays the archive, waits until it has replayed as far as `walvault check`
 * says the archive reaches, runs a sanity query (and the operator's), stops it and removes
 * everything. Each phase is timed: their sum is the recovery time objective, measured.
 *
 * The drill's server can touch nothing outside its directory: unix socket only, in that
 * directory; archive_mode off (no WAL of its own goes anywhere); tablespaces mapped inside
 * the directory; trust authentication for that private socket alone; small shared_buffers
 * (the production value may not fit here). Standby mode, so it never promotes and never
 * starts a timeline of its own.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import { WalvaultError } from '../errors';
import { formatLsn, parseLsn, segmentStart, type Lsn } from '../wal/lsn';
import { confLiteral } from '../restore/recovery-settings';
import { chooseBackup, restoreBackup } from '../restore/restore';
import { stopPrefetcher } from '../restore/prefetch';
import { checkArchive } from './archive-check';

export interface DrillOptions {
  archive: Archive;
  backup: string;
  /** restore_command for the drill's server (this walvault, the same archive). */
  restoreCommand: string;
  /** The directory of pg_ctl for the backup's major version. */
  binDirFor(major: number): string;
  /** When running as root: the OS user the server runs as. */
  osUser?: { name: string; uid: number; gid: number };
  /** Database role to connect as (trust, on the private socket). */
  dbUser: string;
  query?: string;
  workDir?: string;
  keep: boolean;
  timeoutMs: number;
  log: Logger;
  /** Abandons the drill (the server is stopped and the directory removed). */
  signal?: AbortSignal;
}

export interface DrillResult {
  ok: boolean;
  backup: string | null;
  directory: string;
  /** How far the archive reaches for this backup, by `walvault check`. */
  archiveEnd: string | null;
  recoveredTo: { lsn: string; time: string | null } | null;
  phases: { restoreSeconds?: number; startSeconds?: number; recoverySeconds?: number; querySeconds?: number; totalSeconds: number };
  queryRows: number | null;
  problem: string | null;
}

/** Recovery that moves no further for this long short of the archive's end has stopped (test hook: WALVAULT_DRILL_STALL_MS). */
const STALL_MS = Number(process.env.WALVAULT_DRILL_STALL_MS) || 30000;
const POLL_MS = 250;

export async function runDrill(o: DrillOptions): Promise<DrillResult> {
  const started = performance.now();
  const base = fs.mkdtempSync(path.join(o.workDir ?? os.tmpdir(), 'walvault-drill-'));
  const dataDir = path.join(base, 'data');
  const result: DrillResult = { ok: false, backup: null, directory: base, archiveEnd: null, recoveredTo: null, phases: { totalSeconds: 0 }, queryRows: null, problem: null };
  const since = (t: number) => Math.round((performance.now() - t) / 10) / 100;
  let server: DrillServer | null = null;
  try {
    const meta = await chooseBackup(o.archive, o.backup, {});
    result.backup = meta.name;
    const report = await checkArchive(o.archive);
    const mine = report.backups.find((b) => b.name === meta.name);
    result.archiveEnd = mine?.recoverableTo?.lsn ?? null;
    // A gap on the way fails the drill before anything is restored: the drill's server is a
    // standby, which wal-fetch keeps waiting at a gap rather than stopping, and a drill that
    // recovered only up to the gap would pass while a restore could not reach the end.
    if (mine?.firstMissing) {
      throw new WalvaultError(
        'BACKUP_WAL_MISSING',
        `the archive has a gap: ${mine.problems.filter((p) => p.includes(mine.firstMissing!)).join('; ') || `${mine.firstMissing} is missing`}, and WAL after it is archived`, { fix: `run "walvault check" to see what is missing and "walvault check --repair" to stream it again from the server while it still has it` },
      );
    }

    let t = performance.now();
    const tablespaceMap = new Map(meta.archives.filter((a) => a.tablespaceOid !== null).map((a) => [a.tablespaceOid!, path.join(base, 'tablespaces', a.tablespaceOid!)]));
    await restoreBackup({ archive: o.archive, backup: meta.name, targetDir: dataDir, target: {}, standby: true, force: false, tablespaceMap, restoreCommand: o.restoreCommand, log: o.log });
    result.phases.restoreSeconds = since(t);

    t = performance.now();
    server = await DrillServer.start(base, dataDir, o.binDirFor(Math.floor(meta.pgVersionNum / 10000)), o);
    result.phases.startSeconds = since(t);

    t = performance.now();
    const segSize = meta.walSegmentSize;
    // A chain that ends in a partial: its last record may end anywhere before the partial's
    // end, so the drill asks for the segment boundary before it.
    const end = result.archiveEnd ? parseLsn(result.archiveEnd) : parseLsn(meta.stopLsn);
    const wanted: Lsn = end % BigInt(segSize) === 0n ? end : segmentStart(end, segSize);
    const reached = await server.waitForReplay(wanted > parseLsn(meta.stopLsn) ? wanted : parseLsn(meta.stopLsn), Date.now() + o.timeoutMs);
    result.recoveredTo = { lsn: formatLsn(reached.lsn), time: reached.time };
    result.phases.recoverySeconds = since(t);

    t = performance.now();
    await server.query('SELECT count(*) FROM pg_catalog.pg_class');
    if (o.query) result.queryRows = (await server.query(o.query)).rowCount ?? 0;
    result.phases.querySeconds = since(t);
    result.ok = true;
  } catch (err) {
    result.problem = err instanceof Error ? err.message : String(err);
    const tail = server?.logProblem();
    if (tail) result.problem += `; the server logged: ${tail}`;
  } finally {
    await server?.stop().catch(() => undefined);
    await stopPrefetcher(dataDir).catch(() => undefined);
    result.phases.totalSeconds = since(started);
    if (!o.keep) fs.rmSync(base, { recursive: true, force: true });
  }
  return result;
}

function chownTree(p: string, uid: number, gid: number): void {
  const st = fs.lstatSync(p);
  fs.lchownSync(p, uid, gid);
  if (st.isDirectory()) for (const e of fs.readdirSync(p)) chownTree(path.join(p, e), uid, gid);
}

/** The drill's PostgreSQL: started with pg_ctl, reached over its private socket. */
class DrillServer {
  private constructor(
    private readonly base: string,
    private readonly dataDir: string,
    private readonly binDir: string,
    private readonly port: number,
    private readonly o: DrillOptions,
  ) {}

  static async start(base: string, dataDir: string, binDir: string, o: DrillOptions): Promise<DrillServer> {
    // The socket lives in the drill's own directory and nothing listens on TCP: the port
    // only names the socket file, so the default cannot clash with another server.
    const port = 5432;
    const hba = path.join(base, 'drill_hba.conf');
    fs.writeFileSync(hba, 'local all all trust\n', { mode: 0o600 });
    // Debian keeps postgresql.conf outside the data directory: a backup may have none.
    const conf = path.join(dataDir, 'postgresql.conf');
    if (!fs.existsSync(conf)) fs.writeFileSync(conf, '', { mode: 0o600 });
    const settings = {
      port: String(port),
      listen_addresses: "''",
      unix_socket_directories: confLiteral(base),
      hba_file: confLiteral(hba),
      archive_mode: 'off',
      hot_standby: 'on',
      ssl: 'off',
      shared_buffers: "'128MB'",
      logging_collector: 'off',
      primary_conninfo: "''",
    };
    fs.appendFileSync(path.join(dataDir, 'postgresql.auto.conf'), `\n# walvault drill\n${Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);
    if (o.osUser) chownTree(base, o.osUser.uid, o.osUser.gid);
    const server = new DrillServer(base, dataDir, binDir, port, o);
    // -w: pg_ctl returns once the server accepts connections (a hot standby: once consistent)
    // or has failed; without it the server's pid file may not exist yet when we look.
    await server.pgCtl(['start', '-l', server.logFile, '-w', '-t', String(Math.max(1, Math.ceil(o.timeoutMs / 1000)))]);
    await server.waitUntil(async () => {
      await server.query('SELECT 1');
      return true;
    }, Date.now() + o.timeoutMs, 'to accept connections (consistent)');
    return server;
  }

  get logFile(): string {
    return path.join(this.base, 'server.log');
  }

  private pgCtl(args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(path.join(this.binDir, 'pg_ctl'), ['-D', this.dataDir, ...args], {
        stdio: ['ignore', 'ignore', 'pipe'],
        cwd: this.base,
        env: { ...process.env, PGDATA: undefined, PGHOST: undefined, PGPORT: undefined, LC_ALL: 'C' },
        ...(this.o.osUser ? { uid: this.o.osUser.uid, gid: this.o.osUser.gid } : {}),
      });
      let err = '';
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', (e) => reject(new WalvaultError('CONFIG_INVALID', `cannot run ${path.join(this.binDir, 'pg_ctl')}: ${e.message}`, { fix: `pass --pg-bin with the PostgreSQL binaries of the backup's version` })));
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new WalvaultError('INTERNAL', `pg_ctl ${args[0]} failed (exit ${code}): ${err.trim()}`))));
    });
  }

  async query(sql: string): Promise<{ rows: Array<Record<string, unknown>>; rowCount: number | null }> {
    const { Client } = await import('pg');
    const client = new Client({ host: this.base, port: this.port, user: this.o.dbUser, database: 'postgres', connectionTimeoutMillis: 5000 });
    await client.connect();
    try {
      const r = await client.query(sql);
      return { rows: r.rows, rowCount: r.rowCount };
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private running(): boolean {
    return fs.existsSync(path.join(this.dataDir, 'postmaster.pid'));
  }

  private async waitUntil(test: () => Promise<boolean>, deadline: number, what: string): Promise<void> {
    let last = '';
    for (;;) {
      try {
        if (await test()) return;
      } catch (err) {
        last = (err as Error).message;
      }
      if (!this.running()) throw new WalvaultError('INTERNAL', `the restored server stopped before it was ${what}`);
      if (this.o.signal?.aborted) throw new WalvaultError('BACKUP_ABORTED', 'the drill was abandoned: walvault is stopping');
      if (Date.now() > deadline) throw new WalvaultError('INTERNAL', `the restored server was not ${what} in time${last ? ` (${last})` : ''}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** Waits until replay reaches `lsn`; fails when the server stops or recovery stalls short of it. */
  async waitForReplay(lsn: Lsn, deadline: number): Promise<{ lsn: Lsn; time: string | null }> {
    let best: Lsn = 0n;
    let movedAt = Date.now();
    let time: string | null = null;
    for (;;) {
      if (!this.running()) throw new WalvaultError('INTERNAL', `the restored server stopped during recovery at ${formatLsn(best)}`);
      if (this.o.signal?.aborted) throw new WalvaultError('BACKUP_ABORTED', 'the drill was abandoned: walvault is stopping');
      const r = (await this.query(`SELECT pg_last_wal_replay_lsn()::text AS lsn, pg_last_xact_replay_timestamp() AS at`)).rows[0];
      const now = r.lsn ? parseLsn(String(r.lsn)) : 0n;
      if (r.at) time = new Date(r.at as string).toISOString();
      if (now > best) {
        best = now;
        movedAt = Date.now();
      }
      if (best >= lsn) return { lsn: best, time };
      if (Date.now() - movedAt > STALL_MS || Date.now() > deadline) {
        throw new WalvaultError(
          'BACKUP_WAL_MISSING',
          `recovery stopped at ${formatLsn(best)}, but the archive holds WAL to ${formatLsn(lsn)}: a segment is missing or cannot be read`, { fix: `run "walvault check" and "walvault verify"` },
        );
      }
      await new Promise((r2) => setTimeout(r2, POLL_MS));
    }
  }

  /** The last FATAL/PANIC/ERROR line of the server's log, or a walvault line. */
  logProblem(): string | null {
    let text = '';
    try {
      text = fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return null;
    }
    const lines = text.split('\n').filter((l) => /walvault: |FATAL|PANIC/.test(l));
    return lines.length > 0 ? lines[lines.length - 1].trim() : null;
  }

  async stop(): Promise<void> {
    if (this.running()) await this.pgCtl(['stop', '-m', 'fast', '-w', '-t', '60']);
  }
}
