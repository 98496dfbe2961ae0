/**
 * Issue 20: `walvault restore --delta` into an existing data directory.
 *
 * Acceptance 1: a data directory that ran, with files modified, deleted and added (an extra
 * directory, a link out of it, a tablespace file changed), is delta-restored to exactly what a
 * full restore of the same backup gives, every file compared; and an old primary, after a
 * promotion elsewhere, is delta-restored from a backup of the new primary and rejoins it as a
 * standby with exactly its data.
 * Acceptance 2: a server running on the directory, and a directory of another cluster (or of
 * no cluster) are refused, naming the process or the cluster, and nothing is written.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { BackupMetadata } from '../../src/backup/catalog';
import { tablespaceWithTable } from '../helpers/backup-fixtures';
import { availableMajors, chownForServer, clientBin, DEFAULT_MAJOR, PgCluster, type ClusterOptions, removeDir, tmpDir, verifybackupReads, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, pushBackup, runWalvault, startStreamingSite, switchAndWaitArchived, type WalvaultProcess } from '../helpers/walvault';

const execFileP = promisify(execFile);
const re = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

interface Node {
  type: 'file' | 'dir' | 'link' | 'other';
  mode: number;
  size: number;
  sha?: string;
  link?: string;
  mtimeMs?: number;
}

/** Every entry under `dir` (links not followed): type, mode, size, contents' SHA-256, link target. */
function tree(dir: string, withTimes = false): Map<string, Node> {
  const out = new Map<string, Node>();
  const walk = (d: string, rel: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const abs = path.join(d, name);
      const p = rel + name;
      const st = fs.lstatSync(abs);
      const base = { mode: st.mode & 0o7777, size: st.isFile() ? st.size : 0, ...(withTimes ? { mtimeMs: st.mtimeMs } : {}) };
      if (st.isSymbolicLink()) out.set(p, { type: 'link', ...base, link: fs.readlinkSync(abs) });
      else if (st.isDirectory()) {
        out.set(p, { type: 'dir', ...base });
        walk(abs, `${p}/`);
      } else if (st.isFile()) out.set(p, { type: 'file', ...base, sha: createHash('sha256').update(fs.readFileSync(abs)).digest('hex') });
      else out.set(p, { type: 'other', ...base });
    }
  };
  walk(dir, '');
  return out;
}

/** The differences between two trees, as lines (none: the same). */
function treeDiff(a: Map<string, Node>, b: Map<string, Node>, mapLink: (l: string) => string = (l) => l): string[] {
  const out: string[] = [];
  for (const [p, x] of a) {
    const y = b.get(p);
    if (!y) out.push(`${p}: only in the first`);
    else {
      const yy = y.link !== undefined ? { ...y, link: mapLink(y.link) } : y;
      if (JSON.stringify(x) !== JSON.stringify(yy)) out.push(`${p}: ${JSON.stringify(x)} vs ${JSON.stringify(yy)}`);
    }
  }
  for (const p of b.keys()) if (!a.has(p)) out.push(`${p}: only in the second`);
  return out;
}

/**
 * A primary archived by a receiver into a local archive, with a tablespace `extra` (in a
 * directory of `work`) holding a table, and pgbench's tables.
 */
async function primaryWithData(work: string, opts: ClusterOptions, compression: Compression): Promise<{ primary: PgCluster; config: string; archive: string; receiver: WalvaultProcess; oid: string }> {
  const primary = await PgCluster.start({ walSegSizeMiB: 1, ...opts });
  const site = await startStreamingSite(primary, work, { compression: 'zstd', backup_compression: compression });
  const oid = await tablespaceWithTable(primary, path.join(work, 'ts'));
  await primary.pgbench(['-i', '-s', '1', '-q']);
  return { primary, ...site, oid };
}

/** The `delta: ...` line of restore's output, as numbers. */
function deltaLine(stdout: string): { checked: number; kept: number; fetched: number; removed: number; patched: number } {
  const m = /delta: ([0-9]+) files there checked, ([0-9]+) kept \(.*?\), ([0-9]+) fetched \(.*?\), ([0-9]+) removed .*; ([0-9]+) files that differed patched in place/.exec(stdout);
  assert.ok(m, stdout);
  return { checked: Number(m[1]), kept: Number(m[2]), fetched: Number(m[3]), removed: Number(m[4]), patched: Number(m[5]) };
}

