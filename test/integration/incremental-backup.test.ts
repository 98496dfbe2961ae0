/**
 * Issue 16, incremental backups:
 * - on PostgreSQL 17 and 18, `backup push --incremental` uploads the parent's manifest and
 *   stores what the server sends (INCREMENTAL.* files for changed relations, a backup_label
 *   saying INCREMENTAL FROM), with type, parent and chain in its metadata; a chain of a full
 *   backup and three incrementals restores to exactly the data at each backup;
 * - every precondition that does not hold is one line naming the fix, exit non-zero, nothing
 *   written: a server older than 17, summarize_wal off, an unknown parent, a parent on
 *   another timeline or of another cluster, and the server's own refusal when the WAL
 *   summaries for the parent's range are gone;
 * - retention keeps chains whole: `backup delete` of a parent refuses unless told to take its
 *   dependents, the policy counts full backups;
 * - a broken chain is named by check and refused by restore before anything is written.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { backupPrefix, listBackups as listBackupsOf, readCompleted, UPLOAD_MANIFEST_FILE, type BackupMetadata } from '../../src/backup/catalog';
import { manifestChecksumHolds } from '../../src/backup/upload-manifest-text';
import { compareWithManifest, fetchBackupTars } from '../helpers/backup-fixtures';
import { snapshotTree } from '../helpers/errors-fixtures';
import { availableMajors, chownForServer, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { pgConninfo, runWalvault, startStreamingSite, withArchive, WalvaultProcess } from '../helpers/walvault';

async function push(config: string, extra: string[] = []): Promise<string> {
  const r = await runWalvault(['backup', 'push', '--config', config, '--fast', ...extra], {}, 180000);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

async function meta(archive: string, name: string): Promise<BackupMetadata> {
  return withArchive(archive, (a) => readCompleted(a, name));
}

/** One line on stderr, non-zero exit, and `watched` unchanged. */
/**
 * The command fails with one line of error, writing nothing under `watched`. With
 * `afterLog`, the log's progress lines before it (JSON) are allowed: the server's own refusal
 * comes once the backup has begun.
 */
async function refused(args: string[], watched: string, pattern: RegExp, afterLog = false): Promise<string> {
  const before = snapshotTree(watched);
  const r = await runWalvault(args, {}, 120000);
  const lines = r.stderr
    .trim()
    .split('\n')
    .filter((l) => !(afterLog && l.startsWith('{')));
  assert.notEqual(r.code, 0, `exit status (stderr: ${r.stderr})`);
  assert.equal(lines.length, 1, `one line on stderr:\n${r.stderr}`);
  assert.match(lines[0], pattern);
  assert.deepEqual(snapshotTree(watched), before, 'nothing written');
  return lines[0];
}

/** Every user table's rows, as one digest per table: the data, not only the counts. */
async function tableDigests(cluster: PgCluster): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const databases = (await cluster.query(`SELECT datname FROM pg_database WHERE datname NOT IN ('template0', 'template1') ORDER BY 1`)).map((r) => String(r.datname));
  for (const database of databases) {
    const tables = (await cluster.query(`SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1`, { database })).map((r) => String(r.relname));
    for (const t of tables) {
      const q = `SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') AS d FROM "${t}" x`;
      out[`${database}.${t}`] = String((await cluster.query(q, { database }))[0].d);
    }
  }
  return out;
}

