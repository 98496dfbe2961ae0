/**
 * Acceptance: following a promotion.
 *
 * The receiver streams from a standby; the standby is promoted; the receiver follows to
 * timeline 2, archives 00000002.history and the old timeline's last segment as .partial, and
 * the archive on the new timeline matches the server's files.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  formatLsn,
  isSegmentFileName,
  parseLsn,
  parseSegmentFileName,
  segmentFileName,
  segmentNumber,
  segmentOffset,
  type Lsn,
} from '../../src/wal/lsn';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import {
  archivedSegments,
  compareFetchedWithServer,
  missingSegments,
  openArchive,
  pgConninfo,
  WalvaultProcess,
  writeConfig,
  type Exit,
} from '../helpers/walvault';

// Every segment must stay on both servers so each archived one can be compared with the
// server's own file; the harness writes each cluster's settings from its own options, so the
// standby needs them passed too.
const SETTINGS = { wal_keep_size: '1024MB', max_wal_size: '1024MB' };
const TL1_PARTIAL = /^00000001[0-9A-F]{16}\.partial$/;

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function bySegNo(segSize: number) {
  return (a: string, b: string): number => {
    const x = parseSegmentFileName(a, segSize).segNo;
    const y = parseSegmentFileName(b, segSize).segNo;
    return x < y ? -1 : x > y ? 1 : 0;
  };
}

for (const kind of [undefined, ...OBJECT_STORES])
describe(`following a promotion of the standby the receiver streams from (PostgreSQL ${DEFAULT_MAJOR}, ${kind?.name ?? 'local directory'})`, () => {
  let store: ObjectStore | undefined;
  let primary: PgCluster | undefined;
  let standby: PgCluster | undefined;
  let receiver: WalvaultProcess | undefined;
  let work = '';
  let archiveDir = '';
  let segSize = 0;
  let switchpoint: Lsn = 0n;
  let switchSegNo = 0n;
  let tl2SwitchLsn: Lsn = 0n;
  let runningBeforeStop = false;
  let exit: Exit | undefined;

  const stderrTail = (): string => `\n--- walvault stderr (tail) ---\n${(receiver?.stderr ?? '').slice(-4000)}`;
  // The tail must be taken when the wait fails, not when it starts.
  const withTail = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (err) {
      (err as Error).message += stderrTail();
      throw err;
    }
  };

  before(async () => {
    primary = await PgCluster.start({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, settings: SETTINGS });
    standby = await PgCluster.start({ standbyOf: primary, settings: SETTINGS });
    segSize = standby.walSegSize;
    work = tmpDir('walvault-promotion-');
    if (kind) {
      store = await kind.start();
      archiveDir = store.url(`${path.basename(work)}/main`);
    } else {
      archiveDir = path.join(work, 'archive');
    }
    const config = writeConfig(work, {
      main: {
        pg: pgConninfo(standby),
        archive: archiveDir,
        state: path.join(work, 'state'),
        partial_interval_seconds: 1,
        status_interval_seconds: 1,
      },
    });
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');

    await primary.pgbench(['-i', '-s', '1', '-q']);
    await primary.pgbench(['-c', '2', '-T', '2', '-n']);
    const tl1SwitchWal = parseLsn(await primary.switchWal());
    const lastFullTl1 = segmentFileName(1, segmentNumber(tl1SwitchWal - 1n, segSize), segSize);
    await withTail(
      waitFor(async () => (await archivedSegments(archiveDir)).includes(lastFullTl1), {
        timeoutMs: 30000,
        what: `segment ${lastFullTl1} to reach the archive through the standby`,
      }),
    );

    // WAL after the switch but short of a segment: timeline 1 then ends inside a segment,
    // which is the case that needs a .partial.
    await primary.query(`CREATE TABLE after_switch AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 1000) g`);
    const primaryEnd = parseLsn((await primary.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
    // Replayed, not just received: promotion ends timeline 1 at the end of replayed WAL.
    await waitFor(
      async () => parseLsn((await standby!.query(`SELECT pg_last_wal_replay_lsn()::text AS l`))[0].l) >= primaryEnd,
      { timeoutMs: 20000, what: `standby to replay up to ${formatLsn(primaryEnd)}` },
    );

    await standby.promote();
    await receiver.waitForLog((l) => /timeline 1 ended/.test(String(l.msg)), 30000, 'the receiver to see timeline 1 end');

    // The pgbench tables came over from the primary by replication.
    await standby.pgbench(['-c', '2', '-T', '2', '-n']);
    tl2SwitchLsn = parseLsn(await standby.switchWal());
    const lastFullTl2 = segmentFileName(2, segmentNumber(tl2SwitchLsn - 1n, segSize), segSize);
    await withTail(
      waitFor(async () => (await archivedSegments(archiveDir)).includes(lastFullTl2), {
        timeoutMs: 30000,
        what: `timeline 2 segment ${lastFullTl2} to be archived`,
      }),
    );

    const history = (await standby.readWalFile('00000002.history')).toString('utf8');
    const line = history.split('\n').find((l) => l.startsWith('1\t'));
    assert.ok(line, `00000002.history names where timeline 1 ended:\n${history}`);
    switchpoint = parseLsn(line.split('\t')[1]);
    switchSegNo = segmentNumber(switchpoint, segSize);

    runningBeforeStop = receiver.running;
    exit = await receiver.stop('SIGTERM');
  });

  after(async () => {
    if (receiver?.running) await receiver.kill9();
    await standby?.destroy();
    await primary?.destroy();
    await store?.destroy();
    if (work) removeDir(work);
  });

  it('followed the switch without exiting or failing, and exits 0 on SIGTERM', () => {
    assert.ok(
      receiver!.lines.some((l) => /timeline 1 ended/.test(String(l.msg))),
      `a log line reports the end of timeline 1${stderrTail()}`,
    );
    assert.ok(
      receiver!.lines.some((l) => l.msg === 'archived timeline history file' && l.file === '00000002.history'),
      `a log line reports archiving 00000002.history${stderrTail()}`,
    );
    assert.ok(
      receiver!.lines.some((l) => l.msg === 'starting replication' && l.timeline === 2),
      `replication restarted on timeline 2${stderrTail()}`,
    );
    assert.equal(runningBeforeStop, true, `walvault was still running after the promotion${stderrTail()}`);
    // Following a switch is a protocol step, not a failure: a reconnect or error here means
    // the switch was handled by the retry path instead.
    const errors = receiver!.lines.filter((l) => typeof l.level === 'number' && l.level >= 50);
    assert.deepEqual(errors, [], `no error was logged${stderrTail()}`);
    assert.equal(exit?.code, 0, `walvault exits 0 on SIGTERM (exit ${JSON.stringify(exit)})${stderrTail()}`);
  });

  it('archived 00000002.history byte for byte', async () => {
    const archived = await openArchive(archiveDir).get('wal/00000002.history');
    assert.ok(archived, `wal/00000002.history is in the archive${stderrTail()}`);
    const server = await standby!.readWalFile('00000002.history');
    assert.ok(archived.equals(server), `archived history equals the server's:\n${archived.toString()}\nvs\n${server.toString()}`);
  });

  it("archived timeline 1's last segment once, as a .partial holding the server's bytes up to the switch point", async () => {
    assert.ok(segmentOffset(switchpoint, segSize) > 0, `the scenario ends timeline 1 inside a segment (${formatLsn(switchpoint)})`);
    const names = await openArchive(archiveDir).listWal();
    const partials = names.filter((n) => TL1_PARTIAL.test(n));
    const expected = `${segmentFileName(1, switchSegNo, segSize)}.partial`;
    assert.deepEqual(partials, [expected], `one timeline 1 .partial, for the segment holding ${formatLsn(switchpoint)}${stderrTail()}`);

    const data = await openArchive(archiveDir).get(`wal/${expected}`);
    assert.ok(data);
    const offset = segmentOffset(switchpoint, segSize);
    assert.ok(data.length >= offset, `the .partial (${data.length} bytes) reaches the switch point's offset ${offset}`);
    assert.ok(data.length <= segSize, `the .partial (${data.length} bytes) is not longer than a segment`);

    // PostgreSQL renames the old timeline's last segment to .partial only when it archives; look
    // for both. The primary's copy of the same segment serves when the standby has neither:
    // every byte the standby had came from it.
    const base = segmentFileName(1, switchSegNo, segSize);
    const candidates = [standby!.walFilePath(base), standby!.walFilePath(`${base}.partial`), primary!.walFilePath(base)];
    const source = candidates.find((f) => fs.existsSync(f));
    assert.ok(source, `a server still holds ${base} (looked at ${candidates.join(', ')})`);
    const server = fs.readFileSync(source);
    const diff = firstDifference(data, server.subarray(0, data.length));
    assert.equal(diff, -1, `the .partial equals the first ${data.length} bytes of ${source} (first difference at ${diff})`);
  });

  it('archived the timeline 1 segments below the switch complete, without a gap, equal to the server files', async () => {
    const names = (await archivedSegments(archiveDir)).filter((n) => parseSegmentFileName(n, segSize).tli === 1).sort(bySegNo(segSize));
    assert.ok(names.length >= 2, `several timeline 1 segments archived (${names.join(', ')})`);
    assert.deepEqual(missingSegments(names, segSize, 1), [], 'no gap on timeline 1');
    const last = parseSegmentFileName(names[names.length - 1], segSize).segNo;
    assert.equal(last, switchSegNo - 1n, `timeline 1 complete segments end right below the switch segment (${names.join(', ')})`);

    const onStandby = names.filter((n) => fs.existsSync(standby!.walFilePath(n)));
    const onPrimaryOnly = names.filter((n) => !onStandby.includes(n));
    const a = await compareFetchedWithServer(archiveDir, standby!, onStandby, path.join(work, 'cmp-tl1-standby'));
    const b = await compareFetchedWithServer(archiveDir, primary!, onPrimaryOnly, path.join(work, 'cmp-tl1-primary'));
    assert.deepEqual([...a.fetchFailed, ...b.fetchFailed], [], 'every timeline 1 segment can be fetched');
    assert.deepEqual([...a.differ, ...b.differ], [], 'every timeline 1 segment equals the server file');
    assert.equal(a.compared + b.compared, names.length, 'every timeline 1 segment was compared with a server file');
  });

  it('archived timeline 2 from the switch segment on, without a gap, equal to the promoted server files', async () => {
    const names = (await archivedSegments(archiveDir)).filter((n) => parseSegmentFileName(n, segSize).tli === 2).sort(bySegNo(segSize));
    assert.ok(names.length >= 1, `timeline 2 segments archived${stderrTail()}`);
    assert.equal(parseSegmentFileName(names[0], segSize).segNo, switchSegNo, `timeline 2 starts at the switch segment (${names.join(', ')})`);
    assert.deepEqual(missingSegments(names, segSize, 2), [], 'no gap on timeline 2');
    const last = parseSegmentFileName(names[names.length - 1], segSize).segNo;
    assert.ok(last >= segmentNumber(tl2SwitchLsn - 1n, segSize), `timeline 2 reaches the pg_switch_wal at ${formatLsn(tl2SwitchLsn)}`);
    assert.ok(
      (await openArchive(archiveDir).listWal()).every((n) => !isSegmentFileName(n) || parseSegmentFileName(n, segSize).tli <= 2),
      'nothing on a timeline past 2',
    );

    const r = await compareFetchedWithServer(archiveDir, standby!, names, path.join(work, 'cmp-tl2'));
    assert.deepEqual(r.fetchFailed, [], 'every timeline 2 segment can be fetched');
    assert.deepEqual(r.differ, [], 'every timeline 2 segment equals the promoted server file');
    assert.equal(r.compared, names.length, 'every timeline 2 segment was compared with the promoted server file');
  });
});
