/**
 * Acceptance: "Each of these gets a one-line error naming the cause and the fix, a non-zero
 * exit and nothing written: server unreachable, wrong password, role without REPLICATION,
 * no pg_hba replication entry, all walsenders busy, slot active in another process, archive
 * belonging to another cluster, unwritable state directory."
 *
 * The real CLI against real PostgreSQL 15 servers. Three clusters, started together:
 *   main  - roles for the auth cases, a hand-written pg_hba.conf, the busy slot, cluster A
 *   other - cluster B of the foreign-archive case
 *   busy  - max_wal_senders = 1, its only walsender held by pg_receivewal
 *   newest - the newest installed major >= 16, for its reworded REPLICATION error
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client, type ClientConfig } from 'pg';
import { availableMajors, freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { OBJECT_STORES } from '../helpers/object-stores';
import { archivedSegments, pgConninfo, runWalvault, WalvaultProcess } from '../helpers/walvault';
import { snapshotTree, startReceivewal, stopChild, type ReceivewalProcess } from '../helpers/errors-fixtures';

const WRONG_PASSWORD = 'wrong-secret-123';
const RIGHT_PASSWORD = 'right-secret';
/** Every case here fails on the first round trips: anything slower is a hang or a retry loop. */
const EXIT_WITHIN_MS = 15_000;
/** A walvault still running after this is killed, so a retry loop fails the case instead of the file. */
const KILL_AFTER_MS = 20_000;
/** PostgreSQL 16 reworded the walsender permission error: the REPLICATION case must hold there too. */
const NEWEST_MAJOR = availableMajors().filter((m) => m >= 16).pop();

interface BadRun {
  pg: string;
  archive: string;
  state: string;
  slot?: string;
  env?: NodeJS.ProcessEnv;
  /** Paths whose tree must be byte-identical afterwards, besides archive and state. */
  alsoUnchanged?: string[];
  cause: RegExp[];
  fix: RegExp;
  /** Strings that must never reach the output. */
  secrets?: string[];
}

/**
 * Runs `walvault run` and checks everything the acceptance line promises, collecting every
 * violation so one report shows all the ways a case is broken.
 */