function tarNames(file: string): string[] {
  return execFileSync('tar', ['-tf', file], { encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n').filter(Boolean);
}

for (const major of [17, 18])
describe(`incremental backups on PostgreSQL ${major}`, { skip: !availableMajors().includes(major) && `PostgreSQL ${major} binaries not installed` }, () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let config = '';
  let receiver: WalvaultProcess | undefined;
  const names: { full?: string; inc1?: string; inc2?: string; inc3?: string } = {};
  /** Every table's digest right after each backup (no writes meanwhile). */
  const expected = new Map<string, Record<string, string>>();

  before(async () => {
    work = tmpDir(`walvault-incr-${major}-`);
    cluster = await PgCluster.start({ major, walSegSizeMiB: 1, settings: { summarize_wal: 'on' } });
    ({ config, archive, receiver } = await startStreamingSite(cluster, work));
    await cluster.pgbench(['-i', '-s', '2', '-q']);
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('refuses an incremental with no full backup to take it against, writing nothing', async () => {
    await refused(['backup', 'push', '--config', config, '--incremental', '--fast'], path.join(archive, 'backups'), /no complete backup .* to take an incremental against; take a full backup/);
  });

  let tsOid = '';

  it('takes a full backup, then incrementals against it, each with its chain', async () => {
    // In the full backup already: a tablespace with a table, a table that will be truncated,
    // one that will shrink under VACUUM and grow again.
    const tsDir = path.join(work, 'ts');
    fs.mkdirSync(tsDir);
    chownForServer(tsDir);
    await cluster.query(`CREATE TABLESPACE extra LOCATION '${tsDir}'`);
    tsOid = String((await cluster.query(`SELECT oid::text AS oid FROM pg_tablespace WHERE spcname = 'extra'`))[0].oid);
    await cluster.psql(
      `CREATE TABLE in_extra TABLESPACE extra AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 30000) g;
       CREATE TABLE to_truncate AS SELECT g AS id FROM generate_series(1, 20000) g;
       CREATE TABLE shrinking AS SELECT g AS id, repeat(md5(g::text), 4) AS v FROM generate_series(1, 40000) g;`,
    );
    names.full = await push(config);
    expected.set(names.full, await tableDigests(cluster));
    const full = await meta(archive, names.full);
    assert.equal(full.kind, 'full');
    assert.equal(full.parent, undefined);
    // The upload manifest: readable without any key, its checksum holds, no file checksums left.
    const upload = await withArchive(archive, (a) => a.asPlain().get(backupPrefix(names.full!) + UPLOAD_MANIFEST_FILE));
    assert.ok(upload, 'upload_manifest stored');
    assert.ok(manifestChecksumHolds(upload), 'its Manifest-Checksum matches its text');
    assert.doesNotMatch(upload.toString('utf8'), /"Checksum":/);
    assert.match(upload.toString('utf8'), /"Path": "base\/[0-9]+\/[0-9]+"/);

    // Changes: updates in one part of a table, a new table, a dropped one.
    await cluster.psql(
      `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5000;
       CREATE TABLE fresh AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
       DROP TABLE pgbench_history;
       TRUNCATE to_truncate; INSERT INTO to_truncate SELECT g FROM generate_series(1, 500) g;
       DELETE FROM shrinking WHERE id > 5000;
       UPDATE in_extra SET v = 'changed' WHERE id % 100 = 0;`,
    );
    // Truncates the relation's tail: older backups must not bring those blocks back.
    await cluster.psql('VACUUM shrinking');
    await cluster.psql('CREATE DATABASE db2');
    await cluster.query('CREATE TABLE t2 AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g', { database: 'db2' });
    names.inc1 = await push(config, ['--incremental']);
    expected.set(names.inc1, await tableDigests(cluster));
    const inc1 = await meta(archive, names.inc1);
    assert.equal(inc1.kind, 'incremental');
    assert.equal(inc1.parent, names.full);
    assert.deepEqual(inc1.chain, [names.full]);
    assert.ok(inc1.storedBytes < full.storedBytes / 2, `the incremental stores less (${inc1.storedBytes} vs ${full.storedBytes} bytes)`);

    const tars = path.join(work, 'tars-inc1');
    assert.deepEqual(await fetchBackupTars(archive, inc1, tars), []);
    const entries = tarNames(path.join(tars, 'base.tar'));
    assert.ok(entries.some((e) => /(^|\/)INCREMENTAL\.[0-9]+$/.test(e)), `INCREMENTAL files in base.tar: ${entries.filter((e) => e.startsWith('base/')).slice(0, 5).join(', ')}`);
    const label = execFileSync('tar', ['-xOf', path.join(tars, 'base.tar'), 'backup_label'], { encoding: 'utf8' });
    assert.match(label, /INCREMENTAL FROM LSN: /);

    await cluster.psql(
      `INSERT INTO fresh SELECT g, md5(g::text) FROM generate_series(20001, 30000) g;
       INSERT INTO shrinking SELECT g, 'again ' || g FROM generate_series(5001, 7000) g;
       DELETE FROM in_extra WHERE id > 29000;`,
    );
    await cluster.query('UPDATE t2 SET v = upper(v) WHERE id <= 100', { database: 'db2' });
    names.inc2 = await push(config, ['--incremental']);
    expected.set(names.inc2, await tableDigests(cluster));
    const inc2 = await meta(archive, names.inc2);
    assert.equal(inc2.parent, names.inc1);
    assert.deepEqual(inc2.chain, [names.full, names.inc1]);

    // A table that shrinks again under VACUUM, and rows that come back into the freed space.
    await cluster.psql(`DELETE FROM fresh WHERE id > 15000; UPDATE shrinking SET v = 'third' WHERE id % 7 = 0;`);
    await cluster.psql('VACUUM fresh');
    await cluster.psql(`INSERT INTO fresh SELECT g, 'back ' || g FROM generate_series(15001, 16000) g;`);
    await cluster.query('DELETE FROM t2 WHERE id > 9000', { database: 'db2' });
    names.inc3 = await push(config, ['--incremental']);
    expected.set(names.inc3, await tableDigests(cluster));
    const inc3 = await meta(archive, names.inc3);
    assert.deepEqual(inc3.chain, [names.full, names.inc1, names.inc2]);

    const list = await runWalvault(['backup', 'list', '--config', config, '--json']);
    assert.equal(list.code, 0, list.stderr);
    const listed = (JSON.parse(list.stdout) as Array<{ name: string; kind: string; parent: string | null }>).map((b) => [b.name, b.kind, b.parent]);
    assert.deepEqual(listed, [
      [names.full, 'full', null],
      [names.inc1, 'incremental', names.full],
      [names.inc2, 'incremental', names.inc1],
      [names.inc3, 'incremental', names.inc2],
    ]);
  });

  it('takes an incremental against a named parent', async () => {
    const name = await push(config, ['--incremental', '--parent', names.full!]);
    const m = await meta(archive, name);
    assert.equal(m.parent, names.full);
    assert.deepEqual(m.chain, [names.full]);
    const d = await runWalvault(['backup', 'delete', name, '--config', config, '--confirm']);
    assert.equal(d.code, 0, d.stderr);
  });

  it('refuses an unknown parent and summarize_wal off, one line each, nothing written', async () => {
    await refused(['backup', 'push', '--config', config, '--incremental', '--parent', '20200101T000000Z'], path.join(archive, 'backups'), /parent backup: no backup named 20200101T000000Z/);
    await cluster.psql('ALTER SYSTEM SET summarize_wal = off');
    await cluster.psql('SELECT pg_reload_conf()');
    // The postmaster rereads its settings in its own time: new sessions see off once it has.
    await waitFor(async () => (await cluster.psql('SHOW summarize_wal')).trim() === 'off', { timeoutMs: 10000, what: 'summarize_wal to be off' });
    try {
      await refused(['backup', 'push', '--config', config, '--incremental', '--fast'], path.join(archive, 'backups'), /summarize_wal is off; run "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf\(\);"/);
    } finally {
      await cluster.psql('ALTER SYSTEM RESET summarize_wal');
      await cluster.psql('SELECT pg_reload_conf()');
    }
  });

  it('keeps chains whole: delete of a parent refuses unless its dependents go too; the policy counts full backups', async () => {
    const d = await runWalvault(['backup', 'delete', names.inc1!, '--config', config]);
    assert.notEqual(d.code, 0);
    assert.match(d.stderr, new RegExp(`backup ${names.inc1} is needed by the incremental backups ${names.inc2}, ${names.inc3}: .*--with-dependents`));
    const dry = await runWalvault(['backup', 'delete', names.full!, '--with-dependents', '--config', config]);
    assert.equal(dry.code, 0, dry.stderr);
    for (const n of [names.full, names.inc1, names.inc2, names.inc3]) assert.match(dry.stdout, new RegExp(`would delete backup ${n} `));
    // One full backup and its chain: --retain 1 keeps all of it.
    const keepAll = await runWalvault(['backup', 'delete', '--retain', '1', '--config', config]);
    assert.equal(keepAll.code, 0, keepAll.stderr);
    assert.doesNotMatch(keepAll.stdout, /would delete backup/);
  });

  it('restores each backup of the chain, rebuilt from the archive, to exactly the data at its end', async () => {
    for (const name of [names.full!, names.inc1!, names.inc2!, names.inc3!]) {
      const target = path.join(work, `restore-${name}`);
      const tsTarget = path.join(work, `restore-ts-${name}`);
      const r = await runWalvault(
        ['restore', target, '--config', config, '--backup', name, '--tablespace-map', `${tsOid}=${tsTarget}`, '--target-immediate', '--target-action', 'promote'],
        {},
        300000,
      );
      assert.equal(r.code, 0, r.stderr);
      const done = r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; rebuilt?: number; chain?: string[] }).find((l) => l.msg === 'backup restored and verified against its manifest');
      assert.ok(done, r.stderr);
      if (name !== names.full) {
        assert.ok((done.rebuilt ?? 0) > 0, `relation files were rebuilt from the chain (${done.rebuilt})`);
        const members = [names.full, names.inc1, names.inc2, names.inc3];
        assert.deepEqual(done.chain, members.slice(0, members.indexOf(name) + 1));
      }
      assert.ok(!fs.existsSync(path.join(target, 'backup_label')) || !/INCREMENTAL FROM/.test(fs.readFileSync(path.join(target, 'backup_label'), 'utf8')), 'a full backup_label');
      assert.ok(!fs.readdirSync(path.join(target, 'base'), { recursive: true }).some((f) => String(f).includes('INCREMENTAL.')), 'no INCREMENTAL file left');
      // Its own backup_manifest: the rebuilt files with their checksums, its checksum holding.
      const written = fs.readFileSync(path.join(target, 'backup_manifest'));
      assert.ok(manifestChecksumHolds(written), 'the Manifest-Checksum matches');
      assert.doesNotMatch(written.toString('utf8'), /INCREMENTAL\./);
      const verified = compareWithManifest(target, written);
      // The recovery settings were appended to postgresql.auto.conf, which pg_verifybackup skips too.
      assert.deepEqual(verified.problems.filter((p) => !p.startsWith('postgresql.auto.conf:')), []);
      assert.ok(verified.checked > 100, `${verified.checked} files checked`);
      chownForServer(tsTarget);
      const restored = await PgCluster.start({ major, dataDir: target });
      try {
        await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: `backup ${name} to recover and promote` });
        assert.deepEqual(await tableDigests(restored), expected.get(name), `the data of backup ${name}`);
      } finally {
        await restored.destroy();
        removeDir(target);
        removeDir(tsTarget);
      }
    }
  });

  it('a flipped byte in an incremental\'s part is detected and named', async () => {
    const inc2 = await meta(archive, names.inc2!);
    const part = inc2.archives.find((a) => a.tablespaceOid === null)!.parts[0];
    const file = path.join(archive, part.key);
    const saved = fs.readFileSync(file);
    const bad = Buffer.from(saved);
    bad[bad.length - 100] ^= 0x01;
    fs.writeFileSync(file, bad);
    try {
      const target = path.join(work, 'restore-flipped');
      const r = await runWalvault(['restore', target, '--config', config, '--backup', names.inc2!, '--tablespace-map', `${tsOid}=${path.join(work, 'ts-flipped')}`], {}, 120000);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(part.key.replace(/[.]/g, '\\.')));
      assert.ok(!fs.existsSync(path.join(target, 'global', 'pg_control')), 'no startable directory');
      removeDir(target);
      removeDir(path.join(work, 'ts-flipped'));
    } finally {
      fs.writeFileSync(file, saved);
    }
  });

  it('check names a chain member that is missing', async () => {
    // The middle incremental's completion marker and metadata gone: it is no longer a
    // complete backup. The metadata must go too, or the receiver running beside this test
    // rightly completes the backup again (its WAL is archived) before restore looks.
    const files = ['complete.json', 'metadata.json'].map((f) => path.join(archive, 'backups', names.inc1!, f));
    const saved = files.map((f) => fs.readFileSync(f));
    for (const f of files) fs.rmSync(f);
    try {
      const r = await runWalvault(['check', '--config', config, '--json'], {}, 120000);
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.parse(r.stdout) as { backups: Array<{ name: string; kind: string; restorable: boolean; brokenChain: string[]; problems: string[] }> };
      const newest = report.backups.find((b) => b.name === names.inc2)!;
      assert.equal(newest.kind, 'incremental');
      assert.equal(newest.restorable, false);
      assert.deepEqual(newest.brokenChain, [names.inc1]);
      assert.ok(newest.problems.some((p) => p.includes(`backup ${names.inc1}, which this incremental is built on, is missing or incomplete`)), newest.problems.join('\n'));
      // restore refuses before writing anything, naming the missing member.
      const target = path.join(work, 'restore-broken-chain');
      const line = await refused(['restore', target, '--config', config, '--backup', names.inc2!, '--tablespace-map', `${tsOid}=${path.join(work, 'ts-broken')}`], target, new RegExp(`needs backup ${names.inc1}, which is not restorable`));
      assert.doesNotMatch(line, /internal error/);
    } finally {
      files.forEach((f, i) => fs.writeFileSync(f, saved[i]));
    }
  });
});

