/**
 * wal-fetch --prefetch (issue 5, item 2): each call leaves a background prefetcher that keeps
 * the next segments ready in pg_wal/walvault-prefetch; a call whose segment is there is
 * served by a rename, without opening the archive (shown here by pointing the store's endpoint
 * at a closed port: the prefetched segment still arrives, a segment outside the window fails).
 * On S3 (s3rver) and on Azure Blob Storage (Azurite).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { stopPrefetcher } from '../../src/restore/prefetch';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore } from '../helpers/object-stores';
import { archivedSegments, pgConninfo, runWalvault, switchAndWaitArchived, WALVAULT_BIN, WalvaultProcess, writeConfig } from '../helpers/walvault';

/** Runs a restore_command line as PostgreSQL does: `sh -c` in the data directory. */
function runRestoreCommand(command: string, name: string, dataDir: string, env: NodeJS.ProcessEnv): Promise<number> {
  const line = command.replace(/%f/g, name).replace(/%p/g, 'pg_wal/RECOVERYXLOG');
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', line], { cwd: dataDir, env: { ...process.env, ...env } }, (err) => resolve(err ? Number((err as NodeJS.ErrnoException & { code: number }).code) : 0));
  });
}

/** Live processes whose command line mentions `needle`. */
function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    const cmd = (() => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      } catch {
        return '';
      }
    })();
    if (cmd.includes(needle)) pids.push(Number(p));
  }
  return pids;
}

