/**
 * Acceptance test for the two acknowledgement modes (docs/replication-protocol.md, section 5).
 *
 * archive: the flush position we report becomes the slot's restart_lsn, so it must never run
 *   ahead of what the archive really holds, or the server may recycle WAL we do not have.
 * sync: named in synchronous_standby_names with synchronous_commit=on, the receiver releases
 *   commits; each released commit must already be in the spool, and the release must come
 *   from the data path, not from the status timer.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import type { Archive } from '../../src/archive/archive';
import { PLAIN_HEADER_LENGTH } from '../../src/archive/envelope';
import { segmentFileName, segmentNumber, segmentStart, type Lsn } from '../../src/wal/lsn';
import { DEFAULT_MAJOR, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES, type ObjectStore, type ObjectStoreKind } from '../helpers/object-stores';
import { TcpGate } from '../helpers/tcp-gate';
import {
  archivedCoverage,
  formatLsn,
  openArchive,
  parseLsn,
  withArchive,
  getPartial,
  pgConninfo,
  WalvaultProcess,
  writeConfig,
} from '../helpers/walvault';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function connect(cluster: PgCluster): Promise<Client> {
  const c = new Client(cluster.clientConfig());
  // The cluster is destroyed under these clients in `after`: an unhandled 'error' would crash the run.
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

async function endClient(c: Client | null): Promise<void> {
  // end() can wait forever on a backend stuck in a sync-rep wait; the cluster stop ends it anyway.
  if (c) await withTimeout(c.end(), 2000, 'client end').catch(() => undefined);
}

function startLsnOf(receiver: WalvaultProcess): Lsn {
  const line = receiver.lines.find((l) => l.msg === 'starting replication' && typeof l.start === 'string');
  assert.ok(line, 'the receiver logs where streaming starts');
  return parseLsn(line.start as string);
}

/**
 * The archive as the receiver sees it, with a switch that takes it away and gives it back,
 * and the same archive as the test reads it (always reachable, so coverage stays measurable
 * during the outage).
 */
