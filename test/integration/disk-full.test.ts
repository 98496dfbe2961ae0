/**
 * A full disk under the state directory is an operator error, not a crash: the receiver says so
 * in one line naming the directory, keeps its replication connection and reports nothing it
 * does not hold, goes on by itself once there is room, and a restart on a disk that is still
 * full archives what the spool holds (the ledger cannot even be opened then) before anything
 * else. Every segment ends up in the archive byte-identical to the server's pg_wal.
 *
 * Real parts: a 16 MiB tmpfs holds the state directory; the local archive lives on a tmpfs of
 * its own that is remounted read-only to make the archive unwritable (root ignores directory
 * permissions). Needs mount(2): where it is not permitted the test skips, saying why.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import {
  archivedCoverage,
  assertArchiveMatchesServer,
  listenHttp,
  parseLsn,
  pgConninfo,
  runWalvault,
  switchAndWaitArchived,
  WalvaultProcess,
  writeConfig,
} from '../helpers/walvault';

const STATE_FS_MIB = 16;
const APP = 'walvault_full';

let cluster: PgCluster;
let work: string;
let stateMount: string;
let archiveMount: string;
const mounted: string[] = [];
let cannotMount: string | null = null;

function mount(dir: string, sizeMiB: number): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'tmpfs', dir], { stdio: 'pipe' });
  mounted.push(dir);
}

/** Remounts the archive's filesystem; a put in flight makes a read-only remount busy for a moment. */
async function remountArchive(mode: 'ro' | 'rw'): Promise<void> {
  await waitFor(
    () => {
      execFileSync('mount', ['-o', `remount,${mode}`, archiveMount], { stdio: 'pipe' });
      return true;
    },
    { timeoutMs: 30000, intervalMs: 100, what: `the archive filesystem to remount ${mode}` },
  );
}

before(async () => {
  work = tmpDir('walvault-full-');
  stateMount = path.join(work, 'state-fs');
  archiveMount = path.join(work, 'archive-fs');
  try {
    mount(stateMount, STATE_FS_MIB);
    mount(archiveMount, 512);
  } catch (err) {
    cannotMount = `mounting a tmpfs is not permitted here (${((err as { stderr?: Buffer }).stderr ?? '').toString().trim() || (err as Error).message}); a full disk needs a small real filesystem`;
    return;
  }
  cluster = await PgCluster.start({
    walSegSizeMiB: 1,
    // pg_wal keeps every segment for the byte comparison; a short wal_sender_timeout shows that
    // the connection is kept alive while the spool waits for room, not merely not yet dropped.
    settings: { wal_keep_size: '2GB', max_wal_size: '2GB', wal_sender_timeout: '5s' },
  });
});

after(async () => {
  await cluster?.destroy();
  for (const dir of mounted.reverse()) {
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
    } catch {
      /* reported by removeDir below if it matters */
    }
  }
  if (work) removeDir(work);
});

let table = 0;
/** Writes about 1-2 MiB of WAL and ends the segment. */
async function writeWal(): Promise<void> {
  const t = `fill_${table++}`;
  await cluster.query(`CREATE TABLE ${t} AS SELECT g, md5(g::text) || md5((g * 7)::text) AS pad FROM generate_series(1, 12000) g`);
  await cluster.switchWal();
}

/** Our walsender's pid and flush position, or null while it is not streaming. */
async function walsender(): Promise<{ pid: number; flush: bigint | null } | null> {
  const rows = await cluster.query(`SELECT pid, flush_lsn::text AS flush FROM pg_stat_replication WHERE application_name = '${APP}' AND state = 'streaming'`);
  if (rows.length === 0) return null;
  return { pid: Number(rows[0].pid), flush: rows[0].flush ? parseLsn(rows[0].flush) : null };
}

function spoolFiles(state: string): string[] {
  return fs.readdirSync(path.join(state, 'spool')).filter((n) => /^[0-9A-F]{24}$/.test(n));
}