for (const kind of OBJECT_STORES)
describe(`wal-fetch --prefetch (${kind.name})`, () => {
  let cluster: PgCluster;
  let store: ObjectStore;
  let work = '';
  let archive = '';

  before(async () => {
    work = tmpDir('walvault-prefetch-');
    store = await kind.start();
    cluster = await PgCluster.start({ walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
    archive = store.url(`${path.basename(work)}/main`);
    const config = writeConfig(work, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state'), status_interval_seconds: 1 } }, 'info');
    const receiver = WalvaultProcess.start(['run', '--config', config]);
    try {
      await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      await cluster.pgbench(['-i', '-s', '2', '-q']);
      await switchAndWaitArchived(cluster, archive, 1, 60000);
    } finally {
      await receiver.stop('SIGTERM', 30000);
    }
  });

  after(async () => {
    await cluster?.destroy();
    await store?.destroy();
    if (work) removeDir(work);
  });

  it('serves prefetched segments by rename, without the archive, and fetches the rest', async () => {
    const names = await archivedSegments(archive);
    assert.ok(names.length >= 6, `enough segments (${names.length})`);
    const walDir = path.join(work, 'pg_wal');
    fs.mkdirSync(walDir);
    const dest = path.join(walDir, 'RECOVERYXLOG');
    const prefetchDir = path.join(walDir, 'walvault-prefetch');
    const fetch = (name: string, env: NodeJS.ProcessEnv = {}) => runWalvault(['wal-fetch', '--archive', archive, '--prefetch', '3', name, dest], env, 60000);

    let r = await fetch(names[0]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(names[0])));
    await waitFor(() => [1, 2, 3].every((i) => fs.existsSync(path.join(prefetchDir, names[i]))), { timeoutMs: 20000, what: 'the next three segments to be prefetched' });

    // The store's variables with its endpoint at a closed port.
    const closed = store.env(9);
    r = await fetch(names[1], closed);
    assert.equal(r.code, 0, `served from the prefetch directory with the store unreachable: ${r.stderr}`);
    assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(names[1])), 'the prefetched bytes are the segment');
    assert.ok(!fs.existsSync(path.join(prefetchDir, names[1])), 'moved, not copied');
    r = await fetch(names[5], closed);
    assert.equal(r.code, 126, `outside the window it needs the store: ${r.stderr}`);

    // With the store back, later calls keep the window moving and drop what was consumed.
    r = await fetch(names[2]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(names[2])));
    await waitFor(() => [3, 4, 5].every((i) => fs.existsSync(path.join(prefetchDir, names[i]))), { timeoutMs: 20000, what: 'the window to move on' });
    const left = fs.readdirSync(prefetchDir).filter((n) => !n.startsWith('.'));
    assert.ok(left.every((n) => n > names[2]), `nothing at or before the last segment served is kept (${left.join(', ')})`);
  });

  it("restore's restore_command: the shell alone serves a prefetched segment; one prefetcher follows recovery, then cleans up and exits", async () => {
    const names = await archivedSegments(archive);
    assert.ok(names.length >= 8, `enough segments (${names.length})`);
    const dataDir = path.join(work, 'data2');
    fs.mkdirSync(path.join(dataDir, 'pg_wal'), { recursive: true });
    const dest = path.join(dataDir, 'pg_wal', 'RECOVERYXLOG');
    const prefetchDir = path.join(dataDir, 'pg_wal', 'walvault-prefetch');
    const shortcut = 'mv -f pg_wal/walvault-prefetch/%f %p 2>/dev/null';
    const command = `${shortcut} || ${process.execPath} ${WALVAULT_BIN} wal-fetch --archive ${archive} --prefetch 3 %f %p`;
    const env = { WALVAULT_PREFETCH_IDLE_MS: '4000' };

    assert.equal(await runRestoreCommand(command, names[0], dataDir, env), 0, 'a miss is fetched by wal-fetch');
    assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(names[0])));
    await waitFor(() => [1, 2, 3].every((i) => fs.existsSync(path.join(prefetchDir, names[i]))), { timeoutMs: 20000, what: 'the next three segments to be prefetched' });

    // Without any walvault to run, the shell part still serves what is prefetched...
    const shellOnly = `${shortcut} || /nonexistent/walvault wal-fetch %f %p`;
    for (const i of [1, 2, 3]) {
      assert.equal(await runRestoreCommand(shellOnly, names[i], dataDir, env), 0, `${names[i]} served by mv`);
      assert.ok(fs.readFileSync(dest).equals(await cluster.readWalFile(names[i])), `${names[i]}: the prefetched bytes are the segment`);
      // ...and the one prefetcher sees each one go and refills the window behind it.
      await waitFor(() => [1, 2, 3].every((k) => fs.existsSync(path.join(prefetchDir, names[i + k]))), { timeoutMs: 20000, what: `the window after ${names[i]}` });
    }
    assert.equal(processesWith(prefetchDir).length, 1, 'one prefetcher for the directory');
    assert.notEqual(await runRestoreCommand(shellOnly, names[7], dataDir, env), 0, 'outside the window the shell part alone cannot serve');

    // Idle: it removes what it prefetched and exits.
    await waitFor(() => processesWith(prefetchDir).length === 0, { timeoutMs: 30000, what: 'the idle prefetcher to exit' });
    const left = fs.readdirSync(prefetchDir).filter((n) => !n.startsWith('.'));
    assert.deepEqual(left, [], 'nothing left behind');
    assert.ok(!fs.existsSync(path.join(prefetchDir, '.prefetcher.pid')), 'its lock released');
  });
  it('the prefetcher ends with its recovery: when the server leaves recovery or stops, or when told to', async () => {
    const names = await archivedSegments(archive);
    // What each case takes away from a (stand-in) data directory whose server is recovering.
    const cases: Array<[string, (dataDir: string) => Promise<void>]> = [
      ['promoted', async (d) => fs.rmSync(path.join(d, 'recovery.signal'))],
      ['stopped', async (d) => fs.rmSync(path.join(d, 'postmaster.pid'))],
      ['stopPrefetcher', (d) => stopPrefetcher(d)],
    ];
    for (const [tag, end] of cases) {
      const dataDir = path.join(work, `data-${tag}`);
      fs.mkdirSync(path.join(dataDir, 'pg_wal'), { recursive: true });
      fs.writeFileSync(path.join(dataDir, 'postmaster.pid'), `${process.pid}\n`);
      fs.writeFileSync(path.join(dataDir, 'recovery.signal'), '');
      const prefetchDir = path.join(dataDir, 'pg_wal', 'walvault-prefetch');
      const command = `mv -f pg_wal/walvault-prefetch/%f %p 2>/dev/null || ${process.execPath} ${WALVAULT_BIN} wal-fetch --archive ${archive} --prefetch 3 %f %p`;
      // Idle exit far off: only the end of recovery can stop it within the wait below.
      assert.equal(await runRestoreCommand(command, names[0], dataDir, { WALVAULT_PREFETCH_IDLE_MS: '600000' }), 0);
      await waitFor(() => fs.existsSync(path.join(prefetchDir, names[1])), { timeoutMs: 20000, what: `${tag}: prefetching to start` });
      assert.equal(processesWith(prefetchDir).length, 1, `${tag}: a prefetcher runs`);
      await end(dataDir);
      if (tag === 'stopPrefetcher') {
        assert.equal(processesWith(prefetchDir).length, 0, 'stopPrefetcher returns once the prefetcher is gone');
      } else {
        await waitFor(() => processesWith(prefetchDir).length === 0, { timeoutMs: 10000, what: `${tag}: the prefetcher to exit` });
        assert.deepEqual(fs.readdirSync(prefetchDir).filter((n) => !n.startsWith('.')), [], `${tag}: its segments removed`);
      }
      removeDir(dataDir);
    }
  });
});
