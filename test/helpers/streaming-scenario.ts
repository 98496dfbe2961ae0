/**
 * The end-to-end streaming check shared by the per-version tests: receive under pgbench load,
 * then prove every archived segment fetched through `walvault wal-fetch` equals the
 * server's own pg_wal file, with no gap, and (for PostgreSQL 15, whose pg_waldump we have)
 * that pg_waldump reads them from first to last.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { ObjectStore } from './object-stores';
import { chownForServer, clientBin, PgCluster, removeDir, tmpDir, waldumpReads } from './pg-cluster';
import { assertArchiveMatchesServer, pgConninfo, switchAndWaitArchived, WalvaultProcess, writeConfig } from './walvault';

const run = promisify(execFile);

/** A self-signed certificate and key the server can read, as server settings. */
function serverTlsSettings(): { dir: string; settings: Record<string, string> } {
  const dir = tmpDir('walvault-tls-');
  const key = path.join(dir, 'server.key');
  const cert = path.join(dir, 'server.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'], {
    stdio: 'ignore',
  });
  fs.chmodSync(key, 0o600); // the server refuses a key others can read
  chownForServer(dir);
  return { dir, settings: { ssl: 'on', ssl_cert_file: cert, ssl_key_file: key } };
}

export async function streamingScenario(opts: {
  major: number;
  walSegSizeMiB: number;
  scale?: number;
  seconds?: number;
  /** Stream over TLS (sslmode=require), where pg parses the stream instead of the CopyDataTap. */
  tls?: boolean;
  /** Archive into this object store (found through the environment) instead of a directory. */
  store?: ObjectStore;
}): Promise<void> {
  const tls = opts.tls ? serverTlsSettings() : null;
  const cluster = await PgCluster.start({
    major: opts.major,
    walSegSizeMiB: opts.walSegSizeMiB,
    // Keep every segment on the server so each archived one can be compared with it.
    settings: { wal_keep_size: '4096MB', max_wal_size: '4096MB', ...(tls?.settings ?? {}) },
  });
  const work = tmpDir('walvault-stream-');
  let receiver: WalvaultProcess | null = null;
  try {
    const archive = opts.store ? opts.store.url(`${path.basename(work)}/main`) : path.join(work, 'archive');
    const config = writeConfig(work, {
      main: {
        pg: pgConninfo(cluster) + (tls ? ' sslmode=require' : ''),
        archive,
        state: path.join(work, 'state'),
        partial_interval_seconds: 1,
        status_interval_seconds: 1,
      },
    });
    receiver = WalvaultProcess.start(['run', '--config', config]);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    const started = receiver.lines.find((l) => typeof l.serverVersion === 'number');
    assert.ok(started, 'a start-up line names the server version');
    assert.equal(Math.floor(Number(started.serverVersion) / 10000), opts.major);
    // Written as people write it ("15.18"), as the server's own server_version begins.
    const [{ server_version: version }] = await cluster.query('SHOW server_version');
    assert.match(String(started.msg), new RegExp(`^PostgreSQL ${String(version).split(' ')[0].replace(/\./g, '\\.')}, system `));

    if (tls) {
      const rows = await cluster.query(
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name LIKE 'walvault%'",
      );
      assert.deepEqual(rows.map((r) => r.ssl), [true], 'the replication connection uses TLS');
    }

    await cluster.pgbench(['-i', '-s', String(opts.scale ?? 2), '-q']);
    await cluster.pgbench(['-c', '2', '-T', String(opts.seconds ?? 3), '-n']);
    const { lastName } = await switchAndWaitArchived(cluster, archive);

    const exit = await receiver.stop('SIGTERM');
    assert.equal(exit.code, 0, `walvault exits 0 on SIGTERM; stderr:\n${receiver.stderr.slice(-2000)}`);

    const { names, fetchedDir } = await assertArchiveMatchesServer(archive, cluster, work, lastName);
    assert.ok(names.length >= 3, `several segments archived (${names.length})`);

    if (waldumpReads(opts.major)) {
      const { stdout } = await run(clientBin('pg_waldump'), ['-p', fetchedDir, names[0], lastName], {
        maxBuffer: 1 << 30,
      });
      assert.match(stdout, /rmgr: /, 'pg_waldump printed records');
    }
  } finally {
    if (receiver?.running) await receiver.kill9();
    await cluster.destroy();
    removeDir(work);
    if (tls) removeDir(tls.dir);
  }
}
