/**
 * Issue 14, item 1: a valid object under the wrong name is never served as if right.
 * One segment's object copied over a later segment's name (a plain spool-file object on a
 * local archive, an encrypted zstd object on s3rver and on Azurite): wal-fetch exits 126
 * naming it and writes nothing; verify names it; a restored PostgreSQL 15 stops recovery at it with
 * walvault's line in its log instead of promoting (no new timeline, nothing after it lost),
 * and once the right object is back the same directory recovers every commit. A backup part
 * copied over another position, or from another backup, fails the restore naming the part,
 * with no pg_control written.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { BackupMetadata } from '../../src/backup/catalog';
import type { VerifyReport } from '../../src/check/verify-archive';
import { parseLsn, segmentFileName, segmentNumber } from '../../src/wal/lsn';
import { chownForServer, DEBIAN_PG15_BIN, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { openArchive, pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, WalvaultProcess, writeConfig } from '../helpers/walvault';

const execFileP = promisify(execFile);
const MARKERS = `SELECT count(*)::int AS n, coalesce(md5(string_agg(step::text || ':' || pad, ',' ORDER BY step)), '') AS sum FROM marker`;
const STEPS = 8;
/** The segment whose object is copied over another's name, and the (later) name it is copied over: steps' segments. */
const SOURCE_STEP = 2;
const DAMAGED_STEP = 4;

/** The lines walvault printed (its errors start with "walvault:"). */
const walvaultLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('walvault:'));

/**
 * Starts PostgreSQL on the restored `dataDir` and waits until recovery is over one way or
 * the other: the server stopped by itself, or it promoted. Returns the server log, and
 * whether it promoted. pg_ctl may or may not see the server ready first (hot standby lets
 * clients in once it is consistent), so both ways of ending are taken.
 */
async function recoverOnce(dataDir: string): Promise<{ log: string; promoted: boolean }> {
  let server: PgCluster;
  try {
    server = await PgCluster.start({ dataDir });
  } catch (err) {
    // It stopped before pg_ctl saw it ready: the error carries the log's tail.
    return { log: (err as Error).message, promoted: false };
  }
  try {
    let promoted = false;
    await waitFor(
      async () => {
        if (!fs.existsSync(path.join(dataDir, 'postmaster.pid'))) return true;
        promoted = await server.query('SELECT NOT pg_is_in_recovery() AS p').then((r) => r[0].p === true, () => false);
        return promoted;
      },
      { timeoutMs: 180000, intervalMs: 200, what: 'recovery to stop or end' },
    );
    return { log: fs.readFileSync(server.logFile, 'utf8'), promoted };
  } finally {
    await server.destroy();
  }
}

async function controlData(dataDir: string): Promise<string> {
  const { stdout } = await execFileP(path.join(DEBIAN_PG15_BIN, 'pg_controldata'), [dataDir], { env: { ...process.env, LANG: 'C', LC_ALL: 'C' } });
  return stdout;
}

