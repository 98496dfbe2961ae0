/**
 * What the benches measure on, shared: databases and WAL that compress like production data,
 * TLS on a test server, pgBackRest as the peer, and walvault sites.
 *
 * Databases (BENCH_DATABASES, default "real,pgbench"; both PostgreSQL 15, 16 MiB segments):
 *   real     pgbench at BENCH_REAL_SCALE (default 60, ~900 MiB that zstd level 1 shrinks
 *            about 23:1: its rows are mostly blank padding) plus BENCH_REAL_TEXT_MIB (default
 *            512) of rows of random text and numbers (md5() strings, random numerics and
 *            dates, a few repeated words; about 2:1 alone), with a primary key: the whole
 *            cluster compresses about 4-5:1, like production data.
 *   pgbench  pgbench alone at BENCH_PGBENCH_SCALE (default 100, ~1.5 GiB), the secondary case.
 * Every database is measured as built: size (pg_database_size of all) and the zstd level 1
 * ratio of the whole cluster as a base backup takes it (pg_basebackup -Ft to stdout through
 * `zstd -1`), printed and kept in the results.
 *
 * WAL (generateWal): rows of the same random text copied from a source table into a sink,
 * 4 MiB of heap per statement, optionally paced to a rate; the sink is truncated every
 * 256 MiB so the data directory stays small.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { chownForServer, clientBin, PgCluster, removeDir, waitFor } from '../test/helpers/pg-cluster';
import { pgConninfo, WALVAULT_BIN, writeConfig, type SiteSettings } from '../test/helpers/walvault';
import { Child, dirBytes, envList, envNumber, fmt, MiB, pollUntil, printRows, saveRows, spawnTimed, workDir, type Measured, type Row } from './bench-util';

// ---------------------------------------------------------------------------
// Databases

export const DATABASE_KINDS = ['real', 'pgbench'] as const;
export type DatabaseKind = (typeof DATABASE_KINDS)[number];
export const DATABASES = envList('BENCH_DATABASES', DATABASE_KINDS, DATABASE_KINDS);
const REAL_SCALE = envNumber('BENCH_REAL_SCALE', 60);
const REAL_TEXT_MIB = envNumber('BENCH_REAL_TEXT_MIB', 512, { allowZero: true });
const PGBENCH_SCALE = envNumber('BENCH_PGBENCH_SCALE', 100);

export interface DatabaseFacts {
  kind: DatabaseKind;
  description: string;
  pgbenchScale: number;
  randomTextMiB: number;
  /** Sum of pg_database_size over all databases. */
  bytes: number;
  /** The cluster as a base backup takes it, and that through `zstd -1`. */
  tarBytes: number;
  zstdBytes: number;
  zstdRatio: number;
  buildSeconds: number;
}

export interface Database {
  cluster: PgCluster;
  facts: DatabaseFacts;
}

/** PG* variables in our environment would point client tools at some other server. */
export function clientEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  env.LC_ALL = 'C';
  return env;
}

