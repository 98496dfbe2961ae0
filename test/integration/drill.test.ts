/**
 * `walvault drill` (issue 6, acceptance 4): on a healthy archive it restores the newest
 * backup, recovers it to the end of the archive as a throw-away standby, runs a query and
 * removes everything; on a broken archive it fails with the reason. PostgreSQL 15 and the
 * newest other major available.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DrillResult } from '../../src/check/drill';
import { parseLsn, parseSegmentFileName, segmentFileName, segmentStartOfNumber } from '../../src/wal/lsn';
import { availableMajors, binDirFor, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, pushBackup, runWalvault, switchAndWaitArchived, WalvaultProcess, withReceiver, writeConfig } from '../helpers/walvault';

function nextSegment(name: string, segSize: number): string {
  const { tli, segNo } = parseSegmentFileName(name, segSize);
  return segmentFileName(tli, segNo + 1n, segSize);
}

const others = availableMajors().filter((m) => m !== 15);
const majors = [15, ...others.slice(-1)];

for (const major of majors)
describe(`walvault drill (PostgreSQL ${major})`, () => {
  let cluster: PgCluster;
  let work = '';
  let archive = '';
  let lastSegment = '';
  let middleSegment = '';

  const drill = async (extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; result: DrillResult; stderr: string }> => {
    const r = await runWalvault(['drill', '--archive', archive, '--pg-bin', binDirFor(major), '--work-dir', work, '--json', ...extra], env, 300000);
    assert.ok(r.code === 0 || r.code === 1, `drill ran (exit ${r.code}): ${r.stderr.slice(-2000)}`);
    return { code: r.code, result: JSON.parse(r.stdout) as DrillResult, stderr: r.stderr };
  };

  before(async () => {
    cluster = await PgCluster.start({ major, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    work = tmpDir('walvault-drill-test-');
    archive = path.join(work, 'archive');
    const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1 } });
    await withReceiver(config, async () => {
      await cluster.pgbench(['-i', '-s', '1', '-q']);
      await pushBackup(['--config', config]);
      await cluster.pgbench(['-c', '2', '-t', '300', '-n']);
      const mid = await switchAndWaitArchived(cluster, archive, 1, 60000);
      middleSegment = mid.lastName;
      await cluster.query('CREATE TABLE drill_marker AS SELECT 42 AS answer');
      await cluster.pgbench(['-c', '2', '-t', '300', '-n']);
      lastSegment = (await switchAndWaitArchived(cluster, archive, 1, 60000)).lastName;
    });
  });

  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('succeeds on a healthy archive: recovered to its end, queried, removed, every phase timed', async () => {
    const { code, result } = await drill(['--query', 'SELECT answer FROM drill_marker']);
    assert.equal(code, 0, result.problem ?? '');
    assert.equal(result.ok, true);
    assert.equal(result.queryRows, 1, 'the marker written after the backup was recovered');
    assert.ok(result.recoveredTo && result.archiveEnd, JSON.stringify(result));
    const lastStart = segmentStartOfNumber(parseSegmentFileName(lastSegment, cluster.walSegSize).segNo, cluster.walSegSize);
    assert.ok(parseLsn(result.recoveredTo.lsn) >= lastStart, `recovered to ${result.recoveredTo.lsn}, into the last archived segment ${lastSegment}`);
    for (const p of ['restoreSeconds', 'startSeconds', 'recoverySeconds', 'querySeconds'] as const) assert.ok(typeof result.phases[p] === 'number', `${p} timed`);
    assert.ok(result.phases.totalSeconds >= result.phases.restoreSeconds!);
    assert.ok(!fs.existsSync(result.directory), 'the drill directory is removed');
  });

  it('the daemon runs drills on a schedule and exports the outcome as metrics', { skip: major !== 15 }, async () => {
    const dir = path.join(work, 'daemon');
    fs.mkdirSync(dir);
    const config = writeConfig(dir, {
      main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1, drill_interval_hours: 0.001, drill_pg_bin: binDirFor(major), drill_query: 'SELECT answer FROM drill_marker' },
    }, 'info');
    const daemon = WalvaultProcess.start(['run', '--config', config]);
    const metricsFile = path.join(work, 'state', 'metrics.prom');
    try {
      await daemon.waitForLog((l) => l.msg === 'restore drill succeeded' || /restore drill FAILED/.test(String(l.msg)), 180000, 'a scheduled drill');
      const line = daemon.lines.find((l) => /restore drill/.test(String(l.msg)) && l.msg !== 'scheduled restore drill starting');
      assert.equal(line?.msg, 'restore drill succeeded', JSON.stringify(line));
      await waitFor(() => /^walvault_drill_last_success\{site="main"\} 1$/m.test(fs.existsSync(metricsFile) ? fs.readFileSync(metricsFile, 'utf8') : ''), { timeoutMs: 10000, what: 'the drill metrics' });
      const text = fs.readFileSync(metricsFile, 'utf8');
      assert.match(text, /^walvault_drills_total\{site="main"\} [1-9]/m);
      assert.match(text, /^walvault_drill_failures_total\{site="main"\} 0$/m);
      assert.match(text, /^walvault_drill_last_duration_seconds\{site="main",phase="total"\} [0-9.]+$/m);
      assert.match(text, /^walvault_drill_last_recovered_lsn_bytes\{site="main"\} [1-9][0-9]*$/m);
    } finally {
      await daemon.stop('SIGTERM', 60000);
    }
  });

  for (const [which, pick] of [
    ['in the middle of a segment\'s records', () => middleSegment],
    // The segment before it ends with a WAL switch: replay reaches exactly the gap's start,
    // which is where check says recovery from the backup ends, so a drill aimed there passed.
    ['right after a WAL switch', () => nextSegment(middleSegment, cluster.walSegSize)],
  ] as const)
  it(`fails up front naming the gap when a segment the recovery needs is missing (${which})`, async () => {
    const missing = pick();
    const file = path.join(archive, 'wal', missing);
    const aside = `${file}.aside`;
    fs.renameSync(file, aside);
    try {
      const { code, result } = await drill([], { WALVAULT_DRILL_STALL_MS: '5000' });
      assert.equal(code, 1, JSON.stringify(result));
      assert.equal(result.ok, false);
      assert.match(result.problem ?? '', new RegExp(`the archive has a gap: recovery stops at [0-9A-F]+/[0-9A-F]+: ${missing} is missing, and WAL after it is archived; run "walvault check".*"walvault check --repair"`));
      assert.equal(result.phases.startSeconds, undefined, 'no server was started');
      assert.ok(!fs.existsSync(result.directory), 'removed after a failure too');
    } finally {
      fs.renameSync(aside, file);
    }
  });

  it('fails naming the object when a backup part is damaged', async () => {
    const backups = fs.readdirSync(path.join(archive, 'backups')).filter((n) => /^[0-9]{8}T/.test(n));
    const part = path.join(archive, 'backups', backups[0], 'parts', fs.readdirSync(path.join(archive, 'backups', backups[0], 'parts')).sort()[0]);
    const bytes = fs.readFileSync(part);
    bytes[bytes.length >> 1] ^= 1;
    fs.writeFileSync(part, bytes);
    try {
      const { code, result } = await drill();
      assert.equal(code, 1);
      assert.match(result.problem ?? '', new RegExp(path.basename(part).replace(/\./g, '\\.')));
      assert.equal(result.phases.startSeconds, undefined, 'no server was started');
    } finally {
      bytes[bytes.length >> 1] ^= 1;
      fs.writeFileSync(part, bytes);
    }
  });
});