async function expectCleanFailure(c: BadRun): Promise<string> {
  const watched = [c.archive, c.state, ...(c.alsoUnchanged ?? [])];
  const before = watched.map((p) => snapshotTree(p));
  const args = ['run', '--pg', c.pg, '--archive', c.archive, '--state', c.state, ...(c.slot ? ['--slot', c.slot] : [])];
  const started = Date.now();
  const r = await runWalvault(args, { PGPASSWORD: undefined, ...c.env }, KILL_AFTER_MS);
  const elapsed = Date.now() - started;

  const problems: string[] = [];
  if (r.code === null) problems.push(`did not exit: killed after ${KILL_AFTER_MS} ms`);
  else if (r.code === 0) problems.push('exit code 0');
  if (elapsed > EXIT_WITHIN_MS) problems.push(`took ${elapsed} ms (limit ${EXIT_WITHIN_MS} ms)`);

  const text = r.stderr.trim();
  const lines = text === '' ? [] : text.split('\n');
  if (lines.length !== 1) problems.push(`stderr has ${lines.length} lines, expected exactly 1`);
  const line = lines[lines.length - 1] ?? '';
  if (!line.startsWith('walvault: ')) problems.push('the error line does not start with "walvault: "');
  // An unmapped error surfaces as "internal error" with a stack: no cause, no fix for the operator.
  if (/internal error/.test(line)) problems.push('reported as an internal error');
  for (const re of c.cause) if (!re.test(line)) problems.push(`the error line does not name the cause (${re})`);
  if (!c.fix.test(line)) problems.push(`the error line has no fix hint (${c.fix})`);
  for (const s of c.secrets ?? []) {
    if (r.stderr.includes(s) || r.stdout.includes(s)) problems.push(`the output contains the secret ${JSON.stringify(s)}`);
  }
  watched.forEach((p, i) => {
    const now = snapshotTree(p);
    try {
      assert.deepEqual(now, before[i]);
    } catch {
      problems.push(
        before[i] === null
          ? `${p} did not exist before and was created: ${JSON.stringify(now?.map((e) => e.path))}`
          : `${p} changed: before ${JSON.stringify(before[i]?.map((e) => `${e.path}:${e.size}`))} after ${JSON.stringify(now?.map((e) => `${e.path}:${e.size}`))}`,
      );
    }
  });
  assert.deepEqual(problems, [], `walvault ${args.join(' ')}\nexit ${r.code} after ${elapsed} ms\n--- stderr ---\n${r.stderr.slice(-3000)}`);
  return line;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function systemId(cluster: PgCluster): Promise<string> {
  return String((await cluster.query('SELECT system_identifier::text AS id FROM pg_control_system()'))[0].id);
}

/** Connects like walvault does (a physical replication connection) and reports why the server refused. */
async function replicationRefusal(cluster: PgCluster, user: string): Promise<string | null> {
  const config: ClientConfig & { replication: string } = { ...cluster.clientConfig({ user }), replication: 'true' };
  const client = new Client(config);
  client.on('error', () => undefined);
  try {
    await client.connect();
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await client.end().catch(() => undefined);
  }
}

describe('bad input: one-line error naming cause and fix, non-zero exit, nothing written', { timeout: 120_000 }, () => {
  let main: PgCluster;
  let other: PgCluster;
  let busy: PgCluster;
  let newest: PgCluster | undefined;
  let work: string;
  const receivewals: ReceivewalProcess[] = [];
  let receiver: WalvaultProcess | null = null;

  before(async () => {
    work = tmpDir('walvault-errors-');
    const started = await Promise.allSettled([
      PgCluster.start(),
      PgCluster.start(),
      PgCluster.start({ settings: { max_wal_senders: 1 } }),
      ...(NEWEST_MAJOR ? [PgCluster.start({ major: NEWEST_MAJOR })] : []),
    ]);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    const ok = started.filter((s): s is PromiseFulfilledResult<PgCluster> => s.status === 'fulfilled').map((s) => s.value);
    if (failed) {
      await Promise.all(ok.map((c) => c.destroy().catch(() => undefined)));
      throw failed.reason;
    }
    [main, other, busy, newest] = ok;

    await main.query(`
      CREATE ROLE pwuser LOGIN REPLICATION PASSWORD '${RIGHT_PASSWORD}';
      CREATE ROLE norepl LOGIN;
      CREATE ROLE nohba LOGIN REPLICATION;
      SELECT pg_create_physical_replication_slot('busy_slot', true);
    `);
    // The harness always appends "host replication all ... trust", which would match nohba:
    // a true "no pg_hba.conf entry" needs a file that names the replication users one by one.
    // Writing the existing file keeps its owner (the server user) and mode.
    fs.writeFileSync(
      path.join(main.dataDir, 'pg_hba.conf'),
      [
        '# written by test/integration/errors.test.ts: replication only for the listed users',
        'local all all trust',
        'host all all 127.0.0.1/32 trust',
        'local replication all trust',
        'host replication pwuser 127.0.0.1/32 scram-sha-256',
        'host replication norepl 127.0.0.1/32 trust',
        'host replication postgres 127.0.0.1/32 trust',
        '',
      ].join('\n'),
    );
    await main.query('SELECT pg_reload_conf()');
    // The reload is asynchronous: the case must not race the postmaster re-reading the file.
    await waitFor(async () => /no pg_hba\.conf entry/.test((await replicationRefusal(main, 'nohba')) ?? ''), {
      timeoutMs: 10_000,
      what: 'the rewritten pg_hba.conf to take effect',
    });
    assert.equal(await replicationRefusal(main, 'postgres'), null, 'postgres must still be allowed to replicate from main');
  });

  after(async () => {
    await receiver?.kill9();
    await Promise.all(receivewals.map((p) => stopChild(p.child)));
    const clusters = [main, other, busy, newest].filter((c): c is PgCluster => c !== undefined);
    await Promise.all(clusters.map((c) => c.destroy().catch(() => undefined)));
    if (work) removeDir(work);
  });

  function caseDir(name: string): { archive: string; state: string; dir: string } {
    const dir = path.join(work, name);
    fs.mkdirSync(dir, { recursive: true });
    return { dir, archive: path.join(dir, 'archive'), state: path.join(dir, 'state') };
  }

  it('server unreachable', async () => {
    const { archive, state } = caseDir('unreachable');
    // Free a moment ago and never listened on by anyone here: connection refused.
    const port = await freePort();
    await expectCleanFailure({
      pg: `host=127.0.0.1 port=${port} user=postgres dbname=postgres`,
      archive,
      state,
      cause: [/cannot reach PostgreSQL/, new RegExp(`127\\.0\\.0\\.1:${port}\\b`)],
      fix: /check that the server is running/,
    });
  });

  it('wrong password', async () => {
    const { archive, state } = caseDir('wrong-password');
    // An existing, empty state dir and archive must stay exactly as they are.
    fs.mkdirSync(archive);
    fs.mkdirSync(state);
    await expectCleanFailure({
      pg: pgConninfo(main, 'pwuser'),
      env: { PGPASSWORD: WRONG_PASSWORD },
      archive,
      state,
      cause: [/password authentication failed for user "pwuser"/],
      fix: /PGPASSWORD/,
      secrets: [WRONG_PASSWORD, RIGHT_PASSWORD],
    });
  });

  it('role without REPLICATION', async () => {
    const { archive, state } = caseDir('no-replication-role');
    await expectCleanFailure({
      pg: pgConninfo(main, 'norepl'),
      archive,
      state,
      cause: [/role "norepl"/, /may not start replication/],
      fix: /ALTER ROLE norepl REPLICATION/,
    });
  });

  it(`role without REPLICATION (PostgreSQL ${NEWEST_MAJOR ?? '16+'})`, { skip: NEWEST_MAJOR ? false : 'no PostgreSQL 16+ server binaries installed' }, async () => {
    const { archive, state } = caseDir('no-replication-role-newest');
    await newest!.query('CREATE ROLE norepl LOGIN');
    await expectCleanFailure({
      pg: pgConninfo(newest!, 'norepl'),
      archive,
      state,
      cause: [/role "norepl"/, /may not start replication/],
      fix: /ALTER ROLE norepl REPLICATION/,
    });
  });

  it('no pg_hba replication entry', async () => {
    const { archive, state } = caseDir('no-hba-entry');
    const line = await expectCleanFailure({
      pg: pgConninfo(main, 'nohba'),
      archive,
      state,
      cause: [/refuses replication connections for user "nohba"/],
      fix: /add a line such as "host replication nohba .*" to pg_hba\.conf and reload/,
    });
    // The server's own reason must be the missing entry, not a "reject" line or a bad password.
    assert.match(line, /no pg_hba\.conf entry for replication connection/);
  });

  it('all walsenders busy', async () => {
    const { dir, archive, state } = caseDir('walsenders-busy');
    const holder = startReceivewal(busy, path.join(dir, 'receivewal'));
    receivewals.push(holder);
    await waitFor(async () => (await busy.query(`SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name = 'pg_receivewal'`))[0].n === 1, {
      timeoutMs: 15_000,
      what: `pg_receivewal to take the only walsender (its output: ${holder.output()})`,
    });
    await expectCleanFailure({
      pg: pgConninfo(busy),
      archive,
      state,
      cause: [/no free walsender/, /max_wal_senders/, /killed while the server was in its checkpoint/],
      fix: /raise max_wal_senders/,
    });
    // Without this the error could have come from anything but a busy server.
    assert.equal(holder.child.exitCode, null, `pg_receivewal must still hold the walsender; it said: ${holder.output()}`);
  });

  it('slot active in another process', async () => {
    const { dir, archive, state } = caseDir('slot-active');
    fs.mkdirSync(archive);
    fs.mkdirSync(state);
    const holder = startReceivewal(main, path.join(dir, 'receivewal'), 'busy_slot');
    receivewals.push(holder);
    await waitFor(async () => (await main.query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'busy_slot'`))[0]?.active === true, {
      timeoutMs: 15_000,
      what: `pg_receivewal to make busy_slot active (its output: ${holder.output()})`,
    });
    await expectCleanFailure({
      pg: pgConninfo(main),
      slot: 'busy_slot',
      archive,
      state,
      cause: [/slot "busy_slot"/, /active/],
      fix: /stop it, or give this site its own slot/,
    });
  });

  /**
   * Cluster A fills `archive` and stops cleanly; cluster B is then pointed at it. `watched`
   * holds the archive's bytes on disk (for s3rver and Azurite, its data directory).
   */
  async function foreignArchiveCase(dir: string, archive: string, watched: string[]): Promise<void> {
    const [idA, idB] = [await systemId(main), await systemId(other)];
    assert.notEqual(idA, idB, 'the two clusters must be distinct database systems');

    receiver = WalvaultProcess.start(['run', '--pg', pgConninfo(main), '--archive', archive, '--state', path.join(dir, 'state-a'), '--slot', 'archive_a', '--backup-interval', '0']);
    // WAL written before streaming starts could land in a segment the receiver never asks for;
    // an active slot means the server accepted START_REPLICATION, whatever the logs say.
    await waitFor(
      async () => {
        if (!receiver!.running) throw new Error(`walvault for cluster A exited: ${receiver!.stderr.slice(-2000)}`);
        return (await main.query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'archive_a'`))[0]?.active === true;
      },
      { timeoutMs: 30_000, what: 'walvault to stream from cluster A' },
    );
    await main.query('CREATE TABLE IF NOT EXISTS t AS SELECT generate_series(1, 10000) AS n');
    await main.query('INSERT INTO t SELECT generate_series(1, 10000)');
    await main.switchWal();
    await waitFor(async () => (await archivedSegments(archive)).length > 0, {
      timeoutMs: 30_000,
      what: 'cluster A to have a finished segment in the archive',
    });
    const exit = await receiver.stop('SIGTERM');
    receiver = null;
    assert.equal(exit.code, 0, 'the receiver of cluster A must stop cleanly so the archive is settled before the snapshot');
    await main.query(`SELECT pg_drop_replication_slot('archive_a')`);

    await expectCleanFailure({
      pg: pgConninfo(other),
      archive,
      state: path.join(dir, 'state-b'),
      alsoUnchanged: watched,
      cause: [new RegExp(`\\b${idA}\\b`), new RegExp(`\\b${idB}\\b`), /belongs to database system/],
      fix: /use a separate archive for each cluster/,
    });
  }

  it('archive belonging to another cluster', async () => {
    const { dir, archive } = caseDir('other-cluster');
    await foreignArchiveCase(dir, archive, []);
  });

  for (const kind of OBJECT_STORES)
    it(`archive belonging to another cluster (${kind.name})`, async () => {
      const { dir } = caseDir(`other-cluster-${kind.table}`);
      const store = await kind.start();
      try {
        await foreignArchiveCase(dir, store.url('other-cluster/main'), [store.dataDir]);
      } finally {
        await store.destroy();
      }
    });

  it('unwritable state directory', async () => {
    const { dir, archive } = caseDir('state-unwritable');
    // A path below a regular file can be created by nobody, root included.
    const blocker = path.join(dir, 'afile');
    fs.writeFileSync(blocker, 'not a directory\n');
    const state = path.join(blocker, 'state');
    await expectCleanFailure({
      pg: pgConninfo(main),
      archive,
      state,
      alsoUnchanged: [blocker],
      cause: [new RegExp(`state directory ${escapeRe(state)}`), /not a directory/],
      fix: /choose another --state/,
    });
  });
});