function freeBytes(dir: string): number {
  const st = fs.statfsSync(dir);
  return st.bavail * st.bsize;
}

/**
 * Writes WAL until the state filesystem is full and the receiver has met it (its line is
 * logged at most once a minute, so later spells are told by the filesystem alone).
 */
async function fillUntilFull(p: WalvaultProcess, needLine: boolean): Promise<void> {
  await waitFor(
    async () => {
      if (!p.running) throw new Error(`walvault exited: ${p.stderr.slice(-3000)}`);
      if (freeBytes(stateMount) < 64 * 1024 && (!needLine || p.lines.some((l) => l.code === 'STATE_DISK_FULL'))) return true;
      await writeWal();
      return false;
    },
    { timeoutMs: 180000, intervalMs: 200, what: 'the state directory to fill up' },
  );
}

/** Ends the segment and waits until the archive holds all WAL up to there without a gap. */
async function archivedWithoutGap(archive: string): Promise<string> {
  const { switchLsn, lastName } = await switchAndWaitArchived(cluster, archive, 1, 180000);
  await waitFor(async () => ((await archivedCoverage(archive, cluster.walSegSize)) ?? 0n) >= switchLsn, {
    timeoutMs: 180000,
    intervalMs: 200,
    what: `the archive to hold everything up to ${lastName} without a gap`,
  });
  return lastName;
}

/** Fills what room is left on the state filesystem, as other files on a shared disk would. */
function fillRemainingRoom(): string {
  const filler = path.join(stateMount, 'filler');
  const block = Buffer.alloc(4096, 0x55);
  const fd = fs.openSync(filler, 'a');
  try {
    for (;;) fs.writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    fs.closeSync(fd);
  }
  return filler;
}