for (const kind of OBJECT_STORES)
describe(`an incremental chain in ${kind.name}, zstd, encrypted, on PostgreSQL 17`, { skip: !availableMajors().includes(17) && 'PostgreSQL 17 binaries not installed' }, () => {
  let cluster: PgCluster;
  let store: ObjectStore | undefined;
  let work = '';
  let config = '';
  let receiver: WalvaultProcess | undefined;
  let privateKey = '';

  before(async () => {
    work = tmpDir('walvault-incr-store-');
    cluster = await PgCluster.start({ major: 17, walSegSizeMiB: 1, settings: { summarize_wal: 'on' } });
    store = await kind.start();
    privateKey = path.join(work, 'site.key');
    const k = await runWalvault(['keys', 'create', '--private-key', privateKey, '--public-key', path.join(work, 'site.pub')]);
    assert.equal(k.code, 0, k.stderr);
    // The site holds the public key only, as a backup host does: the parent's upload
    // manifest must be readable without the private one.
    ({ config, receiver } = await startStreamingSite(cluster, work, {
      archive: store.url(`${path.basename(work)}/main`),
      compression: 'zstd',
      encryption_public_key_file: path.join(work, 'site.pub'),
    }));
    await cluster.pgbench(['-i', '-s', '1', '-q']);
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await cluster?.destroy();
    await store?.destroy();
    if (work) removeDir(work);
  });

  it('takes and restores a chain', async () => {
    await push(config);
    await cluster.psql('UPDATE pgbench_accounts SET abalance = abalance - 7 WHERE aid BETWEEN 20000 AND 30000');
    const inc = await push(config, ['--incremental']);
    const want = await tableDigests(cluster);
    const target = path.join(work, 'restored');
    const r = await runWalvault(['restore', target, '--config', config, '--private-key', privateKey, '--backup', inc, '--target-immediate', '--target-action', 'promote'], {}, 300000);
    assert.equal(r.code, 0, r.stderr);
    chownForServer(privateKey);
    const restored = await PgCluster.start({ major: 17, dataDir: target });
    try {
      await waitFor(async () => (await restored.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 120000, what: 'recovery and promotion' });
      assert.deepEqual(await tableDigests(restored), want);
    } finally {
      await restored.destroy();
    }
  });
});

