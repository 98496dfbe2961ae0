/**
 * Stopping for good (issue 17, item 7): `walvault run` warns once at start when the server
 * has no max_slot_wal_keep_size; `walvault slot drop` is refused while the site's receiver
 * runs, is a dry run without --confirm, and removes the slot with it.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgCluster, removeDir, tmpDir } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, WalvaultProcess } from '../helpers/walvault';

describe('walvault slot drop (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let work = '';
  const slotExists = async () => (await cluster.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'walvault_default'")).length === 1;

  before(async () => {
    cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1 });
    work = tmpDir('walvault-slot-drop-');
  });
  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('warns at start about an unbounded slot, refuses while the receiver runs, and drops only with --confirm', async () => {
    const site = ['--pg', pgConninfo(cluster), '--state', path.join(work, 'state')];
    const daemon = WalvaultProcess.start(['run', ...site, '--archive', path.join(work, 'archive')]);
    try {
      await daemon.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      await cluster.query('SELECT pg_switch_wal()');
      await daemon.waitForLog((l) => l.setting === 'max_slot_wal_keep_size', 60000, 'the warning about max_slot_wal_keep_size');
      const warnings = daemon.lines.filter((l) => l.setting === 'max_slot_wal_keep_size');
      assert.equal(warnings.length, 1);
      assert.equal(warnings[0].level, 40);
      assert.match(String(warnings[0].msg), /ALTER SYSTEM SET max_slot_wal_keep_size = '\d+GB'; SELECT pg_reload_conf\(\);/);

      const busy = await runWalvault(['slot', 'drop', ...site, '--confirm'], {}, 30000);
      assert.equal(busy.code, 2);
      assert.match(busy.stderr, new RegExp(`walvault \\(pid ${daemon.child.pid}\\) is running for this site .*stop it first`));
      assert.equal(await slotExists(), true, 'a refused drop leaves the slot');
    } finally {
      await daemon.stop('SIGINT', 30000);
    }

    const dry = await runWalvault(['slot', 'drop', ...site], {}, 30000);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^would drop slot walvault_default on .* \(it keeps the server's WAL from [0-9A-F]+\/[0-9A-F]+ on: \d+ MiB\)$/m);
    assert.match(dry.stdout, /nothing was dropped; run again with --confirm/);
    assert.equal(await slotExists(), true, 'a dry run leaves the slot');

    const dropped = await runWalvault(['slot', 'drop', ...site, '--confirm'], {}, 30000);
    assert.equal(dropped.code, 0, dropped.stderr);
    assert.match(dropped.stdout, /^dropped slot walvault_default on .*: the server no longer keeps WAL for walvault/m);
    assert.equal(await slotExists(), false);

    const again = await runWalvault(['slot', 'drop', ...site, '--confirm'], {}, 30000);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /slot walvault_default does not exist on .*: nothing to drop/);

    const mixed = await runWalvault(['slot', 'drop', '--config', path.join(work, 'x.toml'), '--state', path.join(work, 'state')], {}, 30000);
    assert.equal(mixed.code, 2);
    assert.match(mixed.stderr, /either --config or the one-site options/);
  });
});