for (const kind of [undefined, ...OBJECT_STORES])
describe(`a valid object under the wrong name is refused (PostgreSQL 15, ${kind ? `${kind.name}, zstd, encrypted` : 'local directory, plain objects'})`, () => {
  let primary: PgCluster;
  let store: ObjectStore | undefined;
  let work = '';
  let archive = '';
  let config = '';
  let keyArgs: string[] = [];
  let b1 = '';
  let b2 = '';
  let expected: { n: number; sum: string } = { n: 0, sum: '' };
  /** The segment each step's commit is in. */
  const stepSegment = new Map<number, string>();
  let source = '';
  let damaged = '';

  const backupMeta = async (name: string): Promise<BackupMetadata> => JSON.parse((await runWalvault(['backup', 'show', '--config', config, name])).stdout);

  /** Runs `fn` with the object at `from` copied over `to`; puts `to`'s own object back after. */
  async function copiedOver<T>(from: string, to: string, fn: () => Promise<T>): Promise<T> {
    const storage = openArchive(archive).storage;
    try {
      const own = await storage.get(to);
      const theirs = await storage.get(from);
      assert.ok(own && theirs, `${from} and ${to} are stored`);
      await storage.put(to, theirs);
      try {
        return await fn();
      } finally {
        await storage.put(to, own);
      }
    } finally {
      await storage.close();
    }
  }

  before(async () => {
    work = tmpDir('walvault-misplaced-');
    primary = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    const site: Record<string, unknown> = { status_interval_seconds: 1 };
    if (kind) {
      store = await kind.start();
      archive = store.url(`${path.basename(work)}/main`);
      const privateKey = path.join(work, 'site.key');
      const k = await runWalvault(['keys', 'create', '--private-key', privateKey, '--public-key', path.join(work, 'site.pub')]);
      assert.equal(k.code, 0, k.stderr);
      // restore_command runs as the server's OS user: it must be able to read the key.
      chownForServer(privateKey);
      keyArgs = ['--private-key', privateKey];
      Object.assign(site, { compression: 'zstd', encryption_public_key_file: path.join(work, 'site.pub') });
    } else {
      archive = path.join(work, 'archive');
    }
    config = writeConfig(work, { main: { pg: pgConninfo(primary), archive, state: path.join(work, 'state'), ...site } as never }, 'info');
    const receiver = WalvaultProcess.start(['run', '--config', config]);
    try {
      await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      await primary.query(`CREATE TABLE marker (step int PRIMARY KEY, pad text NOT NULL)`);
      // Data that does not compress to nothing, so the base archive spans several parts.
      await primary.query(`CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 150000) g`);
      b1 = await pushBackup(['--config', config]);
      b2 = await pushBackup(['--config', config]);
      // One commit per segment after the backups.
      const segSize = primary.walSegSize;
      for (let step = 1; step <= STEPS; step++) {
        await primary.query(`INSERT INTO marker VALUES (${step}, repeat(md5('${step}'), 40))`);
        const end = parseLsn((await primary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
        stepSegment.set(step, segmentFileName(1, segmentNumber(end - 1n, segSize), segSize));
        await primary.query(`SELECT pg_switch_wal()`);
      }
      expected = (await primary.query(MARKERS))[0];
      assert.equal(expected.n, STEPS);
      await switchAndWaitArchived(primary, archive, 1, 120000);
    } finally {
      await receiver.stop('SIGTERM', 30000);
    }
    source = stepSegment.get(SOURCE_STEP)!;
    damaged = stepSegment.get(DAMAGED_STEP)!;
    assert.ok(source < damaged && new Set(stepSegment.values()).size === STEPS, `each step in its own segment (${[...stepSegment.values()].join(', ')})`);
  });

  after(async () => {
    await primary?.destroy();
    await store?.destroy();
    if (work) removeDir(work);
  });

  it('wal-fetch exits 126 with one line naming the object and what it holds; nothing is written', async () => {
    const dest = path.join(work, 'fetched');
    await copiedOver(`wal/${source}`, `wal/${damaged}`, async () => {
      const r = await runWalvault(['wal-fetch', '--config', config, ...keyArgs, damaged, dest]);
      assert.equal(r.code, 126, r.stderr);
      const lines = walvaultLines(r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      assert.ok(lines[0].includes(`wal/${damaged}`) && lines[0].includes(source), `the line names the object and what it holds: ${lines[0]}`);
      assert.match(lines[0], /put that name's own object back/);
      assert.ok(!fs.existsSync(dest), 'nothing written to the destination');
      const ok = await runWalvault(['wal-fetch', '--config', config, ...keyArgs, source, dest]);
      assert.equal(ok.code, 0, `the object under its own name is served: ${ok.stderr}`);
      fs.rmSync(dest);
    });
  });

  it('verify names the misplaced object (and, encrypted, by its binding without the key too)', async () => {
    await copiedOver(`wal/${source}`, `wal/${damaged}`, async () => {
      for (const extra of kind ? [keyArgs, []] : [[]]) {
        const r = await runWalvault(['verify', '--config', config, '--json', ...extra], {}, 120000);
        assert.equal(r.code, 1, r.stderr);
        const report = JSON.parse(r.stdout) as VerifyReport;
        assert.deepEqual(report.bad.map((b) => b.key), [`wal/${damaged}`], `${extra.length ? 'with' : 'without'} the key`);
        assert.ok(report.bad[0].problem.includes(source), report.bad[0].problem);
      }
    });
  });

  it('recovery stops at the misplaced segment with walvault\'s message, unpromoted; with the object put back the same directory recovers every commit', async () => {
    const target = path.join(work, 'restored');
    const r = await runWalvault(['restore', '--config', config, ...keyArgs, target], {}, 300000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(fs.readFileSync(path.join(target, 'postgresql.auto.conf'), 'utf8'), /walvault-prefetch/, 'the prefetcher serves this recovery');
    await copiedOver(`wal/${source}`, `wal/${damaged}`, async () => {
      const { log, promoted } = await recoverOnce(target);
      assert.equal(promoted, false, `the server did not promote:\n${log.slice(-3000)}`);
      assert.ok(new RegExp(`walvault: .*wal/${damaged}.*${source}`).test(log), `the server log has walvault's line naming ${damaged} and what it holds:\n${log.slice(-3000)}`);
      assert.match(log, /FATAL/, 'recovery stopped');
      assert.doesNotMatch(log, /selected new timeline ID/);
      assert.deepEqual(fs.readdirSync(path.join(target, 'pg_wal')).filter((n) => n.endsWith('.history')), [], 'no new timeline');
      const control = await controlData(target);
      assert.match(control, /Database cluster state:\s+in archive recovery/, control);
      assert.match(control, /Latest checkpoint's TimeLineID:\s+1$/m, control);
    });
    // The right object is back: the same directory recovers to the end, every commit there.
    const server = await PgCluster.start({ dataDir: target });
    try {
      await waitFor(async () => (await server.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, { timeoutMs: 180000, what: 'recovery to the end of the archive' });
      assert.deepEqual((await server.query(MARKERS))[0], expected, "every commit is there, as the primary has them");
    } finally {
      await server.destroy();
      removeDir(target);
    }
  });

  it('restore refuses a backup part copied over another position or from another backup, naming it, before pg_control', async () => {
    const base = async (name: string) => (await backupMeta(name)).archives.find((a) => a.tablespaceOid === null)!.parts;
    const parts1 = await base(b1);
    const parts2 = await base(b2);
    assert.ok(parts1.length >= 2 && parts2.length >= 2, `the base archive has several parts (${parts1.length}, ${parts2.length})`);
    for (const [what, from, to] of [
      ['another position of the same backup', parts1[0].key, parts1[1].key],
      ['the same position of another backup', parts2[1].key, parts1[1].key],
    ] as const) {
      await copiedOver(from, to, async () => {
        const target = path.join(work, 'restored-parts');
        const r = await runWalvault(['restore', '--config', config, ...keyArgs, '--backup', b1, target], {}, 300000);
        assert.notEqual(r.code, 0, `${what}: refused`);
        const lines = walvaultLines(r.stderr);
        assert.equal(lines.length, 1, r.stderr);
        assert.ok(lines[0].includes(to), `${what}: the line names ${to}: ${lines[0]}`);
        assert.ok(lines[0].includes(from), `${what}: and what it holds (its binding): ${lines[0]}`);
        assert.ok(!fs.existsSync(path.join(target, 'global', 'pg_control')), `${what}: no pg_control, no server starts on it`);
        assert.ok(!fs.existsSync(path.join(target, 'recovery.signal')));
        removeDir(target);
      });
    }
  });
});
