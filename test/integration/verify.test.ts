/**
 * `walvault verify` (issue 6, acceptance 3): among hundreds of stored objects (zstd-framed
 * WAL segments, history-less timeline 1, a base backup's parts, catalog objects), one
 * flipped byte is found and the object named; a clean archive verifies clean.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VerifyReport } from '../../src/check/verify-archive';
import { PgCluster, removeDir, tmpDir } from '../helpers/pg-cluster';
import { pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, withReceiver, writeConfig } from '../helpers/walvault';

describe('walvault verify: one flipped byte among hundreds of objects (PostgreSQL 15, zstd)', () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let objects = 0;

  const verify = async (): Promise<{ code: number | null; report: VerifyReport }> => {
    const r = await runWalvault(['verify', '--archive', archive, '--json'], {}, 120000);
    assert.ok(r.code === 0 || r.code === 1, `verify ran (exit ${r.code}): ${r.stderr}`);
    return { code: r.code, report: JSON.parse(r.stdout) as VerifyReport };
  };
  /** Flips one byte in the middle of the stored file of `key`, runs `fn`, flips it back. */
  const flipped = async <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const file = path.join(archive, key);
    const bytes = fs.readFileSync(file);
    const at = Math.floor(bytes.length / 2);
    bytes[at] ^= 0x10;
    fs.writeFileSync(file, bytes);
    try {
      return await fn();
    } finally {
      bytes[at] ^= 0x10;
      fs.writeFileSync(file, bytes);
    }
  };

  before(async () => {
    cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    work = tmpDir('walvault-verify-');
    archive = path.join(work, 'archive');
    const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), compression: 'zstd', status_interval_seconds: 1 } });
    await withReceiver(config, async () => {
      await cluster.pgbench(['-i', '-s', '2', '-q']);
      await pushBackup(['--config', config]);
      // Many small segments: a row, then a switch, over and over.
      await cluster.query('CREATE TABLE tick (n int)');
      for (let i = 0; i < 300; i++) await cluster.query(`INSERT INTO tick VALUES (${i}); SELECT pg_switch_wal();`);
      await switchAndWaitArchived(cluster, archive, 1, 120000);
    });
  });

  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('a clean archive verifies clean', async () => {
    const { code, report } = await verify();
    objects = report.objects;
    assert.equal(code, 0, JSON.stringify(report.bad));
    assert.ok(report.objects >= 300, `hundreds of objects (${report.objects})`);
    assert.deepEqual(report.bad, []);
  });

  it('names the one WAL segment with a flipped byte', async () => {
    const names = fs.readdirSync(path.join(archive, 'wal')).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    const victim = `wal/${names[Math.floor(names.length / 2)]}`;
    const { code, report } = await flipped(victim, verify);
    assert.equal(code, 1);
    assert.equal(report.objects, objects);
    assert.deepEqual(report.bad.map((b) => b.key), [victim]);
    assert.match(report.bad[0].problem, new RegExp(victim.replace('/', '\\/')));
    const human = await flipped(victim, () => runWalvault(['verify', '--archive', archive], {}, 120000));
    assert.equal(human.code, 1);
    assert.match(human.stdout, new RegExp(`^bad: ${victim}: `, 'm'));
  });

  it('names a backup part with a flipped byte', async () => {
    const backups = fs.readdirSync(path.join(archive, 'backups')).filter((n) => /^[0-9]{8}T/.test(n));
    const parts = fs.readdirSync(path.join(archive, 'backups', backups[0], 'parts')).sort();
    const victim = `backups/${backups[0]}/parts/${parts[0]}`;
    const { code, report } = await flipped(victim, verify);
    assert.equal(code, 1);
    assert.deepEqual(report.bad.map((b) => b.key), [victim]);
  });

  it('exits 2 with a reason when there is no archive', async () => {
    const r = await runWalvault(['verify', '--archive', path.join(work, 'nothing-here')], {}, 30000);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^walvault: verify could not run: .*no cluster\.json/);
  });
});

describe('walvault verify on an encrypted archive: without the private key, and with it (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let privateKey = '';

  before(async () => {
    cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    work = tmpDir('walvault-verify-enc-');
    archive = path.join(work, 'archive');
    privateKey = path.join(work, 'site.key');
    const publicKey = path.join(work, 'site.pub');
    const k = await runWalvault(['keys', 'create', '--private-key', privateKey, '--public-key', publicKey]);
    assert.equal(k.code, 0, k.stderr);
    const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), compression: 'zstd', encryption_public_key_file: publicKey, status_interval_seconds: 1 } });
    await withReceiver(config, async () => {
      await cluster.query('CREATE TABLE tick (n int)');
      for (let i = 0; i < 20; i++) await cluster.query(`INSERT INTO tick VALUES (${i}); SELECT pg_switch_wal();`);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
    });
  });

  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('checks stored checksums without the key, contents and page headers with it, and names a damaged object either way', async () => {
    const run = async (extra: string[]) => {
      const r = await runWalvault(['verify', '--archive', archive, '--json', ...extra], {}, 120000);
      assert.ok(r.code === 0 || r.code === 1, r.stderr);
      return { code: r.code, report: JSON.parse(r.stdout) as VerifyReport };
    };
    const keyless = await run([]);
    assert.equal(keyless.code, 0, JSON.stringify(keyless.report.bad));
    assert.ok(keyless.report.checkedWithoutKey >= 20, `encrypted segments checked by their trailer (${keyless.report.checkedWithoutKey})`);
    const keyed = await run(['--private-key', privateKey]);
    assert.equal(keyed.code, 0, JSON.stringify(keyed.report.bad));
    assert.equal(keyed.report.checkedWithoutKey, 0);

    const names = fs.readdirSync(path.join(archive, 'wal')).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    const victim = `wal/${names[5]}`;
    const file = path.join(archive, victim);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 100] ^= 0x01;
    fs.writeFileSync(file, bytes);
    for (const extra of [[], ['--private-key', privateKey]]) {
      const { code, report } = await run(extra);
      assert.equal(code, 1);
      assert.deepEqual(report.bad.map((b) => b.key), [victim], `with ${extra.length ? 'the key' : 'no key'}`);
    }
  });
});
