/**
 * A receiver that refuses to start leaves nothing on the server: every refusal comes before it
 * creates its replication slot, and a slot it created in a run that ended before streaming is
 * dropped again (an inactive slot holds WAL on the server forever).
 *
 * Real PostgreSQL 15 servers and the real CLI. After each refusal pg_replication_slots must
 * hold exactly the slots it held before.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { archivedSegments, pgConninfo, runWalvault, switchAndWaitArchived, WalvaultProcess, writeConfig, type SiteSettings } from '../helpers/walvault';

let main: PgCluster;
let other: PgCluster;
let work: string;

before(async () => {
  work = tmpDir('walvault-refusals-');
  // wal_keep_size 0 and small WAL limits: without a slot the server removes old segments soon.
  [main, other] = await Promise.all([
    PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: 0, min_wal_size: '2MB', max_wal_size: '4MB' } }),
    // wal_level logical: one test needs a logical slot there.
    PgCluster.start({ walSegSizeMiB: 1, settings: { wal_level: 'logical' } }),
  ]);
});
after(async () => {
  await Promise.all([main?.destroy(), other?.destroy()]);
  if (work) removeDir(work);
});

async function slotNames(cluster: PgCluster): Promise<string[]> {
  return (await cluster.query('SELECT slot_name FROM pg_replication_slots ORDER BY slot_name')).map((r) => String(r.slot_name));
}

function site(cluster: PgCluster, dir: string, archive: string, slot: string, extra: Partial<SiteSettings> = {}): SiteSettings {
  return { pg: pgConninfo(cluster), archive, state: path.join(dir, 'state'), slot, status_interval_seconds: 1, ...extra };
}

/** Runs `walvault run` expecting a refusal: exit 2, one line matching `cause`, and no slot left behind on `cluster`. */
async function expectRefusal(cluster: PgCluster, dir: string, settings: SiteSettings, cause: RegExp, name = 'refused'): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const slotsBefore = await slotNames(cluster);
  const r = await runWalvault(['run', '--config', writeConfig(dir, { [name]: settings }, 'warn')], {}, 60000);
  assert.equal(r.code, 2, `walvault must refuse: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0], cause);
  assert.deepEqual(await slotNames(cluster), slotsBefore, `no slot left behind (${settings.slot})`);
  return lines[0];
}

/** Streams `cluster` into `archive` with its own state until a segment is archived, then stops cleanly. */
async function archiveOnce(cluster: PgCluster, dir: string, archive: string, slot: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const config = writeConfig(dir, { first: site(cluster, dir, archive, slot) });
  const p = WalvaultProcess.start(['run', '--config', config]);
  try {
    await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await cluster.query('CREATE TABLE IF NOT EXISTS filler AS SELECT generate_series(1, 1000) AS n');
    await switchAndWaitArchived(cluster, archive);
  } finally {
    assert.equal((await p.stop()).code, 0, p.stderr);
  }
}

describe('start-up refusals leave no replication slot behind', { timeout: 600_000 }, () => {
  // What a test leaves (the holder's slot; a slot a refusal failed to drop) would hold WAL
  // that a later test needs the server to remove.
  afterEach(async () => {
    for (const c of [main, other]) await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active');
  });
  it('an archive held by another receiver: refused before the slot, on a first run and with state', async () => {
    const dir = path.join(work, 'held');
    const archive = path.join(dir, 'archive');
    fs.mkdirSync(dir, { recursive: true });
    const holder = WalvaultProcess.start(['run', '--config', writeConfig(dir, { holder: site(main, path.join(dir, 'a'), archive, 'held_a') })]);
    try {
      await holder.waitForLog((l) => l.msg === 'starting replication', 30000, 'the first receiver to stream');
      const second = site(main, path.join(dir, 'b'), archive, 'held_b');
      await expectRefusal(main, path.join(dir, 'b'), second, /has another writer: walvault pid \d+/);
      assert.equal(fs.existsSync(second.state), false, 'the refused first run created no state');

      // The same with a state directory of its own from an earlier run on another archive.
      const c = path.join(dir, 'c');
      await archiveOnce(main, c, path.join(c, 'own-archive'), 'held_c');
      await main.query(`SELECT pg_drop_replication_slot('held_c')`);
      await expectRefusal(main, c, site(main, c, archive, 'held_c'), /has another writer/);
    } finally {
      assert.equal((await holder.stop()).code, 0, holder.stderr);
    }
  });

  it("another cluster's archive and another cluster's state", async () => {
    const dir = path.join(work, 'foreign');
    const archive = path.join(dir, 'archive-main');
    await archiveOnce(main, path.join(dir, 'main'), archive, 'foreign_main');
    await main.query(`SELECT pg_drop_replication_slot('foreign_main')`);
    // The other cluster at main's archive, on a first run.
    await expectRefusal(other, path.join(dir, 'o1'), site(other, path.join(dir, 'o1'), archive, 'foreign_o1'), /belongs to database system/);
    // The other cluster with main's state directory (and an archive of its own).
    const state = path.join(dir, 'main', 'state');
    await expectRefusal(other, path.join(dir, 'o2'), { ...site(other, path.join(dir, 'o2'), path.join(dir, 'o2', 'archive'), 'foreign_o2'), state }, /state directory .* holds site first of database system/, 'first');
  });

  it('a state directory that cannot be used, and a missing slot with create_slot = false', async () => {
    const dir = path.join(work, 'misc');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'afile'), 'not a directory\n');
    await expectRefusal(main, path.join(dir, 'u'), { ...site(main, path.join(dir, 'u'), path.join(dir, 'u', 'archive'), 'misc_u'), state: path.join(dir, 'afile', 'state') }, /not a directory/);
    await expectRefusal(main, path.join(dir, 'n'), site(main, path.join(dir, 'n'), path.join(dir, 'n', 'archive'), 'misc_n', { create_slot: false }), /replication slot "misc_n" does not exist/);
  });

  it("a logical slot under the site's slot name is refused by its type, not taken for lost WAL", async () => {
    const dir = path.join(work, 'logical');
    await other.query(`SELECT pg_create_logical_replication_slot('logical_named', 'test_decoding')`);
    // START_REPLICATION would refuse it with 55000, the SQLSTATE of an invalidated slot.
    const line = await expectRefusal(other, dir, site(other, dir, path.join(dir, 'archive'), 'logical_named'), /replication slot "logical_named" on .* is a logical slot/);
    assert.match(line, /give this site a slot name of its own/);
    assert.doesNotMatch(line, /no longer has the WAL/);
  });

  it('a slot created for a start the server then refuses (its WAL already removed) is dropped again', async () => {
    const dir = path.join(work, 'removed');
    const archive = path.join(dir, 'archive');
    await archiveOnce(main, path.join(dir, 'first'), archive, 'removed_first');
    await main.query(`SELECT pg_drop_replication_slot('removed_first')`);
    const newest = (await archivedSegments(archive)).pop()!;
    // Without a slot the server removes the segment after the archive's newest one.
    const after = newest.slice(0, 16) + (parseInt(newest.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0');
    await waitFor(
      async () => {
        await main.query('INSERT INTO filler SELECT generate_series(1, 1000)');
        await main.switchWal();
        await main.query('CHECKPOINT');
        return !fs.existsSync(main.walFilePath(after));
      },
      { timeoutMs: 60000, what: `the server to remove ${after}` },
    );
    // A fresh state directory resumes after the archive's newest segment, which the server no
    // longer has: the slot is created, START_REPLICATION refused, and the slot must go again.
    const line = await expectRefusal(main, path.join(dir, 'second'), site(main, path.join(dir, 'second'), archive, 'removed_second'), /cannot continue at/);
    assert.match(line, /has already been removed|removed/);
  });
});