interface SwitchableArchive {
  /** What the receiver is configured with. */
  receiverArchive: string;
  /** Environment for the receiver process. */
  receiverEnv: NodeJS.ProcessEnv;
  /** What the test reads coverage from. */
  readerArchive: string;
  takeAway(): Promise<void>;
  giveBack(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Local: the receiver reaches the archive through a symlink, swapped atomically to a regular
 * file (every write then fails) and back, while the test reads the real directory.
 */
function localSwitchable(work: string): SwitchableArchive {
  const archiveDir = path.join(work, 'archive');
  const archiveLink = path.join(work, 'archive-link');
  const notADir = path.join(work, 'not-a-directory');
  fs.mkdirSync(archiveDir);
  fs.writeFileSync(notADir, 'the archive is unavailable\n');
  const pointArchiveAt = (target: string): void => {
    const tmp = `${archiveLink}.new`;
    fs.symlinkSync(target, tmp);
    fs.renameSync(tmp, archiveLink);
  };
  pointArchiveAt(archiveDir);
  return {
    receiverArchive: archiveLink,
    receiverEnv: {},
    readerArchive: archiveDir,
    takeAway: async () => pointArchiveAt(notADir),
    giveBack: async () => pointArchiveAt(archiveDir),
    close: async () => undefined,
  };
}

/**
 * An object store: the receiver talks to it through a TCP gate that the test shuts
 * (connections reset, new ones refused) and opens again; the test talks to it directly.
 */
async function storeSwitchable(kind: ObjectStoreKind, work: string): Promise<SwitchableArchive> {
  const store = await kind.start();
  const gate = await TcpGate.open(store.port);
  const url = store.url(`${path.basename(work)}/main`);
  return {
    receiverArchive: url,
    receiverEnv: store.env(gate.port),
    readerArchive: url,
    takeAway: () => gate.shut(),
    giveBack: () => gate.openGate(),
    close: async () => {
      await gate.shut();
      await store.destroy();
    },
  };
}

describe(`acknowledgement modes (PostgreSQL ${DEFAULT_MAJOR}, 1 MiB segments)`, () => {
  for (const kind of [undefined, ...OBJECT_STORES])
  describe(`mode = archive (${kind?.name ?? 'local directory'})`, () => {
    let cluster: PgCluster | null = null;
    let work = '';
    let receiver: WalvaultProcess | null = null;
    let observer: Client | null = null;
    let storage: SwitchableArchive | null = null;

    before(async () => {
      cluster = await PgCluster.start({ walSegSizeMiB: 1 });
      work = tmpDir('walvault-ack-archive-');
      storage = kind ? await storeSwitchable(kind, work) : localSwitchable(work);
    });

    after(async () => {
      await receiver?.stop('SIGTERM', 30000);
      await endClient(observer);
      await cluster?.destroy();
      await storage?.close();
      if (work) removeDir(work);
    });

    it("never lets the slot's restart_lsn pass the archived position, and still advances it", async (t) => {
      const pg = cluster!;
      const segSize = pg.walSegSize;
      const seg = BigInt(segSize);
      const slot = 'walvault_ack_archive';
      const switchable = storage!;
      const archiveDir = switchable.readerArchive;
      const config = writeConfig(work, {
        main: {
          pg: pgConninfo(pg),
          archive: switchable.receiverArchive,
          state: path.join(work, 'state'),
          slot,
          mode: 'archive',
          partial_interval_seconds: 1,
          status_interval_seconds: 1,
        },
      });
      receiver = WalvaultProcess.start(['run', '--config', config], switchable.receiverEnv);
      await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
      const startLsn = startLsnOf(receiver);
      observer = await connect(pg);
      const obs = observer;

      const slotState = async (): Promise<{ restart: Lsn | null; written: Lsn | null }> => {
        const r = await obs.query(
          `SELECT s.restart_lsn::text AS restart, w.write_lsn::text AS written
             FROM pg_replication_slots s LEFT JOIN pg_stat_replication w ON w.pid = s.active_pid
            WHERE s.slot_name = $1`,
          [slot],
        );
        assert.equal(r.rows.length, 1, `slot ${slot} exists`);
        const lsn = (v: string | null) => (v === null ? null : parseLsn(v));
        return { restart: lsn(r.rows[0].restart), written: lsn(r.rows[0].written) };
      };
      // archivedCoverage counts from the first complete segment; before one exists, the
      // archive's only WAL is the partial of the segment streaming started in.
      const coverage = async (): Promise<Lsn | null> => {
        const c = await archivedCoverage(archiveDir, segSize, 1);
        if (c !== null) return c;
        const first = segmentFileName(1, segmentNumber(startLsn, segSize), segSize);
        const data = await withArchive(archiveDir, (a) => getPartial(a, `wal/${first}.partial`));
        return data ? segmentStart(startLsn, segSize) + BigInt(data.length) : null;
      };

      // Before the first upload the archive holds nothing to compare with; from then on it must.
      await waitFor(async () => (await coverage()) !== null, { timeoutMs: 15000, what: 'the first partial to be archived' });

      interface Sample {
        atMs: number;
        restart: Lsn | null;
        written: Lsn | null;
        coverage: Lsn | null;
      }
      const samples: Sample[] = [];
      const violations: string[] = [];
      const t0 = Date.now();
      const sampleOnce = async (): Promise<void> => {
        // restart_lsn first, coverage second: coverage only grows, so a later reading still
        // bounds what was archived at the moment restart_lsn was read.
        const { restart, written } = await slotState();
        let cov = await coverage();
        // Listing and reading are not atomic: a segment finishing in between deletes the
        // partial the listing named and the sum comes out short. Re-reading (ms later) fixes that.
        for (let i = 0; i < 3 && restart !== null && (cov === null || restart > cov); i++) cov = await coverage();
        const s = { atMs: Date.now() - t0, restart, written, coverage: cov };
        samples.push(s);
        if (restart === null) violations.push(`${s.atMs} ms: slot has no restart_lsn (it would protect no WAL)`);
        else if (cov === null || restart > cov) {
          violations.push(
            `${s.atMs} ms: restart_lsn ${formatLsn(restart)} > archived coverage ${cov === null ? 'none' : formatLsn(cov)}`,
          );
        }
      };
      let sampling = true;
      let samplerError: unknown = null;
      const sampler = (async () => {
        while (sampling) {
          await sampleOnce();
          await sleep(200);
        }
      })().catch((err) => {
        samplerError = err;
      });

      // How many samples and how much WAL a fixed time gives depends on the machine (a loaded
      // 2-core host samples far less often): the load and the outage last until enough
      // samples were taken, not a fixed time.
      const MIN_SAMPLES = 40;
      const waitForSamples = (n: number, what: string): Promise<boolean> =>
        waitFor(() => samplerError !== null || samples.length >= n, { timeoutMs: 180000, intervalMs: 100, what: `${n} samples (${what})` });
      /** The largest lead of the receiver's written position over the archive in samples[from, to). */
      const leadIn = (from: number, to = samples.length): bigint =>
        samples
          .slice(from, to)
          .map((s) => (s.written !== null && s.coverage !== null ? s.written - s.coverage : 0n))
          .reduce((a, b) => (a > b ? a : b), 0n);

      const outageSamples: [number, number] = [0, 0];
      try {
        await pg.pgbench(['-i', '-s', '1', '-q']);
        // Runs until stopped below, once enough samples were taken during it.
        const load = pg.pgbenchProcess(['-c', '2', '-T', '600', '-n']);
        const loadExit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
          load.once('exit', (code, signal) => resolve({ code, signal })),
        );
        try {
          // An archive outage in mid-run: the spool keeps receiving and fsyncing while nothing
          // gets archived, so a receiver that acknowledged received or fsynced WAL as flushed
          // would move the slot past the archive here (with a healthy local archive the two
          // differ only for milliseconds, too briefly for sampling to see).
          await sleep(1500);
          await waitForSamples(samples.length + 5, 'with the load running, before the outage');
          outageSamples[0] = samples.length;
          await switchable.takeAway();
          try {
            // Segment switches make the spool run whole segments ahead however slowly pgbench
            // goes on a busy machine.
            for (let i = 0; i < 2; i++) {
              await sleep(1000);
              await pg.switchWal();
            }
            await sleep(1000);
            // The outage lasts until the sampler has seen the receiver a segment ahead of the
            // archive (asserted below), over at least a few samples.
            await waitFor(() => samplerError !== null || (samples.length - outageSamples[0] >= 5 && leadIn(outageSamples[0]) >= seg), {
              timeoutMs: 60000,
              intervalMs: 100,
              what: 'the samples during the outage to see the receiver a segment ahead of the archive',
            }).catch(() => undefined); // the assertion on the lead below says what went wrong
          } finally {
            await switchable.giveBack();
            outageSamples[1] = samples.length;
          }
          await waitForSamples(MIN_SAMPLES, 'with the load running');
          assert.equal(load.exitCode, null, 'pgbench load still running when enough samples were taken');
        } finally {
          if (load.exitCode === null && load.signalCode === null) load.kill('SIGINT');
        }
        const exit = await loadExit;
        assert.ok(exit.code === 0 || exit.signal === 'SIGINT', `pgbench load ran until stopped (exit ${exit.code ?? exit.signal})`);
        // The tail of the load (and the backlog of the outage) is still being uploaded: keep
        // watching while it lands.
        await sleep(3000);

        await pg.switchWal();
        // Within one segment: what remains is at most the segment the server now writes into.
        await waitFor(
          async () => {
            const { restart } = await slotState();
            const current = parseLsn((await pg.query(`SELECT pg_current_wal_lsn()::text AS l`))[0].l);
            return restart !== null && current - restart <= seg;
          },
          {
            timeoutMs: 15000,
            intervalMs: 200,
            what: "the slot's restart_lsn to come within one segment of the server's position after pg_switch_wal",
          },
        );
      } finally {
        sampling = false;
        await sampler;
      }
      // One more sample after the catch-up, so the final state is checked too.
      await sampleOnce();

      assert.equal(samplerError, null, `sampling failed: ${String(samplerError)}`);
      assert.ok(samples.length >= MIN_SAMPLES, `enough samples during the run (got ${samples.length})`);
      assert.equal(
        violations.length,
        0,
        `restart_lsn must stay at or below the archived position; ${violations.length} of ${samples.length} samples did not:\n` +
          violations.slice(0, 20).join('\n'),
      );
      // Without this the outage proves nothing: the receiver must really have held WAL that
      // the archive did not, while the slot stayed put.
      const lead = leadIn(outageSamples[0], outageSamples[1]);
      assert.ok(
        lead >= seg,
        `during the outage the receiver got at least a segment ahead of the archive (got ${lead} bytes over ${outageSamples[1] - outageSamples[0]} samples)`,
      );
      const first = samples[0].restart!;
      const last = samples[samples.length - 1].restart!;
      t.diagnostic(
        `${samples.length} samples in ${samples[samples.length - 1].atMs} ms, ${outageSamples[1] - outageSamples[0]} during the outage (lead ${lead} bytes); restart_lsn ${formatLsn(first)} -> ${formatLsn(last)}`,
      );
      // ~20 MiB of WAL went by: a slot that did not move would make the checks above vacuous.
      assert.ok(
        last - first >= 10n * seg,
        `restart_lsn advanced by at least 10 segments (from ${formatLsn(first)} to ${formatLsn(last)})`,
      );
    });
  });

  for (const kind of [undefined, ...OBJECT_STORES])
  describe(`mode = sync (${kind?.name ?? 'local directory'})`, () => {
    const appName = 'walvault_sync';
    let cluster: PgCluster | null = null;
    let work = '';
    let receiver: WalvaultProcess | null = null;
    let writer: Client | null = null;
    let observer: Client | null = null;
    let store: ObjectStore | undefined;
    let archive: Archive | null = null;

    before(async () => {
      cluster = await PgCluster.start({
        walSegSizeMiB: 1,
        settings: {
          // pg-cluster.ts quotes string values itself (quoteConf): the bare name becomes
          // synchronous_standby_names = 'walvault_sync'.
          synchronous_standby_names: appName,
          synchronous_commit: 'on',
          // The commit LSN below is read as "insert position right after COMMIT": background
          // writers of WAL between the two would push it past the commit record.
          autovacuum: 'off',
          // The segments holding the commits are compared with pg_wal afterwards.
          wal_keep_size: '1024MB',
        },
      });
      work = tmpDir('walvault-ack-sync-');
      store = await kind?.start();
    });

    after(async () => {
      await receiver?.stop('SIGTERM', 30000);
      await endClient(writer);
      await endClient(observer);
      await archive?.close();
      await cluster?.destroy();
      await store?.destroy();
      if (work) removeDir(work);
    });

    it('releases commits from the data path, and only once they are in the spool', async () => {
      const pg = cluster!;
      const segSize = pg.walSegSize;
      const archiveDir = store ? store.url(`${path.basename(work)}/main`) : path.join(work, 'archive');
      const state = path.join(work, 'state');
      const config = writeConfig(work, {
        main: {
          pg: pgConninfo(pg),
          archive: archiveDir,
          state,
          slot: 'walvault_ack_sync',
          mode: 'sync',
          application_name: appName,
          // Slow on purpose: a timer-driven reply would make every commit wait seconds.
          status_interval_seconds: 10,
        },
      });
      receiver = WalvaultProcess.start(['run', '--config', config]);
      await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');

      observer = await connect(pg);
      const obs = observer;
      const standby = async (): Promise<{ flush: Lsn | null; syncState: string } | null> => {
        const r = await obs.query(
          `SELECT flush_lsn::text AS flush, sync_state FROM pg_stat_replication WHERE application_name = $1`,
          [appName],
        );
        if (r.rows.length === 0) return null;
        const row = r.rows[0];
        return { flush: row.flush === null ? null : parseLsn(row.flush), syncState: row.sync_state };
      };
      await waitFor(async () => (await standby())?.syncState === 'sync', {
        timeoutMs: 30000,
        intervalMs: 100,
        what: `${appName} to become the synchronous standby`,
      });

      const blockSize = BigInt((await pg.query(`SELECT current_setting('wal_block_size')::int AS b`))[0].b);
      const seg = BigInt(segSize);
      // pg_current_wal_insert_lsn() gives a position at a page start as the byte after the
      // page header (XLogBytePosToRecPtr); the commit waited for its record's end, which is
      // then the page boundary itself (XLogBytePosToEndRecPtr). Undo the difference.
      const commitEnd = (insert: Lsn): Lsn => {
        if (insert % seg === 40n) return insert - 40n; // long header, first page of a segment
        if (insert % blockSize === 24n && insert % seg >= blockSize) return insert - 24n; // short header
        return insert;
      };

      const spoolDir = path.join(state, 'spool');
      const stored = openArchive(archiveDir);
      archive = stored;
      /** Bytes [segment start, end) of the segment holding end-1, wherever the receiver keeps them now. */
      const receiverBytes = async (end: Lsn): Promise<{ where: string; data: Buffer } | null> => {
        const name = segmentFileName(1, segmentNumber(end - 1n, segSize), segSize);
        const need = Number(end - segmentStart(end - 1n, segSize));
        // The file moves on while we look (NAME.partial -> NAME -> archive): go round again if we miss it.
        for (let attempt = 0; attempt < 3; attempt++) {
          for (const file of [`${name}.partial`, name]) {
            try {
              const fd = await fs.promises.open(path.join(spoolDir, file), 'r');
              try {
                const buf = Buffer.alloc(need);
                // A spool file keeps room for the envelope header before the WAL.
                const { bytesRead } = await fd.read(buf, 0, need, PLAIN_HEADER_LENGTH);
                return { where: `spool/${file}`, data: buf.subarray(0, bytesRead) };
              } finally {
                await fd.close();
              }
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
            }
          }
          for (const key of [`wal/${name}`, `wal/${name}.partial`]) {
            const data = key.endsWith('.partial') ? await getPartial(stored, key) : await stored.get(key);
            if (data && data.length >= need) return { where: `archive ${key}`, data: data.subarray(0, need) };
          }
        }
        return null;
      };

      const writeClient = await connect(pg);
      writer = writeClient;
      await withTimeout(writeClient.query(`CREATE TABLE ack_probe (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())`), 10000, 'CREATE TABLE commit');

      const COMMITS = 50;
      const latencies: number[] = [];
      const problems: string[] = [];
      for (let i = 1; i <= COMMITS; i++) {
        const started = performance.now();
        // One round trip, so the window in which another process could add WAL between the
        // commit record and the reading of the insert position is microseconds, not a network hop.
        const res = (await withTimeout(
          writeClient.query(`BEGIN; INSERT INTO ack_probe (id) VALUES (${i}); COMMIT; SELECT pg_current_wal_insert_lsn()::text AS l`),
          10000,
          `commit ${i} (a synchronous standby that does not acknowledge stalls it)`,
        )) as unknown as Array<{ rows: Array<{ l: string }> }>;
        latencies.push(performance.now() - started);
        const insertLsn = parseLsn(res[res.length - 1].rows[0].l);
        const committed = commitEnd(insertLsn);

        const st = await standby();
        if (!st) {
          problems.push(`commit ${i}: ${appName} is gone from pg_stat_replication`);
          continue;
        }
        if (st.syncState !== 'sync') problems.push(`commit ${i}: ${appName} is ${st.syncState}, not sync`);
        if (st.flush === null || st.flush < committed) {
          problems.push(`commit ${i} at ${formatLsn(committed)}: acknowledged flush is only ${st.flush === null ? 'null' : formatLsn(st.flush)}`);
        }

        const held = await receiverBytes(committed);
        const name = segmentFileName(1, segmentNumber(committed - 1n, segSize), segSize);
        const need = Number(committed - segmentStart(committed - 1n, segSize));
        if (!held) {
          problems.push(`commit ${i} at ${formatLsn(committed)}: segment ${name} is neither in the spool nor in the archive`);
          continue;
        }
        const server = (await pg.readWalFile(name)).subarray(0, need);
        if (held.data.length < need) {
          problems.push(`commit ${i} at ${formatLsn(committed)}: ${held.where} holds ${held.data.length} of the ${need} bytes up to the commit`);
        } else if (!held.data.equals(server)) {
          problems.push(`commit ${i} at ${formatLsn(committed)}: ${held.where} differs from pg_wal/${name} before the commit end`);
        }
      }

      const count = (await pg.query(`SELECT count(*)::int AS n FROM ack_probe`))[0].n;
      assert.equal(count, COMMITS, 'every commit is visible');
      assert.equal(problems.length, 0, `${problems.length} problems in ${COMMITS} commits:\n${problems.slice(0, 20).join('\n')}`);
      const sorted = [...latencies].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)];
      // With a 10 s status timer, only replies driven by the received data can keep this low.
      assert.ok(
        median < 1000,
        `median commit latency ${median.toFixed(1)} ms (max ${sorted[sorted.length - 1].toFixed(1)} ms) is under 1 s`,
      );
    });
  });
});