const DATA_SQL = `SELECT md5(string_agg(x, ',' ORDER BY x)) AS sum FROM (
  SELECT 'a' || sum(abalance)::text || '/' || count(*)::text AS x FROM pgbench_accounts
  UNION ALL SELECT 'h' || count(*)::text || '/' || coalesce(sum(delta), 0)::text FROM pgbench_history
  UNION ALL SELECT 'm' || coalesce(md5(string_agg(id::text || pad, ',' ORDER BY id)), '') FROM marker) s`;

/**
 * Both ways a delta goes: backups the server compressed are read whole (their zstd stream
 * cannot be entered midway); backups walvault compressed have block indexes, and only the
 * blocks that differ are fetched.
 */
type Compression = 'server' | 'client';
const HOW: Record<Compression, string> = { server: 'server-compressed backup, read whole', client: 'client-compressed backup, compared block by block' };

for (const compression of ['server', 'client'] as const)
describe(`restore --delta into a directory that ran, was changed, and has a tablespace (PostgreSQL ${DEFAULT_MAJOR}; ${HOW[compression]})`, () => {
  let primary: PgCluster;
  let receiver: WalvaultProcess | undefined;
  let work = '';
  let config = '';
  let archive = '';
  let backup = '';
  let oid = '';

  before(async () => {
    work = tmpDir('walvault-delta-');
    ({ primary, config, archive, receiver, oid } = await primaryWithData(work, { settings: { wal_keep_size: '1024MB' } }, compression));
    await primary.query(`CREATE TABLE marker (id int, pad text)`);
    backup = await pushBackup(['--config', config]);
    await switchAndWaitArchived(primary, archive, 1, 60000);
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await primary?.destroy();
    if (work) removeDir(work);
  });

  const restore = (target: string, ts: string, extra: string[] = []) =>
    runWalvault(['restore', '--config', config, '--tablespace-map', `${oid}=${ts}`, ...extra, target], {}, 300000);

  let reference: Map<string, Node>;
  let referenceTs: Map<string, Node>;

  it('a full restore gives the reference directory', async () => {
    const r = await restore(path.join(work, 'full'), path.join(work, 'full-ts'));
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    reference = tree(path.join(work, 'full'));
    referenceTs = tree(path.join(work, 'full-ts'));
  });

  it('a directory that ran, then had files modified, deleted and added, is delta-restored to exactly the full restore', async () => {
    const target = path.join(work, 'used');
    const ts = path.join(work, 'used-ts');
    const first = await restore(target, ts);
    assert.equal(first.code, 0, first.stderr.slice(-3000));
    // It runs: recovery, a checkpoint, WAL, statistics, postmaster.opts; then it is stopped.
    chownForServer(ts);
    const server = await PgCluster.start({ dataDir: target });
    try {
      await waitFor(async () => (await server.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery to end and the server to promote' });
      await server.query(`INSERT INTO marker SELECT g, 'on the copy' FROM generate_series(1, 1000) g`);
      await server.query('CHECKPOINT');
    } finally {
      await server.stop('fast');
      await server.destroy();
    }
    // A few modified, deleted and extra files.
    const accounts = (await primary.query(`SELECT pg_relation_filepath('pgbench_accounts') AS p`))[0].p as string;
    const branches = (await primary.query(`SELECT pg_relation_filepath('pgbench_branches') AS p`))[0].p as string;
    const inExtra = (await primary.query(`SELECT pg_relation_filepath('in_extra') AS p`))[0].p as string;
    const flip = (file: string, at: number) => {
      const b = fs.readFileSync(file);
      b[at] ^= 0xff;
      fs.writeFileSync(file, b);
    };
    flip(path.join(target, accounts), 8192 * 3 + 100); // same size, other checksum
    fs.truncateSync(path.join(target, branches), 0); // other size
    // Other modes, on a file whose bytes are the backup's and on one patched: both come back as the backup has them.
    fs.chmodSync(path.join(target, 'pg_hba.conf'), 0o644);
    fs.chmodSync(path.join(target, accounts), 0o640);
    fs.rmSync(path.join(target, 'PG_VERSION'));
    fs.rmSync(path.join(target, 'global', 'pg_filenode.map'));
    fs.writeFileSync(path.join(target, 'base', 'stray-file'), 'not in the backup');
    fs.mkdirSync(path.join(target, 'extra-dir', 'deeper'), { recursive: true });
    fs.writeFileSync(path.join(target, 'extra-dir', 'deeper', 'f'), 'x');
    // A link out of the directory: removed, never followed.
    const outside = path.join(work, 'outside');
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, 'canary'), 'stays');
    fs.symlinkSync(outside, path.join(target, 'link-out'));
    // The tablespace: a file changed, one added.
    const tsFile = path.join(ts, inExtra.replace(/^pg_tblspc\/[0-9]+\//, ''));
    assert.ok(fs.existsSync(tsFile), tsFile);
    flip(tsFile, 8192 + 50);
    fs.writeFileSync(path.join(path.dirname(tsFile), '99999'), 'extra');
    // A directory where the backup has a file.
    fs.rmSync(path.join(target, 'pg_ident.conf'));
    fs.mkdirSync(path.join(target, 'pg_ident.conf'));

    const r = await restore(target, ts, ['--delta']);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    if (compression === 'client') assert.match(r.stderr + r.stdout, /checked block by block against the block index/);
    else assert.match(r.stderr + r.stdout, /the whole backup is read \(it cannot be compared block by block\)/);
    const { checked, kept, fetched, patched } = deltaLine(r.stdout);
    assert.ok(patched >= 1, `pgbench_accounts (13 MB, a page changed) patched in place: ${r.stdout}`);
    assert.ok(kept > 100, `most files kept: ${r.stdout}`);
    assert.ok(fetched >= 6 && fetched < kept, `the changed files fetched: ${r.stdout}`);
    assert.ok(checked >= kept);

    assert.deepEqual(treeDiff(reference, tree(target), (l) => (l === ts ? path.join(work, 'full-ts') : l)), [], 'the data directory is what a full restore gives');
    assert.deepEqual(treeDiff(referenceTs, tree(ts)), [], 'the tablespace directory too');
    assert.equal(fs.readlinkSync(path.join(target, 'pg_tblspc', oid)), ts);
    assert.equal(fs.readFileSync(path.join(outside, 'canary'), 'utf8'), 'stays', 'nothing was followed out of the directory');
    if (verifybackupReads(DEFAULT_MAJOR)) {
      const v = await execFileP(clientBin('pg_verifybackup'), ['-n', target]).catch((err) => err);
      assert.equal(v.code ?? 0, 0, `pg_verifybackup: ${v.stderr ?? ''}${v.stdout ?? ''}`);
    }
  });

  it('refuses while a server runs on the directory, naming its process, and writes nothing', async () => {
    const target = path.join(work, 'used');
    const ts = path.join(work, 'used-ts');
    // A postmaster.pid naming a live process (one the test runs): the directory stays still,
    // so it can be compared byte for byte afterwards.
    const live = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      fs.writeFileSync(path.join(target, 'postmaster.pid'), `${live.pid}\n${target}\n`);
      const before = tree(target, true);
      const beforeTs = tree(ts, true);
      const r = await restore(target, ts, ['--delta', '--force']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^walvault: a server runs on ${re(target)}: its postmaster.pid names process ${live.pid}, which is alive; stop it first`));
      assert.deepEqual(treeDiff(before, tree(target, true)), [], 'nothing written in the data directory');
      assert.deepEqual(treeDiff(beforeTs, tree(ts, true)), [], 'nor in the tablespace directory');
    } finally {
      live.kill('SIGKILL');
      fs.rmSync(path.join(target, 'postmaster.pid'));
    }
    // A real server: the primary itself.
    const pid = fs.readFileSync(path.join(primary.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0];
    const r = await runWalvault(['restore', '--config', config, '--delta', '--tablespace-map', `${oid}=${path.join(work, 'never-ts')}`, primary.dataDir], {}, 60000);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`names process ${pid}, which is alive`));
    assert.ok(!fs.existsSync(path.join(work, 'never-ts')), 'no tablespace directory made');
    assert.equal(Number((await primary.query('SELECT 1 AS one'))[0].one), 1, 'the server runs on');
  });

  it("refuses another cluster's data directory, and a directory of no cluster, writing nothing; --force replaces it", async () => {
    const other = await PgCluster.start({ walSegSizeMiB: 1 });
    let otherDir = '';
    try {
      await other.stop('fast');
      otherDir = path.join(work, 'other');
      fs.cpSync(other.dataDir, otherDir, { recursive: true });
    } finally {
      await other.destroy();
    }
    const ts = path.join(work, 'other-ts');
    const before = tree(otherDir, true);
    const r = await restore(otherDir, ts, ['--delta']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^walvault: ${re(otherDir)} is the data directory of cluster [0-9]+, and backup \\S+ is of cluster [0-9]+; .*--force`));
    assert.deepEqual(treeDiff(before, tree(otherDir, true)), [], 'nothing written');
    assert.ok(!fs.existsSync(ts), 'no tablespace directory made');

    const notData = path.join(work, 'not-data');
    fs.mkdirSync(path.join(notData, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(notData, 'sub', 'precious'), 'keep me');
    const beforeNot = tree(notData, true);
    const n = await restore(notData, ts, ['--delta']);
    assert.equal(n.code, 2, n.stderr);
    assert.match(n.stderr, /holds no global\/pg_control/);
    assert.deepEqual(treeDiff(beforeNot, tree(notData, true)), [], 'nothing written');

    const forced = await restore(otherDir, ts, ['--delta', '--force']);
    assert.equal(forced.code, 0, forced.stderr.slice(-3000));
    assert.deepEqual(treeDiff(reference, tree(otherDir), (l) => (l === ts ? path.join(work, 'full-ts') : l)), [], 'forced: what a full restore gives');
    assert.deepEqual(treeDiff(referenceTs, tree(ts)), [], 'the tablespace too');
  });
  it('a delta that fails midway (a part cut short) leaves nothing a server starts on, and run again finishes the job', async () => {
    const target = path.join(work, 'used');
    const ts = path.join(work, 'used-ts');
    fs.writeFileSync(path.join(target, 'base', 'stray-again'), 'x');
    const show = await runWalvault(['backup', 'show', backup, '--config', config]);
    const meta = JSON.parse(show.stdout) as BackupMetadata;
    const parts = meta.archives.find((a) => a.tablespaceOid === null)!.parts;
    if (compression === 'client') assert.ok(parts.length > 2, `base.tar in ${parts.length} parts`);
    // The first part, cut short: found whether the restore decodes the whole part or only the
    // frames it needs (backup_label, the tar's first member, lies in it and is gone). By
    // blocks, the failure comes while later parts (the last holds pg_control, which a restore
    // always takes) are still to be fetched: the restore must end, not wait for them.
    fs.rmSync(path.join(target, 'backup_label'));
    const file = path.join(archive, parts[0].key);
    const saved = fs.readFileSync(file);
    fs.writeFileSync(file, saved.subarray(0, Math.floor(saved.length / 2)));
    try {
      const r = await restore(target, ts, ['--delta']);
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, new RegExp(re(parts[0].key)));
    } finally {
      fs.writeFileSync(file, saved);
    }
    assert.ok(!fs.existsSync(path.join(target, 'global', 'pg_control')), 'no pg_control: no server starts on it');
    assert.ok(fs.existsSync(path.join(target, 'global', 'pg_control.walvault-delta-old')), "the directory's own, set aside");
    const again = await restore(target, ts, ['--delta']);
    assert.equal(again.code, 0, again.stderr.slice(-3000));
    assert.ok(deltaLine(again.stdout).kept > 100, again.stdout);
    assert.deepEqual(treeDiff(reference, tree(target), (l) => (l === ts ? path.join(work, 'full-ts') : l)), [], 'what a full restore gives');
    assert.deepEqual(treeDiff(referenceTs, tree(ts)), [], 'the tablespace too');
  });

  it('a block index missing or damaged: the delta reads the whole backup instead, saying why, and gives the same directory', { skip: compression === 'server' && 'a server-compressed backup has no block index' }, async () => {
    const target = path.join(work, 'used');
    const ts = path.join(work, 'used-ts');
    const show = await runWalvault(['backup', 'show', backup, '--config', config]);
    const index = (JSON.parse(show.stdout) as BackupMetadata).archives.find((a) => a.tablespaceOid === null)!.index!;
    const file = path.join(archive, index.key);
    const saved = fs.readFileSync(file);
    const accounts = (await primary.query(`SELECT pg_relation_filepath('pgbench_accounts') AS p`))[0].p as string;
    try {
      for (const damage of ['cut', 'gone'] as const) {
        if (damage === 'cut') fs.writeFileSync(file, saved.subarray(0, saved.length >> 1));
        else fs.rmSync(file);
        const b = fs.readFileSync(path.join(target, accounts));
        b[8192 * 2 + 7] ^= 0xff;
        fs.writeFileSync(path.join(target, accounts), b);
        const r = await restore(target, ts, ['--delta']);
        assert.equal(r.code, 0, r.stderr.slice(-3000));
        assert.match(r.stderr, new RegExp(`block index cannot be used: [^\n]*${re(index.key)}`), `${damage}: ${r.stderr.slice(-3000)}`);
        assert.match(r.stderr, /the whole backup is read instead/);
        assert.doesNotMatch(r.stderr, /checked block by block/);
        assert.ok(deltaLine(r.stdout).kept > 100, r.stdout);
        assert.deepEqual(treeDiff(reference, tree(target), (l) => (l === ts ? path.join(work, 'full-ts') : l)), [], `${damage}: what a full restore gives`);
        assert.deepEqual(treeDiff(referenceTs, tree(ts)), [], `${damage}: the tablespace too`);
      }
    } finally {
      fs.writeFileSync(file, saved);
    }
  });
});

describe(`an old primary, after a promotion elsewhere, delta-restored from the new primary's backup, rejoins as its standby (PostgreSQL ${DEFAULT_MAJOR}; ${HOW.client})`, () => {
  const SETTINGS = { wal_keep_size: '1024MB' };
  let oldPrimary: PgCluster;
  let newPrimary: PgCluster;
  let rejoined: PgCluster | undefined;
  let receiver: WalvaultProcess | undefined;
  let work = '';
  let config = '';

  before(async () => {
    work = tmpDir('walvault-delta-rejoin-');
    oldPrimary = await PgCluster.start({ walSegSizeMiB: 1, settings: SETTINGS });
    newPrimary = await PgCluster.start({ standbyOf: oldPrimary, settings: SETTINGS });
    // The archive follows the standby, and so the new primary's timeline after the promotion.
    ({ config, receiver } = await startStreamingSite(newPrimary, work, { compression: 'zstd', backup_compression: 'client' }));
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await rejoined?.destroy();
    await newPrimary?.destroy();
    await oldPrimary?.destroy();
    if (work) removeDir(work);
  });

  it('rejoins with exactly the new primary\'s data, most files kept', async () => {
    await oldPrimary.pgbench(['-i', '-s', '2', '-q']);
    await oldPrimary.query(`CREATE TABLE marker (id int, pad text)`);
    await oldPrimary.query(`INSERT INTO marker SELECT g, md5(g::text) FROM generate_series(1, 1000) g`);
    const lsn = (await oldPrimary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l;
    await waitFor(async () => (await newPrimary.query(`SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn AS ok`))[0].ok === true, {
      timeoutMs: 30000,
      what: 'the standby to replay the primary',
    });
    await newPrimary.promote();
    // The old primary goes on alone for a while (diverges), then stops.
    await oldPrimary.pgbench(['-c', '2', '-t', '100', '-n']);
    await oldPrimary.query(`INSERT INTO marker SELECT g, 'lost' FROM generate_series(1001, 1100) g`);
    await oldPrimary.stop('fast');
    // The new primary writes, is backed up, and writes more.
    await newPrimary.pgbench(['-c', '2', '-t', '100', '-n']);
    await pushBackup(['--config', config]);
    await newPrimary.query(`INSERT INTO marker SELECT g, 'after backup' FROM generate_series(2001, 2500) g`);
    await newPrimary.pgbench(['-c', '2', '-t', '100', '-n']);
    await switchAndWaitArchived(newPrimary, path.join(work, 'archive'), 2, 60000);

    const r = await runWalvault(['restore', '--config', config, '--delta', '--standby', '--primary-conninfo', pgConninfo(newPrimary), oldPrimary.dataDir], {}, 300000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const d = deltaLine(r.stdout);
    assert.ok(d.kept > 0 && d.fetched > 0, `some files kept, some fetched: ${r.stdout}`);
    assert.ok(fs.existsSync(path.join(oldPrimary.dataDir, 'standby.signal')));

    rejoined = await PgCluster.start({ dataDir: oldPrimary.dataDir });
    const standby = rejoined;
    await waitFor(async () => (await standby.query(`SELECT count(*)::int AS n FROM pg_stat_wal_receiver WHERE status = 'streaming'`))[0].n === 1, {
      timeoutMs: 120000,
      what: 'the old primary to stream from the new one',
    });
    await newPrimary.query(`INSERT INTO marker SELECT g, 'while standby' FROM generate_series(3001, 3100) g`);
    const end = (await newPrimary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l;
    await waitFor(async () => (await standby.query(`SELECT pg_last_wal_replay_lsn() >= '${end}'::pg_lsn AS ok`))[0].ok === true, {
      timeoutMs: 60000,
      what: 'the rejoined standby to replay the new primary',
    });
    assert.equal((await standby.query('SELECT pg_is_in_recovery() AS r'))[0].r, true, 'a standby');
    assert.equal((await standby.query(DATA_SQL))[0].sum, (await newPrimary.query(DATA_SQL))[0].sum, "exactly the new primary's data");
    assert.equal(Number((await standby.query(`SELECT count(*)::int AS n FROM marker WHERE pad = 'lost'`))[0].n), 0, "none of the old primary's lost writes");
  });
});

describe('restore --delta of an incremental chain into a directory restored from its full backup (PostgreSQL 17)', { skip: !availableMajors().includes(17) && 'PostgreSQL 17 binaries not installed' }, () => {
  let primary: PgCluster;
  let receiver: WalvaultProcess | undefined;
  let work = '';
  let config = '';
  let oid = '';
  let full = '';

  before(async () => {
    work = tmpDir('walvault-delta-chain-');
    let archive: string;
    ({ primary, config, archive, receiver, oid } = await primaryWithData(work, { major: 17, settings: { summarize_wal: 'on' } }, 'client'));
    full = await pushBackup(['--config', config]);
    await primary.psql(
      `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5000;
       CREATE TABLE fresh AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
       DROP TABLE pgbench_history;
       UPDATE in_extra SET pad = 'changed' WHERE id % 100 = 0;`,
    );
    await pushBackup(['--config', config, '--incremental']);
    await switchAndWaitArchived(primary, archive, 1, 60000);
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await primary?.destroy();
    if (work) removeDir(work);
  });

  it('gives exactly what a full restore of the chain gives, keeping the files the chain did not change', async () => {
    const restore = (target: string, ts: string, extra: string[]) => runWalvault(['restore', '--config', config, '--tablespace-map', `${oid}=${ts}`, ...extra, target], {}, 300000);
    const ref = await restore(path.join(work, 'ref'), path.join(work, 'ref-ts'), []);
    assert.equal(ref.code, 0, ref.stderr.slice(-3000));
    const old = await restore(path.join(work, 'old'), path.join(work, 'old-ts'), ['--backup', full]);
    assert.equal(old.code, 0, old.stderr.slice(-3000));
    const r = await restore(path.join(work, 'old'), path.join(work, 'old-ts'), ['--delta']);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const d = deltaLine(r.stdout);
    assert.ok(d.kept > 100 && d.fetched > 0, r.stdout);
    const mapLink = (l: string) => (l === path.join(work, 'old-ts') ? path.join(work, 'ref-ts') : l);
    assert.deepEqual(treeDiff(tree(path.join(work, 'ref')), tree(path.join(work, 'old')), mapLink), [], 'the data directory');
    assert.deepEqual(treeDiff(tree(path.join(work, 'ref-ts')), tree(path.join(work, 'old-ts'))), [], 'the tablespace directory');
  });
});