/** A persistent connection for a burst of statements (PgCluster.query connects per query). */
async function connect(cluster: PgCluster): Promise<Client> {
  const client = new Client({ host: cluster.host, port: cluster.port, user: cluster.superuser, database: 'postgres' });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** A started cluster holding the database of `kind`, measured. `settings` go to the server. */
export async function makeDatabase(kind: DatabaseKind, settings: Record<string, string | number> = {}): Promise<Database> {
  const scale = kind === 'real' ? REAL_SCALE : PGBENCH_SCALE;
  const textMiB = kind === 'real' ? REAL_TEXT_MIB : 0;
  const description = textMiB > 0 ? `pgbench scale ${scale} + ${textMiB} MiB of random text and numbers` : `pgbench scale ${scale} only`;
  const cluster = await PgCluster.start({ walSegSizeMiB: 16, settings: { max_wal_size: '4GB', ...settings } });
  try {
    const t0 = performance.now();
    await cluster.pgbench(['-i', '-s', String(scale), '-q']);
    if (textMiB > 0) await fillRandomText(cluster, 'bench_docs', textMiB, { primaryKey: true });
    await cluster.query('CHECKPOINT');
    const buildSeconds = (performance.now() - t0) / 1000;
    const bytes = Number((await cluster.query(`SELECT sum(pg_database_size(oid))::bigint AS b FROM pg_database`))[0].b);
    const z = await measureZstd(cluster);
    const facts: DatabaseFacts = { kind, description, pgbenchScale: scale, randomTextMiB: textMiB, bytes, ...z, buildSeconds };
    console.log(`database "${kind}": ${description}: ${fmt(bytes / MiB, 0)} MiB, zstd -1 ratio ${fmt(z.zstdRatio, 2)}:1 (built in ${fmt(buildSeconds, 0)} s)`);
    return { cluster, facts };
  } catch (err) {
    await cluster.destroy().catch(() => undefined);
    throw err;
  }
}

/**
 * Rows like an application's: md5() references, customer names, a status word from five,
 * amounts, quantities, dates, a note mixing a few repeated words with random text and numbers
 * (~250 bytes a row, zstd level 1 about 2:1). Inserted until the heap holds `mib` MiB.
 */
export async function fillRandomText(cluster: PgCluster, table: string, mib: number, opts: { primaryKey?: boolean } = {}): Promise<void> {
  const client = await connect(cluster);
  try {
    await client.query(`CREATE TABLE ${table} (id bigint, customer text, status text, amount numeric(12,2), qty int, created timestamptz, ref text, note text)`);
    const target = mib * MiB;
    let next = 1;
    for (;;) {
      const have = Number((await client.query(`SELECT pg_relation_size('${table}')::bigint AS b`)).rows[0].b);
      if (have >= target) break;
      const rows = Math.min(200_000, Math.max(1000, Math.ceil((target - have) / 240)));
      await client.query(
        `INSERT INTO ${table}
         SELECT g, 'customer-' || (random() * 100000)::int,
                (ARRAY['new', 'paid', 'shipped', 'cancelled', 'returned'])[1 + (random() * 4)::int],
                round((random() * 10000)::numeric, 2), (random() * 1000)::int,
                now() - random() * interval '1000 days', md5(random()::text),
                concat_ws(' ', (ARRAY['order', 'invoice', 'delivery', 'customer', 'payment', 'refund', 'warehouse', 'priority', 'express', 'standard'])[1 + (random() * 9)::int],
                          md5(random()::text), (random() * 1e9)::bigint, md5(random()::text),
                          (ARRAY['alpha', 'beta', 'gamma', 'delta'])[1 + (random() * 3)::int], md5(g::text))
           FROM generate_series(${next}, ${next + rows - 1}) AS g`,
      );
      next += rows;
    }
    if (opts.primaryKey) await client.query(`ALTER TABLE ${table} ADD PRIMARY KEY (id)`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The cluster as `pg_basebackup -Ft -X none` streams it, and its size through `zstd -1`. */
export async function measureZstd(cluster: PgCluster): Promise<{ tarBytes: number; zstdBytes: number; zstdRatio: number }> {
  const bb = spawn(clientBin('pg_basebackup'), ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-D', '-', '-Ft', '-X', 'none', '--checkpoint=fast'], { env: clientEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const zstd = spawn('zstd', ['-1', '-T2', '-q', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let tarBytes = 0;
  let zstdBytes = 0;
  let stderr = '';
  bb.stdout.on('data', (c: Buffer) => (tarBytes += c.length));
  bb.stdout.pipe(zstd.stdin);
  zstd.stdout.on('data', (c: Buffer) => (zstdBytes += c.length));
  for (const p of [bb, zstd]) p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = (p: ChildProcess) => new Promise<number | null>((resolve, reject) => p.on('error', reject).on('close', resolve));
  const [a, b] = await Promise.all([exit(bb), exit(zstd)]);
  if (a !== 0 || b !== 0) throw new Error(`measuring the zstd ratio (pg_basebackup | zstd -1) failed:\n${stderr}`);
  return { tarBytes, zstdBytes, zstdRatio: tarBytes / zstdBytes };
}

/** The zstd level 1 ratio of some files (WAL segments, say), each compressed on its own as the archive does. */
export function zstdRatioOfFiles(files: string[]): number {
  let raw = 0;
  let packed = 0;
  for (const f of files) {
    raw += fs.statSync(f).size;
    packed += execFileSync('zstd', ['-1', '-q', '-c', f], { maxBuffer: 1024 * MiB }).length;
  }
  return raw / packed;
}

/**
 * The skeleton of a bench over BENCH_DATABASES (or `databases`): for each, a fresh database (with `settings`),
 * `rowsOf` it (the cluster is destroyed after, if `rowsOf` has not done so), its directory
 * under a temporary work directory removed; then the table printed and the results saved.
 */
export async function benchDatabases(opts: {
  kind: string;
  title: string;
  settings: (index: number) => Record<string, string | number>;
  rowsOf: (db: Database, dir: string, index: number) => Promise<Row[]>;
  params: Record<string, unknown>;
  tools: Record<string, string>;
  /** The databases to run on (default BENCH_DATABASES). */
  databases?: readonly DatabaseKind[];
}): Promise<void> {
  const startedAt = new Date();
  const work = workDir(`walvault-${opts.kind}-bench-`);
  const rows: Row[] = [];
  const databases: DatabaseFacts[] = [];
  const kinds = opts.databases ?? DATABASES;
  try {
    for (const [i, kind] of kinds.entries()) {
      const db = await makeDatabase(kind, opts.settings(i));
      databases.push(db.facts);
      try {
        rows.push(...(await opts.rowsOf(db, path.join(work, kind), i)));
      } finally {
        await db.cluster.destroy();
      }
      removeDir(path.join(work, kind));
    }
    printRows(opts.title, rows);
    saveRows(opts.kind, startedAt, { params: { databases: kinds, ...opts.params }, databases }, rows, opts.tools);
  } finally {
    removeDir(work);
  }
}

// ---------------------------------------------------------------------------
// WAL

const WAL_SOURCE = 'bench_wal_source';
const WAL_SINK = 'bench_wal_sink';
const WAL_SOURCE_MIB = 128;
const CHUNK_PAGES = 512;
const TRUNCATE_EVERY = 256 * MiB;

export interface WalRun {
  startLsn: string;
  endLsn: string;
  bytes: number;
  seconds: number;
}

/** Creates the source rows WAL is made of (random text, generated once; the WAL it makes counts nowhere). */
export async function prepareWalSource(cluster: PgCluster): Promise<void> {
  if ((await cluster.query(`SELECT to_regclass('${WAL_SOURCE}') IS NOT NULL AS e`))[0].e) return;
  await fillRandomText(cluster, WAL_SOURCE, WAL_SOURCE_MIB);
  await cluster.query(`CREATE TABLE ${WAL_SINK} (LIKE ${WAL_SOURCE})`);
}

/**
 * Writes at least `mib` MiB of WAL of random-text rows, at most `rateMiBs` MiB/s if given
 * (statements of 4 MiB of heap, paced against the clock from the start). Ends at a commit.
 */
export async function generateWal(cluster: PgCluster, opts: { mib: number; rateMiBs?: number }): Promise<WalRun> {
  await prepareWalSource(cluster);
  const client = await connect(cluster);
  try {
    const lsn = async () => String((await client.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l);
    const diff = async (from: string) => Number((await client.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${from}')::bigint AS d`)).rows[0].d);
    const pages = Number((await client.query(`SELECT pg_relation_size('${WAL_SOURCE}')::bigint / 8192 AS p`)).rows[0].p);
    const startLsn = await lsn();
    const t0 = performance.now();
    let page = 0;
    let sinceTruncate = 0;
    for (let done = 0; done < opts.mib * MiB; ) {
      const to = Math.min(pages, page + CHUNK_PAGES);
      await client.query(`INSERT INTO ${WAL_SINK} SELECT * FROM ${WAL_SOURCE} WHERE ctid >= '(${page},0)'::tid AND ctid < '(${to},0)'::tid`);
      page = to >= pages ? 0 : to;
      const now = await diff(startLsn);
      sinceTruncate += now - done;
      done = now;
      if (sinceTruncate >= TRUNCATE_EVERY) {
        await client.query(`TRUNCATE ${WAL_SINK}`);
        sinceTruncate = 0;
      }
      if (opts.rateMiBs) {
        const ahead = (done / MiB / opts.rateMiBs) * 1000 - (performance.now() - t0);
        if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
      }
    }
    const endLsn = await lsn();
    return { startLsn, endLsn, bytes: await diff(startLsn), seconds: (performance.now() - t0) / 1000 };
  } finally {
    await client.end().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------
// TLS

/**
 * Turns on TLS with a self-signed certificate generated into the data directory (the
 * server's default server.crt / server.key), by reload: plain connections keep working, and
 * `sslmode=require` clients get TLS.
 */
export async function enableTls(cluster: PgCluster): Promise<void> {
  const key = path.join(cluster.dataDir, 'server.key');
  const cert = path.join(cluster.dataDir, 'server.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'], { stdio: 'ignore' });
  fs.chmodSync(key, 0o600); // the server refuses a key others can read
  chownForServer(key);
  chownForServer(cert);
  await cluster.query(`ALTER SYSTEM SET ssl = on`);
  await cluster.query(`SELECT pg_reload_conf()`);
  await waitFor(async () => (await cluster.query(`SHOW ssl`))[0].ssl === 'on', { timeoutMs: 30_000, what: 'ssl = on after the reload' });
}

// ---------------------------------------------------------------------------
// pgBackRest, the peer

export const PGBACKREST = '/usr/bin/pgbackrest';

/** pgBackRest is the peer of the backup and restore benches: without it they cannot run. */
export function requirePgBackRest(): void {
  if (!fs.existsSync(PGBACKREST)) {
    throw new Error(`pgBackRest, the peer of this bench, is not installed (${PGBACKREST}): install it with \`apt-get install -y pgbackrest\` (Debian/Ubuntu; 2.45 or later), then run the bench again`);
  }
}

/**
 * One pgBackRest stanza "bench" for `cluster` under `dir`: process-max 2, zst level 1 (or
 * none), reading the data directory itself; it runs as the server's OS user.
 */
export class PgBackRest {
  private readonly conf: string;
  private readonly repo: string;

  constructor(
    private readonly dir: string,
    private readonly cluster: PgCluster,
    readonly compress: 'zst' | 'none',
  ) {
    this.conf = path.join(dir, 'pgbackrest.conf');
    this.repo = path.join(dir, 'repo');
  }

  private cmd(args: string[]): Promise<Measured & { cpuSeconds: number; peakRssMiB: number; stdout: string }> {
    return spawnTimed(PGBACKREST, [`--config=${this.conf}`, '--stanza=bench', ...args], { asServer: true });
  }

  /** An empty repository with the stanza created (untimed). */
  async reset(): Promise<void> {
    removeDir(this.dir);
    for (const d of ['log', 'lock', 'repo']) fs.mkdirSync(path.join(this.dir, d), { recursive: true });
    const c = this.cluster;
    fs.writeFileSync(
      this.conf,
      [
        '[global]',
        `repo1-path=${this.repo}`,
        `log-path=${this.dir}/log`,
        `lock-path=${this.dir}/lock`,
        'log-level-console=warn',
        'process-max=2',
        `compress-type=${this.compress}`,
        ...(this.compress === 'zst' ? ['compress-level=1'] : []),
        'start-fast=y',
        'archive-check=n',
        'archive-copy=n',
        '',
        '[bench]',
        `pg1-path=${c.dataDir}`,
        `pg1-port=${c.port}`,
        `pg1-socket-path=${c.socketDir}`,
        'pg1-user=postgres',
        '',
      ].join('\n'),
    );
    chownForServer(this.dir);
    await this.cmd(['stanza-create']);
  }

  backup(): Promise<Measured> {
    return this.cmd(['--type=full', 'backup']);
  }

  /**
   * Into an empty `target`; with `delta`, into the existing data directory `target` (owned by
   * the server's OS user), keeping the files whose size and checksum match (`--delta`, never
   * `--force`, which would trust sizes and times).
   */
  async restore(target: string, opts: { delta?: boolean } = {}): Promise<Measured> {
    if (!opts.delta) {
      fs.mkdirSync(target, { mode: 0o700 });
      chownForServer(target);
    }
    return this.cmd([`--pg1-path=${target}`, ...(opts.delta ? ['--delta'] : []), 'restore']);
  }

  storedBytes(): number {
    const dir = path.join(this.repo, 'backup');
    return fs.existsSync(dir) ? dirBytes(dir) : 0;
  }
}

// ---------------------------------------------------------------------------
// walvault sites

export interface Site {
  proc: Child;
  config: string;
  archive: string;
  /** Stops the receiver and drops its slot (left behind, it would hold every later byte of WAL). */
  stop(): Promise<void>;
}

/**
 * A walvault receiver (`walvault run`) for `cluster` in `dir`, streaming once its slot is
 * active. Scheduled backups and checks are off (writeConfig).
 */
export async function startSite(dir: string, cluster: PgCluster, slot: string, settings: Partial<SiteSettings> = {}): Promise<Site> {
  fs.mkdirSync(dir, { recursive: true });
  const archive = settings.archive ?? path.join(dir, 'archive');
  const config = writeConfig(dir, { main: { pg: pgConninfo(cluster), archive, state: path.join(dir, 'state'), slot, ...settings } }, 'warn');
  const proc = new Child(`walvault run (${slot})`, process.execPath, [WALVAULT_BIN, 'run', '--config', config]);
  await pollUntil(
    async () => {
      if (!proc.running) throw new Error(`walvault run exited:\n${proc.tail()}`);
      return (await cluster.query(`SELECT active FROM pg_replication_slots WHERE slot_name = '${slot}'`))[0]?.active === true;
    },
    { timeoutMs: 60_000, intervalMs: 100, what: `the receiver on slot ${slot} to stream` },
  );
  const stop = async () => {
    await proc.stop();
    await dropSlot(cluster, slot);
  };
  return { proc, config, archive, stop };
}

/** Drops `slot` once no walsender holds it any more. */
export async function dropSlot(cluster: PgCluster, slot: string): Promise<void> {
  await pollUntil(async () => (await cluster.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = '${slot}' AND active`))[0].n === 0, {
    timeoutMs: 30_000,
    intervalMs: 50,
    what: `slot ${slot} to be released`,
  });
  await cluster.query(`SELECT pg_drop_replication_slot('${slot}') FROM pg_replication_slots WHERE slot_name = '${slot}'`);
}
