/**
 * The README's quick start is a contract: its first command must stream from a server into a
 * local archive, and its second must be the command CI runs.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { archivedSegments, WALVAULT_BIN, WalvaultProcess } from '../helpers/walvault';

const ROOT = path.resolve(path.dirname(WALVAULT_BIN), '..');

function quickStartCommands(): string[] {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Quick start'));
  assert.ok(section, 'README has a Quick start section');
  return [...section.matchAll(/```sh\n([^`]+?)\n```/g)].map((m) => m[1].trim());
}

/** Splits a shell word list (double quotes only, as the README uses). */
function words(cmd: string): string[] {
  return [...cmd.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
}

describe('README quick start', () => {
  let cluster: PgCluster;
  let work: string;
  before(async () => {
    cluster = await PgCluster.start({ walSegSizeMiB: 1 });
    work = tmpDir('walvault-readme-');
  });
  after(async () => {
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('gives exactly two commands, the second being what .ci/run calls', () => {
    const cmds = quickStartCommands();
    assert.equal(cmds.length, 2);
    assert.equal(cmds[1], 'npm test');
    const ci = fs.readFileSync(path.join(ROOT, '.ci', 'run'), 'utf8');
    assert.match(ci, /^npm test$/m, '.ci/run calls the README test command');
    assert.match(cmds[0], /^npm ci && \.\/bin\/walvault run /);
  });

  it('what the first command writes inside the clone is ignored by git', () => {
    const argv = words(quickStartCommands()[0]);
    const ignored = fs.readFileSync(path.join(ROOT, '.gitignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const option of ['--archive', '--state']) {
      const dir = argv[argv.indexOf(option) + 1];
      assert.ok(dir, `the quick start passes ${option}`);
      if (path.isAbsolute(dir) || dir.startsWith('..')) continue; // outside the clone
      const entry = `/${path.normalize(dir).replace(/\/$/, '')}/`;
      assert.ok(ignored.includes(entry), `.gitignore lists ${entry}, which the quick start's ${option} writes in the clone`);
    }
  });

  it('the first command, under pgbench load, streams, takes a first complete backup with no ERROR line, and stops cleanly on Ctrl-C', async () => {
    const cmd = quickStartCommands()[0].replace(/^npm ci && /, '');
    const argv = words(cmd);
    assert.equal(argv[0], './bin/walvault');
    // Point the README's connection string at the test server; everything else as written.
    const pgIndex = argv.indexOf('--pg') + 1;
    assert.match(argv[pgIndex], /host=\S+ port=\d+ user=\S+/);
    argv[pgIndex] = argv[pgIndex].replace(/host=\S+/, `host=${cluster.host}`).replace(/port=\d+/, `port=${cluster.port}`);
    const args = argv.slice(1);
    await cluster.pgbench(['-i', '-s', '5', '-q']);
    const p = WalvaultProcess.start(args, {}, work);
    let load: ReturnType<PgCluster['pgbenchProcess']> | null = null;
    try {
      await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      // Issue 17: a new user under load gets a first complete backup by itself, and no ERROR.
      load = cluster.pgbenchProcess(['-c', '2', '-T', '300', '-n']);
      await p.waitForLog((l) => l.msg === 'scheduled base backup starting', 60000, 'the first scheduled backup');
      await p.waitForLog((l) => l.msg === 'base backup complete', 240000, 'the first backup to complete');
      assert.ok(p.lines.some((l) => l.msg === "waiting for the server's immediate checkpoint before the backup streams"), 'the quick start asks for a fast first backup');
      load.kill('SIGINT');
      await cluster.query('CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g');
      await cluster.switchWal();
      const archive = path.join(work, 'archive');
      await waitFor(async () => fs.existsSync(path.join(archive, 'wal')) && (await archivedSegments(archive)).length > 0, {
        timeoutMs: 30000,
        what: 'a segment in ./archive',
      });
      assert.ok(fs.existsSync(path.join(archive, 'cluster.json')));
      assert.ok(fs.existsSync(path.join(work, 'state', 'ledger.db')));
      const exit = await p.stop('SIGINT');
      assert.equal(exit.code, 0, p.stderr.slice(-2000));
      const errors = p.lines.filter((l) => (l.level ?? 0) >= 50);
      assert.deepEqual(errors, [], 'no ERROR line in the quick start');
      // A stopped daemon must not look healthy to textfile monitoring, and says where it stopped.
      const metrics = fs.readFileSync(path.join(work, 'state', 'metrics.prom'), 'utf8');
      assert.match(metrics, /^walvault_streaming(\{[^}]*\})? 0$/m);
      const stopped = p.lines.find((l) => /^stopped: received up to /.test(String(l.msg)));
      assert.ok(stopped, 'a line says where the site stopped');
      assert.match(String(stopped.msg), /received up to [0-9A-F]+\/[0-9A-F]+, archived up to [0-9A-F]+\/[0-9A-F]+; slot \S+ on .* now keeps the server's WAL from [0-9A-F]+\/[0-9A-F]+ on/);
      const slotRow = async () => (await cluster.query(`SELECT active FROM pg_replication_slots WHERE slot_name = '${String(stopped.slot)}'`))[0];
      await waitFor(async () => (await slotRow())?.active === false, { timeoutMs: 10000, what: 'the slot to stay on the server, inactive' });
    } finally {
      load?.kill('SIGKILL');
      await p.kill9();
    }
  });
});
