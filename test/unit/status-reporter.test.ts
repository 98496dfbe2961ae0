/**
 * Issue 18, item 1: the invariants of the positions walvault reports to the server, driven
 * directly (the integration tests sample them from a real server's pg_stat_replication).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { StatusPositions } from '../../src/postgres/copy-both-messages';
import { StatusReporter } from '../../src/daemon/status-reporter';
import type { Lsn } from '../../src/wal/lsn';
import { mulberry32 } from '../helpers/seeded-random';

/** Sources the test moves by hand, as the spool, fsync and uploader would. */
function sources(received = 0n, fsynced = 0n, archived = 0n) {
  const s = { received, fsynced, archived };
  return { s, view: { received: (): Lsn => s.received, fsynced: (): Lsn => s.fsynced, archived: (): Lsn => s.archived } };
}

function sent(r: StatusReporter): StatusPositions[] {
  const out: StatusPositions[] = [];
  r.report((p) => out.push(p));
  return out;
}

describe('status reporter', () => {
  test('archive mode: flush is what is archived, never what is only fsynced', () => {
    const { s, view } = sources(0x3000000n, 0x3000000n, 0x2000000n);
    const r = new StatusReporter('archive', view);
    assert.deepEqual(sent(r), [{ write: 0x3000000n, flush: 0x2000000n, apply: 0x2000000n }]);
    s.archived = 0x2800000n;
    assert.deepEqual(r.positions(), { write: 0x3000000n, flush: 0x2800000n, apply: 0x2800000n });
  });

  test('sync mode: flush is what is fsynced, even when archiving lags behind it', () => {
    const { s, view } = sources(0x3000000n, 0x2c00000n, 0x1000000n);
    const r = new StatusReporter('sync', view);
    assert.equal(r.positions().flush, 0x2c00000n);
    s.fsynced = 0x3000000n;
    assert.equal(r.positions().flush, 0x3000000n);
  });

  test('flush never passes write: an archive ahead of this run (resumed) reports no more than was received', () => {
    const { view } = sources(0x1000000n, 0x1000000n, 0x5000000n);
    for (const mode of ['archive', 'sync'] as const) {
      const p = new StatusReporter(mode, view).positions();
      assert.ok(p.flush <= p.write, `${mode}: ${JSON.stringify(p, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))}`);
    }
  });

  test('nothing goes backwards: a reconnect that receives a segment again from its start takes back nothing', () => {
    const { s, view } = sources(0x3400000n, 0x3400000n, 0x3000000n);
    const r = new StatusReporter('archive', view);
    const first = sent(r)[0];
    // The open segment is dropped and received again from 0/3000000.
    s.received = 0x3000000n;
    s.fsynced = 0x3000000n;
    const again = r.positions();
    assert.equal(again.write, first.write);
    assert.equal(again.flush, first.flush);
  });

  test('a send that throws leaves the last report as it was', () => {
    const { s, view } = sources(0x2000000n, 0x2000000n, 0x2000000n);
    const r = new StatusReporter('archive', view);
    sent(r);
    s.received = s.archived = 0x4000000n;
    assert.throws(() => r.report(() => { throw new Error('socket closed'); }), /socket closed/);
    assert.equal(r.sent.flush, 0x2000000n);
    assert.equal(sent(r)[0].flush, 0x4000000n);
  });

  test('a keepalive asking for a reply waits for the fsync in sync mode only', () => {
    const { s, view } = sources(0x3000000n, 0x2f00000n, 0n);
    assert.equal(new StatusReporter('sync', view).keepaliveAnswer(), 'after-fsync');
    assert.equal(new StatusReporter('archive', view).keepaliveAnswer(), 'now');
    s.fsynced = 0x3000000n;
    assert.equal(new StatusReporter('sync', view).keepaliveAnswer(), 'now');
  });

  test('a timeline switch takes back what was past the switch point, and only that', () => {
    const { s, view } = sources(0x3100000n, 0x3100000n, 0x3100000n);
    const r = new StatusReporter('archive', view);
    sent(r);
    r.clampTo(0x30a0000n);
    assert.deepEqual(r.sent, { write: 0x30a0000n, flush: 0x30a0000n, apply: 0x30a0000n });
    s.received = s.archived = 0x30a0000n;
    assert.deepEqual(r.positions(), { write: 0x30a0000n, flush: 0x30a0000n, apply: 0x30a0000n });
    r.clampTo(0x4000000n);
    assert.equal(r.sent.write, 0x30a0000n, 'a switch point above leaves the report alone');
  });

  test('random histories: every report keeps flush <= write, flush <= the safe position or an earlier report, and never goes back', () => {
    const seed = Number(process.env.WALVAULT_TEST_SEED ?? 20261205);
    for (const mode of ['archive', 'sync'] as const) {
      const rand = mulberry32(seed);
      const { s, view } = sources();
      const r = new StatusReporter(mode, view);
      let prev: StatusPositions = { write: 0n, flush: 0n, apply: 0n };
      for (let step = 0; step < 5000; step++) {
        const roll = rand();
        const by = BigInt(Math.floor(rand() * 0x20000));
        // Received moves forward mostly and sometimes back (a reconnect); fsynced and
        // archived follow it, never past it.
        if (roll < 0.5) s.received += by;
        else if (roll < 0.55) s.received = s.received > by ? s.received - by : 0n;
        if (rand() < 0.6) s.fsynced = s.fsynced + by > s.received ? s.received : s.fsynced + by;
        if (rand() < 0.3) s.archived = s.archived + by > s.fsynced ? s.fsynced : s.archived + by;
        if (s.fsynced > s.received) s.fsynced = s.received;
        if (s.archived > s.fsynced) s.archived = s.fsynced;
        const p = sent(r)[0];
        const safe = mode === 'sync' ? s.fsynced : s.archived;
        const at = `seed ${seed}, ${mode}, step ${step}`;
        assert.ok(p.flush <= p.write, at);
        assert.equal(p.apply, p.flush, at);
        assert.ok(p.write >= prev.write && p.flush >= prev.flush, `${at}: went back`);
        assert.ok(p.flush <= safe || p.flush === prev.flush, `${at}: flush ${p.flush} above the safe ${safe} and above the last report ${prev.flush}`);
        assert.ok(p.write <= s.received || p.write === prev.write, `${at}: write above what was received`);
        prev = p;
      }
    }
  });
});
