/**
 * Issue 18, item 5: the small archive an earlier walvault wrote (fixtures/archive-small: zstd
 * WAL across a promotion, a history file, partials on both timelines, one server-compressed
 * backup) still checks clean and verifies, and its backup restores with today's walvault: a
 * PostgreSQL 15 server started on it replays through the timeline switch and the last
 * .partial and holds exactly the rows the generator wrote.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CheckReport } from '../../src/check/archive-check';
import { SMALL_ARCHIVE, SMALL_ARCHIVE_INFO, SMALL_TABLE, smallTableRows, type SmallArchiveInfo } from '../helpers/archive-fixtures';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { runWalvault } from '../helpers/walvault';

/** Readable by everyone: restore_command runs `walvault wal-fetch` as the server's OS user. */
function openUp(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) openUp(p);
    else fs.chmodSync(p, 0o644);
  }
}

describe('fixtures/archive-small, written by an earlier walvault, checks and restores (PostgreSQL 15)', () => {
  const info = JSON.parse(fs.readFileSync(SMALL_ARCHIVE_INFO, 'utf8')) as SmallArchiveInfo;
  let work = '';
  let archive = '';
  let restored: PgCluster | undefined;

  before(() => {
    work = tmpDir('walvault-fixture-restore-');
    // A copy: nothing should write into the fixture, and the copy's modes are ours to set.
    archive = path.join(work, 'archive');
    fs.cpSync(SMALL_ARCHIVE, archive, { recursive: true });
    openUp(archive);
  });

  after(async () => {
    await restored?.destroy();
    if (work) removeDir(work);
  });

  it('check reports its backup restorable, and verify finds every object good', async () => {
    const r = await runWalvault(['check', '--archive', archive, '--json'], {}, 60000);
    assert.equal(r.code, 0, `check: ${r.stderr}${r.stdout}`);
    const report = JSON.parse(r.stdout) as CheckReport;
    assert.equal(report.ok, true, report.problems.join('; '));
    assert.equal(report.timeline, 2, 'the archive crosses to timeline 2');
    const b = report.backups.find((x) => x.name === info.backup);
    assert.ok(b, `backup ${info.backup} is listed`);
    assert.equal(b.restorable, true);
    assert.equal(b.recoveryTimeline, 2);

    const v = await runWalvault(['verify', '--archive', archive], {}, 60000);
    assert.equal(v.code, 0, `verify: ${v.stderr}${v.stdout}`);
    assert.match(v.stdout, new RegExp(`${info.objects.length} objects.*all good`));
  });

  it('restore, then PostgreSQL recovers through the timeline switch and the last .partial to the known rows', async () => {
    const target = path.join(work, 'restored');
    const r = await runWalvault(['restore', '--archive', archive, target], {}, 120000);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stdout, new RegExp(`restored backup ${info.backup} `));
    restored = await PgCluster.start({ dataDir: target });
    const server = restored;
    await waitFor(async () => (await server.query('SELECT pg_is_in_recovery() AS r'))[0].r === false, {
      timeoutMs: 60000,
      what: 'recovery from the fixture archive to end and the server to promote',
    });
    const rows = await restored.query(`SELECT id, note FROM ${SMALL_TABLE} ORDER BY id`);
    assert.deepEqual(
      rows.map((x: { id: number; note: string }) => ({ id: x.id, note: x.note })),
      smallTableRows(),
    );
    const tli = Number((await restored.query('SELECT timeline_id FROM pg_control_checkpoint()'))[0].timeline_id);
    assert.ok(tli >= 2, `recovered onto timeline 2 and promoted past it (timeline ${tli})`);
  });
});
