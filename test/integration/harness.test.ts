import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import { PgCluster, availableMajors, tmpDir, removeDir, waitFor } from '../helpers/pg-cluster';

const MiB = 1024 * 1024;

describe('PgCluster harness: PG15 primary and standby', () => {
  let primary: PgCluster;
  let standby: PgCluster | undefined;

  before(async () => {
    primary = await PgCluster.start({ major: 15, walSegSizeMiB: 1 });
  });

  after(async () => {
    await standby?.destroy();
    await primary?.destroy();
  });

  it('runs with 1 MiB WAL segments and the settings tests rely on', async () => {
    assert.equal(primary.major, 15);
    assert.equal(primary.host, '127.0.0.1');
    assert.equal(primary.walSegSize, MiB);
    assert.equal(await primary.psql('SHOW wal_segment_size'), '1MB');
    const rows = await primary.query(
      `SELECT name, setting FROM pg_settings
        WHERE name IN ('wal_level', 'fsync', 'synchronous_commit', 'max_wal_senders', 'max_replication_slots')
        ORDER BY name`,
    );
    assert.deepEqual(Object.fromEntries(rows.map((r) => [r.name, r.setting])), {
      fsync: 'on',
      max_replication_slots: '10',
      max_wal_senders: '10',
      synchronous_commit: 'on',
      wal_level: 'replica',
    });
    assert.match(primary.connectionString(), new RegExp(`^postgresql://postgres@127\\.0\\.0\\.1:${primary.port}/postgres$`));
  });

  it('generates load with pgbench and exposes finished WAL segments', async () => {
    await primary.pgbench(['-i', '-s', '1', '-q']);
    const out = await primary.pgbench(['-T', '2', '-c', '2']);
    assert.match(out, /number of transactions actually processed: [1-9]/);
    await assert.rejects(primary.pgbench(['-T', '1', '--no-such-option']), /no-such-option|unrecognized/);

    const before = await primary.currentWalLsn();
    await primary.switchWal();
    const current = await primary.currentWalFileName();
    assert.notEqual(await primary.currentWalLsn(), before);

    // Names sort in WAL order within a timeline; anything below the current
    // segment is finished (recycled future segments sort above it).
    const finished = fs
      .readdirSync(primary.walFilePath('.'))
      .filter((n) => /^[0-9A-F]{24}$/.test(n) && n < current)
      .sort();
    assert.ok(finished.length > 0, `no finished segment below ${current}`);
    const last = finished[finished.length - 1];
    const seg = await primary.readWalFile(last);
    assert.equal(seg.length, MiB);
    // Long page header of the first page: xlp_seg_size sits at byte 32.
    assert.equal(seg.readUInt32LE(32), MiB);
  });

  it('starts a streaming standby and promotes it', async () => {
    standby = await PgCluster.start({ standbyOf: primary });
    assert.equal(standby.major, 15);
    assert.notEqual(standby.port, primary.port);
    assert.equal(await standby.psql('SELECT pg_is_in_recovery()'), 't');
    assert.equal(await standby.isInRecovery(), true);

    await primary.query('CREATE TABLE harness_probe AS SELECT 42 AS v');
    const target = await primary.currentWalLsn();
    await waitFor(
      async () => (await standby!.query(`SELECT pg_last_wal_replay_lsn() >= '${target}'::pg_lsn AS ok`))[0].ok,
      { timeoutMs: 15_000, what: 'standby to replay the probe table' },
    );
    assert.deepEqual(await standby.query('SELECT v FROM harness_probe'), [{ v: 42 }]);

    await standby.promote();
    assert.equal(await standby.isInRecovery(), false);
    assert.equal(await standby.psql('SELECT pg_is_in_recovery()'), 'f');
  });

  it('stops, restarts and destroys idempotently', async () => {
    const c = await PgCluster.start({ settings: { work_mem: '8MB' }, hba: ['host all nobody 127.0.0.1/32 reject'] });
    try {
      assert.equal(await c.psql('SHOW work_mem'), '8MB');
      await assert.rejects(c.query('SELECT 1', { user: 'nobody' }), /rejects connection|pg_hba/);
      await c.restart('immediate');
      assert.equal(await c.psql('SELECT 1'), '1');
      await c.stop();
      await c.stop();
      assert.equal(fs.existsSync(c.dataDir), true);
    } finally {
      await c.destroy();
      await c.destroy();
    }
    assert.equal(fs.existsSync(c.baseDir), false);
  });
});

describe('PgCluster harness: other majors', () => {
  const majors = availableMajors().filter((m) => m !== 15);
  const clusters: PgCluster[] = [];

  after(async () => {
    await Promise.all(clusters.map((c) => c.destroy()));
  });

  it('lists the majors installed here', () => {
    assert.ok(availableMajors().includes(15));
  });

  for (const major of majors) {
    it(`starts PostgreSQL ${major}`, async () => {
      const c = await PgCluster.start({ major, walSegSizeMiB: 1 });
      clusters.push(c);
      const [{ v }] = await c.query(`SELECT current_setting('server_version_num')::int AS v`);
      assert.equal(Math.floor(v / 10000), major);
      assert.equal(c.walSegSize, MiB);
    });
  }

  // pg_basebackup 15 refuses newer servers, so their standbys come from a
  // low-level file copy instead: exercise that path on the newest one.
  const newest = Math.max(...majors);
  it(`starts a standby of PostgreSQL ${newest}`, { skip: !(newest > 15) }, async () => {
    const primary = clusters.find((c) => c.major === newest)!;
    const standby = await PgCluster.start({ standbyOf: primary });
    clusters.push(standby);
    assert.equal(await standby.isInRecovery(), true);
    await primary.query('CREATE TABLE probe AS SELECT 7 AS v');
    const target = await primary.currentWalLsn();
    await waitFor(
      async () => (await standby.query(`SELECT pg_last_wal_replay_lsn() >= '${target}'::pg_lsn AS ok`))[0].ok,
      { timeoutMs: 15_000, what: 'standby to replay the probe table' },
    );
    assert.deepEqual(await standby.query('SELECT v FROM probe'), [{ v: 7 }]);
  });
});

describe('tmpDir and waitFor', () => {
  it('makes traversable temp dirs and times out with the condition named', async () => {
    const d = tmpDir('walvault-harness');
    try {
      assert.equal(fs.statSync(d).mode & 0o777, 0o755);
    } finally {
      removeDir(d);
    }
    assert.equal(fs.existsSync(d), false);
    await assert.rejects(
      waitFor(() => false, { timeoutMs: 100, intervalMs: 10, what: 'nothing' }),
      /timed out after 100ms waiting for nothing/,
    );
    let n = 0;
    assert.equal(await waitFor(() => (++n >= 3 ? n : undefined), { timeoutMs: 1000, intervalMs: 1, what: 'n' }), 3);
  });
});
