/**
 * The pure and local pieces of restore --delta (issue 20): which files are compared and which
 * removed, which directories go after the backup is read, the refusals (by code, with
 * nothing written), and the writer threads' reads of existing files.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { isWalvaultError } from '../../src/errors';
import { checkDeltaRoots, checkDeltaTarget, DELTA_OLD_CONTROL, DeltaCheck, extraDirs, planDelta, scanTree, type ExistingEntry, type ManifestFiles } from '../../src/restore/delta';
import { FileWriterPool, PATCH_MIN_SIZE } from '../../src/restore/file-writers';
import { newChecksum } from '../../src/restore/manifest-checksum';
import { removeDir, tmpDir } from '../helpers/temp-dirs';

const entry = (p: string, kind: ExistingEntry['kind'], size = 0): ExistingEntry => ({ path: p, abs: `/d/${p}`, kind, size });
const crc = (s: string) => {
  const h = newChecksum('CRC32C');
  h.update(Buffer.from(s));
  return h.digest();
};

describe('planDelta', () => {
  const manifest: ManifestFiles = {
    algorithm: 'CRC32C',
    files: [
      { path: 'PG_VERSION', size: 3, checksum: crc('15\n') },
      { path: 'base/1/1259', size: 8192, checksum: 'aa' },
      { path: 'base/1/INCREMENTAL.2608', size: 100, checksum: 'bb' },
      { path: 'global/pg_control', size: 8192, checksum: 'cc' },
      { path: 'pg_ident.conf', size: 10, checksum: 'dd' },
      { path: 'pg_tblspc/16384/PG_15_1/5/16390', size: 16384, checksum: 'ee' },
    ],
  };

  test('compares files the manifest lists with their size; removes the rest, links and directories where the backup has a file', () => {
    const plan = planDelta(manifest, [
      entry('PG_VERSION', 'file', 3),
      entry('base', 'dir'),
      entry('base/1', 'dir'),
      entry('base/1/1259', 'file', 4096), // another size
      entry('base/1/2608', 'file', 8192), // rebuilt from the chain: never compared
      entry('base/1/stray', 'file', 1),
      entry('global', 'dir'),
      entry('global/pg_control', 'file', 8192), // always the backup's
      entry(DELTA_OLD_CONTROL, 'file', 8192), // set aside until the end
      entry('pg_ident.conf', 'dir'),
      entry('pg_ident.conf/inner', 'file', 1),
      entry('pg_tblspc', 'dir'),
      entry('pg_tblspc/16384', 'other'), // a tablespace link
      entry('pg_tblspc/16384/PG_15_1', 'dir'),
      entry('pg_tblspc/16384/PG_15_1/5', 'dir'),
      entry('pg_tblspc/16384/PG_15_1/5/16390', 'file', 16384),
      entry('extra', 'dir'),
    ]);
    assert.deepEqual(plan.check.map((e) => e.path), ['PG_VERSION', 'pg_tblspc/16384/PG_15_1/5/16390']);
    assert.deepEqual(plan.remove.map((e) => e.path), ['base/1/1259', 'base/1/2608', 'base/1/stray', 'global/pg_control', 'pg_ident.conf', 'pg_tblspc/16384']);
    assert.deepEqual(plan.dirs.map((e) => e.path), ['base', 'base/1', 'extra', 'global', 'pg_tblspc', 'pg_tblspc/16384/PG_15_1', 'pg_tblspc/16384/PG_15_1/5']);
  });

  test('a manifest without checksums keeps nothing', () => {
    const plan = planDelta({ ...manifest, algorithm: 'NONE' }, [entry('PG_VERSION', 'file', 3)]);
    assert.deepEqual(plan.check, []);
    assert.deepEqual(plan.remove.map((e) => e.path), ['PG_VERSION']);
  });

  test('checkDeltaRoots refuses a tablespace directory in the data directory, or two in one', () => {
    const ok = [{ dir: '/srv/data', what: 'data' }, { dir: '/srv/data-ts', what: 'ts 1' }];
    checkDeltaRoots(ok);
    for (const bad of [[...ok, { dir: '/srv/data/ts', what: 'ts 2' }], [...ok, { dir: '/srv/data-ts', what: 'ts 2' }]]) {
      assert.throws(() => checkDeltaRoots(bad), (err) => isWalvaultError(err, 'CONFIG_INVALID'));
    }
  });

  test('extraDirs: the directories left that the restore did not make, topmost only', () => {
    const left = [entry('base', 'dir'), entry('extra', 'dir'), entry('extra/deeper', 'dir'), entry('global', 'dir')];
    assert.deepEqual(extraDirs(left, new Set(['/d/base', '/d/global'])).map((e) => e.path), ['extra']);
  });
});

describe('on disk', () => {
  const work = tmpDir('walvault-delta-unit-');
  after(() => removeDir(work));

  const refusal = async (o: Parameters<typeof checkDeltaTarget>[0], code: string) => {
    const before = scanTree(o.dir, '');
    await assert.rejects(checkDeltaTarget(o), (err) => isWalvaultError(err) && err.code === code);
    assert.deepEqual(await scanTree(o.dir, ''), await before, 'nothing written');
  };

  test('checkDeltaTarget: a live postmaster.pid, another cluster, no cluster; --force passes all but the first', async () => {
    const dir = path.join(work, 'data');
    fs.mkdirSync(path.join(dir, 'global'), { recursive: true });
    const control = Buffer.alloc(8192);
    control.writeBigUInt64LE(7234567890123456789n, 0);
    fs.writeFileSync(path.join(dir, 'global', 'pg_control'), control);
    await checkDeltaTarget({ dir, systemId: '7234567890123456789', backup: 'b', force: false });
    await refusal({ dir, systemId: '1', backup: 'b', force: false }, 'RESTORE_OTHER_CLUSTER');
    await checkDeltaTarget({ dir, systemId: '1', backup: 'b', force: true });
    // Set aside by an interrupted delta: still the cluster's.
    fs.renameSync(path.join(dir, 'global', 'pg_control'), path.join(dir, DELTA_OLD_CONTROL));
    await checkDeltaTarget({ dir, systemId: '7234567890123456789', backup: 'b', force: false });
    await refusal({ dir, systemId: '1', backup: 'b', force: false }, 'RESTORE_OTHER_CLUSTER');
    fs.rmSync(path.join(dir, DELTA_OLD_CONTROL));
    await refusal({ dir, systemId: '1', backup: 'b', force: false }, 'RESTORE_OTHER_CLUSTER');
    const live = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      fs.writeFileSync(path.join(dir, 'postmaster.pid'), `${live.pid}\n${dir}\n`);
      await refusal({ dir, systemId: '1', backup: 'b', force: true }, 'RESTORE_TARGET_RUNNING');
    } finally {
      live.kill('SIGKILL');
    }
    await new Promise((r) => live.once('exit', r));
    // A stale one (its process gone) is no server.
    await checkDeltaTarget({ dir, systemId: '1', backup: 'b', force: true });
    // Empty or absent: nothing to protect.
    await checkDeltaTarget({ dir: path.join(work, 'absent'), systemId: '1', backup: 'b', force: false });
  });

  test('scanTree never follows a link, and the writer threads checksum files as the manifest does', async () => {
    const dir = path.join(work, 'scan');
    fs.mkdirSync(path.join(dir, 'a'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'a', 'f'), 'hello');
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
    fs.writeFileSync(path.join(dir, 'big'), big);
    fs.symlinkSync(work, path.join(dir, 'out'));
    const found = await scanTree(dir, 'p/');
    assert.deepEqual(
      found.map((e) => [e.path, e.kind, e.size]).sort(),
      [
        ['p/a', 'dir', 0],
        ['p/a/f', 'file', 5],
        ['p/big', 'file', big.length],
        ['p/out', 'other', 0],
      ],
    );
    const pool = new FileWriterPool('CRC32C', 2);
    try {
      const got: Array<[number, { size: number; checksum: string }]> = [];
      await pool.digestFiles([path.join(dir, 'a', 'f'), path.join(dir, 'big')], (i, facts) => void got.push([i, facts]));
      const h = newChecksum('CRC32C');
      h.update(big);
      assert.deepEqual(got.sort((x, y) => x[0] - y[0]), [
        [0, { size: 5, checksum: crc('hello') }],
        [1, { size: big.length, checksum: h.digest() }],
      ]);
      // DeltaCheck: a verdict per file, in the manifest's order; one that differs is removed.
      fs.writeFileSync(path.join(dir, 'changed'), 'hellO');
      const manifest: ManifestFiles = {
        algorithm: 'CRC32C',
        files: [
          { path: 'p/changed', size: 5, checksum: crc('hello') },
          { path: 'p/a/f', size: 5, checksum: crc('hello') },
        ],
      };
      const check = new DeltaCheck(pool, manifest, [
        { path: 'p/a/f', abs: path.join(dir, 'a', 'f'), kind: 'file', size: 5 },
        { path: 'p/changed', abs: path.join(dir, 'changed'), kind: 'file', size: 5 },
      ]);
      assert.deepEqual(await check.verdicts.get('p/a/f'), { size: 5, checksum: crc('hello') });
      assert.equal(await check.verdicts.get('p/changed'), null);
      await check.done;
      assert.ok(!fs.existsSync(path.join(dir, 'changed')), 'the file that differs is gone before its verdict');
      assert.deepEqual([check.checked, check.kept, check.keptBytes, check.differed], [2, 1, 5, 1]);
      // A large file that differs, patched in place: only the page that differs is written.
      const incoming = new Uint8Array(new SharedArrayBuffer(PATCH_MIN_SIZE + 5000));
      for (let i = 0; i < incoming.length; i++) incoming[i] = (i * 7) & 0xff;
      const there = Buffer.from(incoming);
      there[3 * 8192 + 10] ^= 0xff;
      const patched = path.join(dir, 'patched');
      fs.writeFileSync(patched, there);
      const id = pool.open(patched, 0o600, incoming.length, true);
      for (let at = 0; at < incoming.length; at += 1024 * 1024) {
        await new Promise<void>((resolve) => pool.write(id, incoming.subarray(at, Math.min(at + 1024 * 1024, incoming.length)), resolve));
      }
      const facts = await pool.close(id);
      assert.ok(fs.readFileSync(patched).equals(Buffer.from(incoming)), 'the file is the backup\'s');
      assert.equal(facts.rewritten, 8192, 'one page written');
      assert.equal(facts.size, incoming.length);
      await assert.rejects(pool.digestFiles([path.join(dir, 'missing')], () => undefined), /cannot read .*missing/);
    } finally {
      await pool.destroy();
    }
  });
});