describe('the daemon\'s schedule on PostgreSQL 17', { skip: !availableMajors().includes(17) && 'PostgreSQL 17 binaries not installed' }, () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let daemon: WalvaultProcess | undefined;

  before(async () => {
    work = tmpDir('walvault-incr-schedule-');
    // summarize_wal off: the schedule's incrementals are refused until it is turned on.
    cluster = await PgCluster.start({ major: 17, walSegSizeMiB: 1 });
    await cluster.pgbench(['-i', '-s', '1', '-q']);
    ({ archive, receiver: daemon } = await startStreamingSite(cluster, work, {
      // A backup due every 4 s (once the previous one stopped), incrementals between fulls.
      backup_interval_hours: 4 / 3600,
      backup_fast_checkpoint: true,
      full_backup_interval_days: 7,
      max_incremental_chain: 5,
    }));
  });

  after(async () => {
    await daemon?.stop('SIGTERM', 60000);
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  const kinds = async (): Promise<string[]> => (await withArchive(archive, (a) => listBackupsOf(a))).map((b) => b.kind ?? 'full');

  it('takes a full backup instead of an impossible incremental, saying why once, then incrementals once the server allows', async () => {
    await waitFor(async () => (await kinds()).length >= 3, { timeoutMs: 120000, intervalMs: 500, what: 'three scheduled backups' });
    assert.deepEqual((await kinds()).slice(0, 3), ['full', 'full', 'full'], 'summarize_wal off: every scheduled backup is full');
    const refusals = () => daemon!.lines.filter((l) => l.msg === 'incremental backup not possible; taking a full backup instead');
    assert.equal(refusals().length, 1, 'the reason is logged once, not at every backup');
    assert.match(String(refusals()[0].reason), /summarize_wal is off/);

    await cluster.psql('ALTER SYSTEM SET summarize_wal = on');
    await cluster.psql('SELECT pg_reload_conf()');
    // The first incremental after that needs summaries from its parent's start, which the
    // server refuses (its reason is the second line); a full one follows, then incrementals.
    await waitFor(async () => (await kinds()).includes('incremental'), { timeoutMs: 180000, intervalMs: 500, what: 'a scheduled incremental backup' });
    const all = await withArchive(archive, (a) => listBackupsOf(a));
    const first = all.find((b) => b.kind === 'incremental')!;
    const parent = all.find((b) => b.name === first.parent)!;
    assert.equal(parent.kind, 'full');
    assert.deepEqual(first.chain, [parent.name]);
    assert.ok(refusals().length <= 2, `logged once per distinct reason: ${refusals().map((l) => l.reason).join(' | ')}`);
    // A full backup taken before summaries began cannot be a parent: the server's words, and the way on.
    if (refusals().length === 2) assert.match(String(refusals()[1].reason), /the server cannot take an incremental backup against [0-9TZ-]+: .*WAL summar.*; take a full backup/);
  });
});

describe('an incremental against a parent the server cannot build on (PostgreSQL 17)', { skip: !availableMajors().includes(17) && 'PostgreSQL 17 binaries not installed' }, () => {
  let primary: PgCluster;
  let promoted: PgCluster | undefined;
  let other: PgCluster | undefined;
  let work = '';
  let archive = '';
  let config = '';
  let receiver: WalvaultProcess | undefined;

  before(async () => {
    work = tmpDir('walvault-incr-parent-');
    primary = await PgCluster.start({ major: 17, walSegSizeMiB: 1, settings: { summarize_wal: 'on' } });
    ({ config, archive, receiver } = await startStreamingSite(primary, work));
    await primary.pgbench(['-i', '-s', '1', '-q']);
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await Promise.all([promoted?.destroy(), other?.destroy()]);
    await primary?.destroy();
    if (work) removeDir(work);
  });

  /** `backup push --incremental` against `server`, into the site's archive, in the one-site form. */
  const againstServer = (server: PgCluster, extra: string[] = []) => [
    'backup', 'push', '--pg', pgConninfo(server), '--archive', archive, '--state', path.join(work, `state-${server.port}`), '--incremental', '--fast', ...extra,
  ];

  it('refuses a parent that is not on the server\'s timeline history, writing nothing', async () => {
    // A standby promoted now branches off timeline 1; the primary goes on, and its backup
    // taken after the branch point is no ancestor of timeline 2.
    promoted = await PgCluster.start({ standbyOf: primary, settings: { summarize_wal: 'on' } });
    await waitFor(async () => Number((await primary.query(`SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'`))[0].n) >= 1, { timeoutMs: 60000, what: 'the standby to stream' });
    await promoted.promote();
    await primary.pgbench(['-c', '1', '-t', '200', '-n']);
    const parent = await push(config);
    await refused(
      againstServer(promoted, ['--parent', parent]),
      path.join(archive, 'backups'),
      new RegExp(`parent backup ${parent} \\(timeline 1, stopped at [0-9A-F]+/[0-9A-F]+\\) is not on the history of the server's timeline 2; choose a backup taken on it .* or take a full backup`),
    );
  });

  it('passes on the server\'s refusal when the WAL summaries for the parent\'s range are gone, writing nothing', async () => {
    // With no summary files the summarizer starts again at the oldest WAL on disk. Removed
    // with the server down: the summaries, and the WAL before the latest checkpoint's redo
    // point (archived by the site, not needed by the server), which is after the parent's
    // start. The range back to the parent's start then has no summaries.
    const parent = await push(config);
    await primary.pgbench(['-c', '1', '-t', '200', '-n']);
    await primary.switchWal();
    await primary.psql('CHECKPOINT');
    const [{ redo, file }] = await primary.query(`SELECT redo_lsn::text AS redo, pg_walfile_name(redo_lsn) AS file FROM pg_control_checkpoint()`);
    await waitFor(async () => (await primary.query(`SELECT restart_lsn >= '${redo}'::pg_lsn AS ok FROM pg_replication_slots`))[0]?.ok === true, { timeoutMs: 60000, what: 'the site to archive past the checkpoint' });
    await primary.stop();
    const summaries = path.join(primary.dataDir, 'pg_wal', 'summaries');
    for (const f of fs.readdirSync(summaries)) fs.rmSync(path.join(summaries, f));
    const walDir = path.join(primary.dataDir, 'pg_wal');
    for (const f of fs.readdirSync(walDir)) if (/^[0-9A-F]{24}$/.test(f) && f < String(file)) fs.rmSync(path.join(walDir, f));
    await primary.start();
    await refused(
      againstServer(primary, ['--parent', parent]),
      path.join(archive, 'backups'),
      new RegExp(`^walvault: the server cannot take an incremental backup against ${parent}: .*WAL summaries are required on timeline 1 from [0-9A-F]+/[0-9A-F]+ to .*; take a full backup`),
      true,
    );
  });

  it('refuses a parent of another cluster, writing nothing', async () => {
    other = await PgCluster.start({ major: 17, walSegSizeMiB: 1, settings: { summarize_wal: 'on' } });
    await refused(againstServer(other), path.join(archive, 'backups'), /parent backup [0-9TZ-]+ is of database system [0-9]+, but the server is [0-9]+; take a full backup/);
  });
});

describe('incremental backups on PostgreSQL 15', () => {
  let cluster: PgCluster;
  let work = '';

  before(async () => {
    work = tmpDir('walvault-incr-15-');
    cluster = await PgCluster.start({ walSegSizeMiB: 1 });
  });

  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('are refused with the version and the way on, writing nothing', async () => {
    const archive = path.join(work, 'archive');
    fs.mkdirSync(archive);
    const line = await refused(
      ['backup', 'push', '--pg', pgConninfo(cluster), '--archive', archive, '--state', path.join(work, 'state'), '--incremental', '--fast'],
      archive,
      /incremental backups need PostgreSQL 17 or later; the server is PostgreSQL 15\.[0-9]+; take a full backup/,
    );
    assert.doesNotMatch(line, /internal error/);
  });
});