describe('a full disk under the state directory', { timeout: 900_000 }, () => {
  it('waits with its connection, goes on once there is room, and a restart on a full disk drains the spool', async (t) => {
    if (cannotMount) {
      t.skip(cannotMount);
      return;
    }
    const state = path.join(stateMount, 'state');
    const archive = path.join(archiveMount, 'archive');
    const config = writeConfig(work, {
      full: { pg: pgConninfo(cluster), archive, state, slot: 'full', application_name: APP, status_interval_seconds: 1 },
    }, 'info');
    // /health and /metrics: the metrics file cannot be written on a full disk, the listener answers.
    const port = await freePort();
    listenHttp(config, port);

    let p = WalvaultProcess.start(['run', '--config', config]);
    try {
      await p.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      await writeWal();
      await switchAndWaitArchived(cluster, archive);
      const sender = await waitFor(async () => (await walsender()) ?? false, { timeoutMs: 30000, what: 'the walsender to stream' });

      // 1. The archive becomes unwritable; the spool fills the state filesystem.
      await remountArchive('ro');
      await fillUntilFull(p, true);
      const line = p.lines.find((l) => l.code === 'STATE_DISK_FULL')!;
      assert.match(String(line.msg), new RegExp(`^state directory ${state} is full: .*free space on its filesystem`));
      // Still up, on the same connection, well past wal_sender_timeout, and nothing reported
      // as flushed that the archive does not hold.
      const heldSince = Date.now();
      while (Date.now() - heldSince < 15000) {
        assert.ok(p.running, `walvault stays up: ${p.stderr.slice(-3000)}`);
        const now = await walsender();
        assert.equal(now?.pid, sender.pid, 'the same replication connection streams on');
        const covered = (await archivedCoverage(archive, cluster.walSegSize)) ?? 0n;
        assert.ok(now!.flush !== null && now!.flush <= covered, `flush ${now!.flush} is not past the archive's end ${covered}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.equal(p.lines.filter((l) => /SqliteError|internal error/.test(JSON.stringify(l))).length, 0, 'no SqliteError escapes');
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(health.status, 503);
      assert.match(await health.text(), new RegExp(`state directory ${state} has been full for \\d+ s`));
      assert.match(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), /^walvault_state_disk_full\{site="full"\} 1$/m);

      // 2. The archive works again: uploads empty the spool, the writer goes on by itself.
      await remountArchive('rw');
      await p.waitForLog((l) => typeof l.msg === 'string' && l.msg.includes('has room again'), 120000, 'the state directory to have room again');
      await writeWal();
      const lastName = await archivedWithoutGap(archive);
      assert.equal((await walsender())?.pid, sender.pid, 'the connection was kept throughout');
      await assertArchiveMatchesServer(archive, cluster, path.join(work, 'cmp-1'), lastName);

      // 3. Full again, then a clean stop: the spool keeps what the archive did not take.
      await remountArchive('ro');
      await fillUntilFull(p, false);
      const stopped = await p.stop('SIGTERM', 120000);
      assert.equal(stopped.code, 0, `a clean stop on a full disk: ${p.stderr.slice(-3000)}`);
      assert.ok(spoolFiles(state).length > 0, 'the spool holds segments the archive does not');
    } finally {
      if (p.running) await p.kill9();
    }

    // 4. A start with the disk full and the archive still unwritable stops with one line.
    const filler = fillRemainingRoom();
    const refused = await runWalvault(['run', '--config', config], {}, 120000);
    assert.equal(refused.code, 2, refused.stderr);
    const errorLines = refused.stderr.trim().split('\n').filter((l) => l.startsWith('walvault:'));
    assert.equal(errorLines.length, 1, refused.stderr);
    assert.match(errorLines[0], new RegExp(`^walvault: state directory ${state} is full: `));
    // The cause, why making room failed, and the fix, whatever their order on the line.
    assert.match(errorLines[0], /archiving the spool to make room failed too: .*EROFS/);
    assert.match(errorLines[0], /free space on its filesystem/);

    /**
     * A start on a full state disk with the archive writable: the spool is drained to make
     * room, streaming starts, and once `fillerFile` goes every segment is archived as the
     * server has it.
     */
    const startDrainingSpool = async (fillerFile: string, cmp: string): Promise<WalvaultProcess> => {
      const proc = WalvaultProcess.start(['run', '--config', config]);
      try {
        await proc.waitForLog((l) => typeof l.msg === 'string' && /is full: archived \d+ spool files to make room/.test(l.msg), 120000, 'the spool to be drained at start-up');
        await proc.waitForLog((l) => l.msg === 'starting replication', 120000, 'streaming to start after the drain');
        fs.rmSync(fillerFile);
        await writeWal();
        await assertArchiveMatchesServer(archive, cluster, path.join(work, cmp), await archivedWithoutGap(archive));
        return proc;
      } catch (err) {
        if (proc.running) await proc.kill9();
        throw err;
      }
    };

    // 5. A restart with the disk still full and the archive back drains the spool first.
    await remountArchive('rw');
    p = await startDrainingSpool(filler, 'cmp-2');
    try {
      // 6. Full once more, and this time the receiver dies (kill -9): the ledger's -wal and
      // -shm stay, and its writes fail instead of its opening. The restart drains again.
      await remountArchive('ro');
      await fillUntilFull(p, true);
      await p.kill9();
    } finally {
      if (p.running) await p.kill9();
    }
    const filler2 = fillRemainingRoom();
    await remountArchive('rw');
    p = await startDrainingSpool(filler2, 'cmp-3');
    try {
      await waitFor(() => spoolFiles(state).length === 0, { timeoutMs: 60000, what: 'the spool to be empty' });
    } finally {
      assert.equal((await p.stop('SIGTERM', 120000)).code, 0, p.stderr.slice(-3000));
      if (process.env.DISKFULL_DEBUG) fs.writeFileSync(process.env.DISKFULL_DEBUG, p.stderr);
    }
  });
});
