/**
 * kill -9 of the receiver at random moments under load, each followed by a restart: the
 * archive must end up with every segment, byte-identical to the server's, and the ledger
 * must say exactly what the archive holds. Shared by the local and the object-store receiver suites.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { Ledger } from '../../src/ledger/ledger';
import { formatLsn, isSegmentFileName, segmentNumber } from '../../src/wal/lsn';
import { PgCluster, removeDir, tmpDir } from './pg-cluster';
import { mulberry32 } from './seeded-random';
import { assertArchiveMatchesServer, openArchive, pgConninfo, switchAndWaitArchived, WalvaultProcess, writeConfig } from './walvault';

/**
 * The seed of the kill delays: WALVAULT_TEST_SEED when set (an unsigned 32-bit integer),
 * otherwise a fresh one. To replay a failed run with the same delays, run the test again with
 * the seed it printed, e.g.
 *   WALVAULT_TEST_SEED=123456789 node --test dist/test/integration/crash-resume.test.js
 */
function killSeed(): number {
  const given = process.env.WALVAULT_TEST_SEED;
  if (given !== undefined && given !== '') {
    const n = Number(given);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`WALVAULT_TEST_SEED=${given}: not an unsigned 32-bit integer`);
    return n;
  }
  return Math.floor(Math.random() * 0x100000000);
}

/** `archiveFor(work)`: the archive location to use (a directory, or an s3:// or azure:// URL). */
export async function crashScenario(kills: number, archiveFor: (work: string) => string): Promise<void> {
  const seed = killSeed();
  // Printed before anything can fail (and again with the delays), so every failure can be replayed.
  console.log(`crash scenario: kill delays from seed ${seed} (replay with WALVAULT_TEST_SEED=${seed})`);
  const cluster = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '4096MB', max_wal_size: '4096MB' } });
  const work = tmpDir('walvault-crash-');
  try {
    await run(cluster, work, kills, archiveFor(work), seed);
  } catch (err) {
    // The failure itself names the seed: the log lines above may be far away from it.
    if (err instanceof Error) err.message += `\n(kill delays from seed ${seed}: replay with WALVAULT_TEST_SEED=${seed})`;
    throw err;
  } finally {
    await cluster.destroy();
    removeDir(work);
  }
}

async function run(cluster: PgCluster, work: string, kills: number, archive: string, seed: number): Promise<void> {
  const random = mulberry32(seed);
  const state = path.join(work, 'state');
  const config = writeConfig(work, {
    main: { pg: pgConninfo(cluster), archive, state, partial_interval_seconds: 1, status_interval_seconds: 1 },
  });
  await cluster.pgbench(['-i', '-s', '2', '-q']);
  const load = cluster.pgbenchProcess(['-c', '2', '-T', '600', '-n']);
  try {
    const killedAfterMs: number[] = [];
    for (let i = 0; i < kills; i++) {
      const p = WalvaultProcess.start(['run', '--config', config]);
      // Some kills land during start-up and reconciliation, most while streaming.
      const delay = Math.floor(random() * 2500);
      const after = i % 3 !== 0 ? 'after streaming started' : 'after spawn';
      console.log(`crash scenario (seed ${seed}): kill ${i + 1}/${kills} ${delay} ms ${after}`);
      if (i % 3 !== 0) await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      await new Promise((r) => setTimeout(r, delay));
      assert.ok(p.running, `receiver ${i} still running before its kill; stderr:\n${p.stderr.slice(-2000)}`);
      await p.kill9();
      killedAfterMs.push(delay);
    }
    console.log(`crash scenario (seed ${seed}): killed after ${killedAfterMs.join(', ')} ms`);
    const final = WalvaultProcess.start(['run', '--config', config]);
    await final.waitForLog((l) => l.msg === 'starting replication', 30000, 'final start');
    await new Promise((r) => setTimeout(r, 1500));
    load.kill('SIGINT');
    await new Promise((r) => load.once('exit', r));
    const { switchLsn, lastName } = await switchAndWaitArchived(cluster, archive);
    const segSize = cluster.walSegSize;
    const exit = await final.stop('SIGTERM');
    assert.equal(exit.code, 0, `clean exit; stderr:\n${final.stderr.slice(-2000)}`);

    const { names } = await assertArchiveMatchesServer(archive, cluster, work, lastName);

    // The ledger and the archive agree, object by object.
    const store = openArchive(archive);
    const ledger = Ledger.open(path.join(state, 'ledger.db'));
    try {
      const rows = ledger.allSegments('main');
      const archivedRows = rows.filter((r) => r.state === 'archived');
      const byName = new Map(archivedRows.map((r) => [r.name, r]));
      for (const name of names) {
        const row = byName.get(name);
        assert.ok(row, `ledger has an archived row for ${name}`);
        assert.equal(row.objectKey, `wal/${name}`);
        const data = await store.get(`wal/${name}`);
        assert.equal(createHash('sha256').update(data!).digest('hex'), row.sha256, `${name}: ledger checksum matches the object`);
      }
      for (const row of archivedRows) {
        assert.ok(names.includes(row.name), `archived row ${row.name} has its object`);
      }
      for (const row of rows.filter((r) => r.state !== 'archived')) {
        assert.ok(!names.includes(row.name), `${row.name} is ${row.state} in the ledger but in the archive`);
      }
      const site = ledger.getSite('main')!;
      const partials = (await store.listWal()).filter((n) => n.endsWith('.partial'));
      const noted = () => ledger.partials('main').map((p) => `${p.name} (${p.bytes} bytes)`).join(', ') || 'none';
      assert.ok(partials.length <= 1, `at most the newest partial remains: ${partials.join(', ')}; the ledger notes ${noted()}`);
      for (const p of partials) {
        assert.ok(isSegmentFileName(p.slice(0, 24)));
        assert.ok(p.slice(0, 24) > names[names.length - 1], `partial ${p} is past the last finished segment ${names[names.length - 1]}; the ledger notes ${noted()}`);
      }
      const endOfLast = (segmentNumber(switchLsn - 1n, segSize) + 1n) * BigInt(segSize);
      if (site.archivedLsn < endOfLast) {
        // Seen once on a loaded machine and not on replay: what the ledger and the receiver
        // held then, for the next time.
        const tail = rows.slice(-6).map((r) => `${r.name} ${r.state} ${r.objectKey ?? ''}`).join('; ');
        const said = final.lines.slice(-20).map((l) => JSON.stringify(l).slice(0, 300)).join('\n');
        assert.fail(`ledger archived position ${formatLsn(site.archivedLsn)} is short of ${formatLsn(endOfLast)}; last rows: ${tail}\n--- the last receiver's last lines ---\n${said}`);
      }
    } finally {
      ledger.close();
      await store.close();
    }
  } finally {
    if (load.exitCode === null) load.kill('SIGKILL');
  }
}
