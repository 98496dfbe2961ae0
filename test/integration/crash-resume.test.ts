/**
 * kill -9 of the receiver at random moments during a pgbench run, local archive (the runs
 * into object stores are in object-store-receiver.test.ts). The kill delays come from a
 * seeded PRNG; the seed and each delay are printed, and a failure names the seed: replay it with
 *   WALVAULT_TEST_SEED=<seed> node --test dist/test/integration/crash-resume.test.js
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { LEDGER_FILE } from '../../src/daemon/state-dir';
import { Ledger } from '../../src/ledger/ledger';
import { formatLsn, parseSegmentFileName, segmentStartOfNumber } from '../../src/wal/lsn';
import { crashScenario } from '../helpers/crash-scenario';
import { PgCluster, removeDir, tmpDir } from '../helpers/pg-cluster';
import { pgConninfo, switchAndWaitArchived, withReceiver, writeConfig } from '../helpers/walvault';

const KILLS = 12;

describe('crash safety: kill -9 during a pgbench run', () => {
  it(`loses nothing and duplicates nothing across ${KILLS} kills`, async () => {
    await crashScenario(KILLS, (work) => path.join(work, 'archive'));
  });
});

/**
 * A first start creates its ledger only once streaming works, and registers the site in it
 * with where streaming began. Killed in between (seen in the S3 crash scenario, seed
 * 3287267501: a kill 158 ms after streaming started), it leaves a ledger file without the
 * site; the next start registered it with no archived position, and none was ever recorded
 * (uploads only extend a known one), so the slot kept every segment. Each state such a kill
 * can leave, made directly: the empty file, and the file with its schema.
 */
describe('a first start killed after creating its ledger, before registering the site', () => {
  const leftBehind: Array<[string, (file: string) => void]> = [
    ['an empty ledger file', (file) => fs.writeFileSync(file, '', { mode: 0o600 })],
    ['a ledger with its schema and no site', (file) => Ledger.open(file).close()],
  ];
  for (const [what, make] of leftBehind) {
    it(`${what}: the next start records the archived position`, async () => {
      const cluster = await PgCluster.start({ walSegSizeMiB: 1 });
      const work = tmpDir('walvault-first-start-');
      try {
        const state = path.join(work, 'state');
        const archive = path.join(work, 'archive');
        fs.mkdirSync(state, { mode: 0o700 });
        make(path.join(state, LEDGER_FILE));
        const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state, partial_interval_seconds: 1, status_interval_seconds: 1 } });
        const lastName = await withReceiver(config, async () => {
          await cluster.pgbench(['-i', '-s', '1', '-q']);
          return (await switchAndWaitArchived(cluster, archive)).lastName;
        });
        const { segNo } = parseSegmentFileName(lastName, cluster.walSegSize);
        const end = segmentStartOfNumber(segNo + 1n, cluster.walSegSize);
        const ledger = Ledger.open(path.join(state, LEDGER_FILE));
        try {
          const archived = ledger.getSite('main')!.archivedLsn;
          assert.ok(archived >= end, `the ledger's archived position ${formatLsn(archived)} reaches the end of ${lastName} (${formatLsn(end)})`);
        } finally {
          ledger.close();
        }
      } finally {
        await cluster.destroy();
        removeDir(work);
      }
    });
  }
});
