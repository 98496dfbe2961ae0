/**
 * Who can read the WAL on the backup host. The state directory and spool hold plaintext WAL
 * (with encryption on too): 0700 and 0600, as PostgreSQL keeps pg_wal, SQLite's -wal/-shm and
 * the metrics file included. A local archive is its owner's alone unless the operator sets
 * archive_file_mode; with "0640" and the documented setgid group directory, the postgres user
 * running restore_command reads it. Existing looser directories are named at start-up.
 *
 * Real PostgreSQL 15 (its server and wal-fetch run as the postgres OS user when we are root).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PgCluster, removeDir, serverUser, tmpDir } from '../helpers/pg-cluster';
import { pgConninfo, switchAndWaitArchived, WALVAULT_BIN, WalvaultProcess, writeConfig, type SiteSettings } from '../helpers/walvault';

let cluster: PgCluster;
let work: string;
before(async () => {
  work = tmpDir('walvault-perms-');
  cluster = await PgCluster.start({ walSegSizeMiB: 1 });
});
after(async () => {
  await cluster?.destroy();
  if (work) removeDir(work);
});

function mode(p: string): number {
  return fs.statSync(p).mode & 0o7777;
}

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => !e.isDirectory()).map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

function dirsUnder(dir: string): string[] {
  return [dir, ...fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))];
}

/** `walvault wal-fetch` as the server's OS user, as restore_command runs it. */
async function walFetchAsServer(archive: string, name: string, destDir: string): Promise<{ code: number | null; stderr: string }> {
  const user = serverUser()!;
  fs.mkdirSync(destDir, { recursive: true });
  fs.chownSync(destDir, user.uid, user.gid);
  const child = spawn(process.execPath, [WALVAULT_BIN, 'wal-fetch', '--archive', archive, name, path.join(destDir, name)], { uid: user.uid, gid: user.gid, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  return { code, stderr };
}

/** Streams with `extra` settings until a segment is archived; `check` runs while the receiver is up. */
async function runSite(tag: string, extra: Partial<SiteSettings>, check: (p: WalvaultProcess, state: string, archive: string) => Promise<void>): Promise<string> {
  const dir = path.join(work, tag);
  fs.mkdirSync(dir, { recursive: true });
  const state = path.join(dir, 'state');
  const archive = path.join(dir, 'archive');
  const config = writeConfig(dir, { [tag]: { pg: pgConninfo(cluster), archive, state, slot: tag, status_interval_seconds: 1, partial_interval_seconds: 1, ...extra } }, 'info');
  const p = WalvaultProcess.start(['run', '--config', config]);
  let lastName: string;
  try {
    await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    await cluster.query(`CREATE TABLE t_${tag} AS SELECT g, md5(g::text) AS t FROM generate_series(1, 20000) g`);
    ({ lastName } = await switchAndWaitArchived(cluster, archive));
    await cluster.query(`INSERT INTO t_${tag} SELECT g, md5(g::text) FROM generate_series(1, 100) g`);
    await check(p, state, archive);
  } finally {
    assert.equal((await p.stop()).code, 0, p.stderr.slice(-3000));
  }
  return lastName;
}

describe('file permissions on the backup host', () => {
  it('state, spool, ledger (-wal, -shm), metrics and a local archive are the owner\'s alone by default', async () => {
    let archiveDir = '';
    const lastName = await runSite('owner', { archive_file_mode: '0600' }, async (p, state, archive) => {
      archiveDir = archive;
      const ledger = path.join(state, 'ledger.db');
      // Written every status interval: wait for the first one.
      const metrics = path.join(state, 'metrics.prom');
      for (let i = 0; i < 100 && !fs.existsSync(metrics); i++) await new Promise((r) => setTimeout(r, 100));
      for (const f of [ledger, `${ledger}-wal`, `${ledger}-shm`, metrics]) assert.equal(mode(f), 0o600, `${f} is 0${mode(f).toString(8)}`);
      for (const d of [state, path.join(state, 'spool')]) assert.equal(mode(d), 0o700, `${d} is 0${mode(d).toString(8)}`);
      const spoolFiles = filesUnder(path.join(state, 'spool'));
      assert.ok(spoolFiles.some((f) => f.endsWith('.partial')), `a segment is being received: ${spoolFiles.join(' ')}`);
      for (const f of spoolFiles) assert.equal(mode(f), 0o600, `${f} is 0${mode(f).toString(8)}`);
      for (const d of dirsUnder(archive)) assert.equal(mode(d), 0o700, `${d} is 0${mode(d).toString(8)}`);
      const objects = filesUnder(archive);
      assert.ok(objects.some((f) => path.basename(f) === 'cluster.json') && objects.some((f) => f.includes(`${path.sep}wal${path.sep}`)));
      // Segments come in by hard link from the spool (same filesystem) or are written: 0600 either way.
      assert.ok(objects.some((f) => fs.statSync(f).nlink > 1 || /^[0-9A-F]{24}$/.test(path.basename(f))));
      for (const f of objects) assert.equal(mode(f), 0o600, `${f} is 0${mode(f).toString(8)}`);
      assert.equal(p.lines.filter((l) => /has mode 0/.test(String(l.msg))).length, 0, 'no warning about fresh directories');
    });
    if (serverUser()) {
      const r = await walFetchAsServer(archiveDir, lastName, path.join(work, 'owner-fetch'));
      assert.notEqual(r.code, 0, 'another OS user cannot read the archive');
      assert.match(r.stderr, /EACCES.*may not read the archive: .*archive_file_mode says "0640"/);
      assert.equal(fs.existsSync(path.join(work, 'owner-fetch', lastName)), false);
    }
  });

  it('archive_file_mode "0640" with a setgid group directory: the postgres user restores from it', { skip: !serverUser() && 'the servers run as this user: no other user to share with' }, async () => {
    const user = serverUser()!;
    let archiveDir = '';
    // writeConfig sets the archive up as the runbook says: chgrp postgres, chmod 2750, and "0640".
    const lastName = await runSite('group', {}, async (_p, state, archive) => {
      archiveDir = archive;
      assert.equal(mode(path.join(state, 'spool')), 0o700, 'the spool stays private whatever the archive allows');
      for (const d of dirsUnder(archive)) {
        assert.equal(mode(d), 0o2750, `${d} is 0${mode(d).toString(8)}`);
        assert.equal(fs.statSync(d).gid, user.gid, d);
      }
      for (const f of filesUnder(archive)) {
        assert.equal(mode(f), 0o640, `${f} is 0${mode(f).toString(8)}`);
        assert.equal(fs.statSync(f).gid, user.gid, `${f} belongs to the archive's group`);
      }
    });
    const r = await walFetchAsServer(archiveDir, lastName, path.join(work, 'group-fetch'));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(path.join(work, 'group-fetch', lastName)).equals(await cluster.readWalFile(lastName)), 'the fetched segment is the server\'s');
  });

  it('a start names existing state, spool and archive directories that are looser', async () => {
    const dir = path.join(work, 'loose');
    for (const d of ['state/spool', 'archive/wal']) fs.mkdirSync(path.join(dir, d), { recursive: true, mode: 0o755 });
    for (const d of ['state', 'state/spool', 'archive', 'archive/wal']) fs.chmodSync(path.join(dir, d), 0o755);
    await runSite('loose', { archive_file_mode: '0600' }, async (p) => {
      const warned = (re: RegExp) => p.lines.some((l) => l.level === 40 && re.test(String(l.msg)));
      assert.ok(warned(new RegExp(`^state directory ${path.join(dir, 'state')} has mode 0755: other users can read the WAL in it; chmod 700`)), p.stderr.slice(-3000));
      assert.ok(warned(new RegExp(`^spool directory ${path.join(dir, 'state', 'spool')} has mode 0755`)));
      assert.ok(warned(new RegExp(`^archive directory ${path.join(dir, 'archive')} has mode 0755, looser than the 0700`)));
      assert.ok(warned(new RegExp(`^archive directory ${path.join(dir, 'archive', 'wal')} has mode 0755`)));
      // Warned, not changed: the operator decides.
      assert.equal(mode(path.join(dir, 'state')), 0o755);
      // New files are private all the same.
      for (const f of filesUnder(path.join(dir, 'state', 'spool'))) assert.equal(mode(f), 0o600, f);
    });
  });
});
