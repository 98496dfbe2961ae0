import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { Ledger } from '../../src/ledger/ledger';
import { LedgerReader } from '../../src/ledger/ledger-reader';
import { APPLICATION_ID, SCHEMA_VERSION } from '../../src/ledger/migrations';
import { isWalvaultError } from '../../src/errors';
import { runTestAs, unprivilegedUser } from '../helpers/pg-cluster';

const SEG = 16 * 1024 * 1024;
const SITE = { site: 'main', systemId: '7300000000000000001', timeline: 1, walSegmentSize: SEG, serverVersionNum: 170004 };

function seg(segNo: bigint, timeline = 1) {
  return { timeline, segNo, name: `seg-${timeline}-${segNo}`, startLsn: segNo * BigInt(SEG), size: SEG };
}

function throwsCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isWalvaultError(err), `expected a WalvaultError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

let dir: string;
let file: string;
const open: Ledger[] = [];

function openLedger(p = file, now?: () => Date): Ledger {
  const l = Ledger.open(p, now ? { now } : {});
  open.push(l);
  return l;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-ledger-'));
  file = path.join(dir, 'ledger.sqlite');
});

afterEach(() => {
  for (const l of open.splice(0)) l.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('opening and migrations', () => {
  it('creates the schema in an empty file with durable settings', () => {
    const l = openLedger();
    assert.deepEqual(l.settings(), { journalMode: 'wal', synchronous: 1, foreignKeys: true, busyTimeoutMs: 5000, schemaVersion: SCHEMA_VERSION });
    assert.equal(l.path, file);
    l.close();

    const raw = new Database(file, { readonly: true });
    try {
      const tables = (raw.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).all() as { name: string }[]).map((r) => r.name);
      assert.deepEqual(tables, ['events', 'history_files', 'partials', 'segments', 'sites']);
      assert.equal(raw.pragma('application_id', { simple: true }), APPLICATION_ID);
      assert.equal(raw.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    } finally {
      raw.close();
    }
  });

  it('keeps its data across close and reopen', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.advancePositions('main', { received: 0x1_0000_1000n });
    l.upsertReceiving('main', seg(1n));
    l.close();

    const again = openLedger();
    assert.equal(again.getSite('main')?.receivedLsn, 0x1_0000_1000n);
    assert.equal(again.getSegment('main', 1, 1n)?.state, 'receiving');
    assert.equal(again.settings().schemaVersion, SCHEMA_VERSION);
  });

  it('refuses a ledger written by a newer schema and leaves it in place', () => {
    openLedger().close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();

    throwsCode(() => Ledger.open(file), 'LEDGER',
      new RegExp(`ledger ${file} was written by a newer walvault \\(schema ${SCHEMA_VERSION + 1}, this build knows ${SCHEMA_VERSION}\\): upgrade walvault`));
    assert.ok(fs.existsSync(file));
  });

  it('refuses some other program\'s SQLite database without touching it', () => {
    const raw = new Database(file);
    raw.exec('CREATE TABLE notes (body TEXT)');
    raw.close();
    throwsCode(() => Ledger.open(file), 'LEDGER', /not a walvault ledger/);

    const check = new Database(file, { readonly: true });
    assert.equal(check.pragma('user_version', { simple: true }), 0);
    check.close();
  });

  it('refuses a file that is not SQLite at all', () => {
    fs.writeFileSync(file, 'x'.repeat(4096));
    throwsCode(() => Ledger.open(file), 'LEDGER', /not a walvault ledger/);
    assert.equal(fs.readFileSync(file, 'utf8'), 'x'.repeat(4096));
  });
});

describe('unwritable state directory', () => {
  it('reports STATE_DIR_UNWRITABLE when the parent is a regular file (fails for root too)', () => {
    const notADir = path.join(dir, 'plain-file');
    fs.writeFileSync(notADir, '');
    const target = path.join(notADir, 'ledger.sqlite');
    throwsCode(() => Ledger.open(target), 'STATE_DIR_UNWRITABLE',
      /^cannot write the ledger at .*plain-file\/ledger\.sqlite: .*; make the state directory writable by this user or choose another --state$/);
    assert.deepEqual(fs.readdirSync(dir), ['plain-file']);
  });

  it('reports STATE_DIR_UNWRITABLE when the directory does not exist, and creates nothing', () => {
    const target = path.join(dir, 'missing', 'ledger.sqlite');
    throwsCode(() => Ledger.open(target), 'STATE_DIR_UNWRITABLE', /does not exist/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('a write SQLite refuses (here: a connection made read-only) is a typed LEDGER error naming the file, not a bare SqliteError', () => {
    const l = openLedger();
    l.registerSite(SITE);
    (l as unknown as { db: Database.Database }).db.pragma('query_only = ON');
    throwsCode(() => l.advancePositions('main', { received: 16n }), 'LEDGER', new RegExp(`^cannot write the ledger ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*\\(SQLITE_READONLY\\); check the disk and the permissions of the state directory `));
  });

  it('a ledger another connection holds locked past busy_timeout is a LEDGER error saying so, not blaming the disk', () => {
    const l = openLedger();
    l.registerSite(SITE);
    (l as unknown as { db: Database.Database }).db.pragma('busy_timeout = 50');
    const other = new Database(file);
    try {
      other.exec('BEGIN EXCLUSIVE');
      throwsCode(() => l.advancePositions('main', { received: 16n }), 'LEDGER', /\(SQLITE_BUSY\); another process holds the ledger locked .*; close it$/);
      other.exec('ROLLBACK');
      l.advancePositions('main', { received: 16n });
    } finally {
      other.close();
    }
  });

  const READ_ONLY_TEST = 'reports STATE_DIR_UNWRITABLE for a read-only directory';
  // Root ignores directory permissions: as root (CI) the test runs again as the unprivileged
  // server OS user (postgres), where the directory really is read-only.
  it(READ_ONLY_TEST, { skip: process.getuid?.() === 0 && !unprivilegedUser() && 'root ignores directory permissions, and there is no postgres OS user to run it as' }, (t) => {
    const user = unprivilegedUser();
    if (user) {
      runTestAs(user, __filename, READ_ONLY_TEST);
      t.diagnostic(`ran as ${user.name} (uid ${user.uid}) in a child node --test`);
      return;
    }
    const ro = path.join(dir, 'ro');
    fs.mkdirSync(ro, { mode: 0o555 });
    try {
      throwsCode(() => Ledger.open(path.join(ro, 'ledger.sqlite')), 'STATE_DIR_UNWRITABLE', /not writable/);
      assert.deepEqual(fs.readdirSync(ro), []);
    } finally {
      fs.chmodSync(ro, 0o755);
    }
  });
});

describe('sites and positions', () => {
  it('registers a site once and accepts the same system identifier again', () => {
    const l = openLedger();
    const first = l.registerSite(SITE);
    assert.deepEqual(first, {
      site: 'main', systemId: SITE.systemId, timeline: 1, walSegmentSize: SEG, serverVersionNum: 170004,
      receivedLsn: 0n, fsyncedLsn: 0n, archivedLsn: 0n,
    });
    l.advancePositions('main', { received: 100n });
    const again = l.registerSite({ ...SITE, serverVersionNum: 180000 });
    assert.equal(again.serverVersionNum, 180000);
    assert.equal(again.receivedLsn, 100n, 'registering again keeps the positions');
    assert.equal(l.getSite('other'), null);
  });

  it('refuses a different system identifier for the same site', () => {
    const l = openLedger();
    l.registerSite(SITE);
    throwsCode(() => l.registerSite({ ...SITE, systemId: '7399999999999999999' }), 'STATE_OTHER_CLUSTER',
      new RegExp(`^state directory ${dir} holds site main of database system ${SITE.systemId}, but the server is 7399999999999999999: use a new state directory or the right server$`));
    assert.equal(l.getSite('main')?.systemId, SITE.systemId);
  });

  it('holds several sites in one file', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.registerSite({ ...SITE, site: 'second', systemId: '42' });
    l.upsertReceiving('second', seg(9n));
    assert.equal(l.allSegments('main').length, 0);
    assert.equal(l.allSegments('second').length, 1);
  });

  it('does not lower the stored timeline when the server reports an older one, and records why', () => {
    const l = openLedger();
    l.registerSite({ ...SITE, timeline: 3 });
    assert.equal(l.registerSite({ ...SITE, timeline: 2 }).timeline, 3);
    assert.equal(l.recentEvents('main')[0]?.code, 'TIMELINE_BEHIND');
  });

  it('never moves positions backwards', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.advancePositions('main', { received: 0x3000n, fsynced: 0x2000n, archived: 0x1000n, timeline: 2 });
    const after = l.advancePositions('main', { received: 0x2500n, fsynced: 0x2800n, archived: 0x500n, timeline: 1 });
    assert.equal(after.receivedLsn, 0x3000n);
    assert.equal(after.fsyncedLsn, 0x2800n);
    assert.equal(after.archivedLsn, 0x1000n);
    assert.equal(after.timeline, 2);
    assert.deepEqual(l.getSite('main'), after);
    assert.equal(l.advancePositions('main', {}).receivedLsn, 0x3000n);
  });

  it('stores positions beyond 32 bits and 2^53 exactly', () => {
    const l = openLedger();
    l.registerSite(SITE);
    const big = (1n << 60n) + 0x1234n;
    l.advancePositions('main', { received: big });
    l.close();
    assert.equal(openLedger().getSite('main')?.receivedLsn, big);
  });

  it('refuses positions for an unregistered site', () => {
    const l = openLedger();
    throwsCode(() => l.advancePositions('nope', { received: 1n }), 'LEDGER', /not registered/);
    throwsCode(() => l.upsertReceiving('nope', seg(1n)), 'LEDGER', /not registered/);
  });

  it('switchTimeline clamps positions to the fork point and only moves forward', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.advancePositions('main', { received: 0x5000n, fsynced: 0x4000n, archived: 0x1000n });
    const s = l.switchTimeline('main', 2, 0x4800n);
    assert.deepEqual([s.timeline, s.receivedLsn, s.fsyncedLsn, s.archivedLsn], [2, 0x4800n, 0x4000n, 0x1000n]);
    assert.equal(l.recentEvents('main')[0]?.code, 'TIMELINE_FORK_BEHIND');
    throwsCode(() => l.switchTimeline('main', 2, 0x9000n), 'LEDGER', /only move forward/);
  });
});

describe('segments', () => {
  it('goes receiving → complete → archived and is queried in order', () => {
    const l = openLedger();
    l.registerSite(SITE);
    // Inserted out of order and across timelines on purpose.
    for (const [n, tli] of [[5n, 1], [3n, 1], [4n, 2], [4n, 1]] as const) assert.equal(l.upsertReceiving('main', seg(n, tli)), true);

    const fresh = l.getSegment('main', 1, 3n);
    assert.deepEqual(fresh, {
      site: 'main', timeline: 1, segNo: 3n, name: 'seg-1-3', startLsn: 3n * BigInt(SEG), size: SEG, state: 'receiving',
      receivedBytes: 0, sha256: null, objectKey: null, attempts: 0, lastError: null,
    });

    l.markComplete('main', 1, 4n, 'a4');
    l.markComplete('main', 2, 4n, 'b4');
    l.markComplete('main', 1, 3n, 'a3');
    const complete = l.segmentsInState('main', 'complete');
    assert.deepEqual(complete.map((s) => [s.segNo, s.timeline]), [[3n, 1], [4n, 1], [4n, 2]]);
    assert.equal(complete[0].receivedBytes, SEG);
    assert.deepEqual(l.segmentsInState('main', 'receiving').map((s) => s.segNo), [5n]);

    l.recordAttemptFailure('main', 1, 3n, 'storage: 503 Slow Down');
    l.recordAttemptFailure('main', 1, 3n, 'storage: timeout');
    assert.equal(l.getSegment('main', 1, 3n)?.attempts, 2);
    assert.equal(l.getSegment('main', 1, 3n)?.lastError, 'storage: timeout');

    l.markArchived('main', 1, 3n, 'wal/seg-1-3', 'a3');
    const archived = l.getSegment('main', 1, 3n);
    assert.equal(archived?.state, 'archived');
    assert.equal(archived?.objectKey, 'wal/seg-1-3');
    assert.equal(archived?.attempts, 2, 'attempts are history and stay');
    assert.equal(archived?.lastError, null);
    assert.deepEqual(l.allSegments('main').map((s) => `${s.segNo}/${s.timeline}:${s.state}`),
      ['3/1:archived', '4/1:complete', '4/2:complete', '5/1:receiving']);
  });

  it('resets a complete (not archived) segment to receiving on re-upsert', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.upsertReceiving('main', seg(7n));
    l.markComplete('main', 1, 7n, 'old');
    l.recordAttemptFailure('main', 1, 7n, 'boom');
    assert.equal(l.upsertReceiving('main', seg(7n)), true);
    const row = l.getSegment('main', 1, 7n);
    assert.deepEqual([row?.state, row?.sha256, row?.receivedBytes, row?.attempts, row?.lastError], ['receiving', null, 0, 0, null]);
    l.markComplete('main', 1, 7n, 'new');
    assert.equal(l.getSegment('main', 1, 7n)?.sha256, 'new');
  });

  it('leaves an archived segment alone on re-upsert and says so by returning false', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.upsertReceiving('main', seg(8n));
    l.markComplete('main', 1, 8n, 'h8');
    l.markArchived('main', 1, 8n, 'wal/8', 'h8');
    const before = l.getSegment('main', 1, 8n);
    assert.equal(l.upsertReceiving('main', seg(8n)), false);
    assert.deepEqual(l.getSegment('main', 1, 8n), before);
    // Receiving the same bytes again is then harmless; different bytes are a conflict.
    l.markComplete('main', 1, 8n, 'h8');
    throwsCode(() => l.markComplete('main', 1, 8n, 'other'), 'ARCHIVE_CONFLICT');
  });

  it('makes repeated transitions idempotent and refuses changed checksums', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.upsertReceiving('main', seg(2n));
    l.markComplete('main', 1, 2n, 'h');
    l.markComplete('main', 1, 2n, 'h');
    throwsCode(() => l.markComplete('main', 1, 2n, 'x'), 'LEDGER', /already complete/);
    throwsCode(() => l.markArchived('main', 1, 2n, 'wal/2', 'x'), 'ARCHIVE_CORRUPT');
    assert.equal(l.getSegment('main', 1, 2n)?.state, 'complete');
    l.markArchived('main', 1, 2n, 'wal/2', 'h');
    l.markArchived('main', 1, 2n, 'wal/2', 'h');
    throwsCode(() => l.markArchived('main', 1, 2n, 'wal/2', 'x'), 'ARCHIVE_CONFLICT');
  });

  it('records an upload that finishes after its segment was restarted', () => {
    const l = openLedger();
    l.registerSite(SITE);
    l.upsertReceiving('main', seg(6n));
    l.markArchived('main', 1, 6n, 'wal/6', 'h6');
    assert.equal(l.getSegment('main', 1, 6n)?.state, 'archived');
  });

  it('refuses transitions for unknown segments', () => {
    const l = openLedger();
    l.registerSite(SITE);
    throwsCode(() => l.markComplete('main', 1, 1n, 'h'), 'LEDGER', /upsertReceiving must run first/);
    throwsCode(() => l.markArchived('main', 1, 1n, 'k', 'h'), 'LEDGER');
    throwsCode(() => l.recordAttemptFailure('main', 1, 1n, 'e'), 'LEDGER');
    assert.equal(l.getSegment('main', 1, 1n), null);
  });

  it('keeps segment numbers beyond 2^53 exact', () => {
    const l = openLedger();
    l.registerSite(SITE);
    const n = (1n << 56n) + 3n;
    l.upsertReceiving('main', { ...seg(n), startLsn: 0n });
    assert.equal(l.getSegment('main', 1, n)?.segNo, n);
    assert.equal(l.getSegment('main', 1, n - 1n), null);
  });
});

describe('partials, history, events, transactions', () => {
  it('notes each partial that may be in the archive until it is forgotten', () => {
    const l = openLedger();
    l.registerSite(SITE);
    assert.deepEqual(l.partials('main'), []);
    // Noted before the upload (checksum not known yet), then again once it landed.
    l.notePartial('main', { timeline: 1, segNo: 4n, name: 'p4', bytes: 8192, sha256: '' });
    l.notePartial('main', { timeline: 1, segNo: 4n, name: 'p4', bytes: 8192, sha256: 'a' });
    l.notePartial('main', { timeline: 1, segNo: 5n, name: 'p5', bytes: 100, sha256: 'b' });
    // A timeline switch: a partial of an equal segment number on a new timeline is another object.
    l.notePartial('main', { timeline: 2, segNo: 4n, name: 'p4b', bytes: 100, sha256: 'c' });
    assert.deepEqual(l.partials('main'), [
      { timeline: 1, segNo: 4n, name: 'p4', bytes: 8192, sha256: 'a' },
      { timeline: 2, segNo: 4n, name: 'p4b', bytes: 100, sha256: 'c' },
      { timeline: 1, segNo: 5n, name: 'p5', bytes: 100, sha256: 'b' },
    ]);
    l.forgetPartial('main', 1, 4n);
    assert.deepEqual(l.partials('main').map((p) => p.name), ['p4b', 'p5']);
  });

  it('records history files idempotently and refuses a different one for the same timeline', () => {
    const l = openLedger();
    l.registerSite(SITE);
    assert.equal(l.hasHistory('main', 2), false);
    l.recordHistory('main', 2, '00000002.history', 'h2');
    l.recordHistory('main', 2, '00000002.history', 'h2');
    assert.equal(l.hasHistory('main', 2), true);
    assert.equal(l.hasHistory('main', 3), false);
    throwsCode(() => l.recordHistory('main', 2, '00000002.history', 'other'), 'ARCHIVE_CONFLICT');
  });

  it('records events newest first with the clock given, and prunes old ones', () => {
    const l = openLedger(file, () => new Date('2030-01-02T03:04:05.000Z'));
    l.recordEvent('main', 'error', 'ARCHIVE_CONFLICT', 'wal/X differs');
    l.recordEvent('main', 'info', 'STARTED', 'hello');
    assert.deepEqual(l.recentEvents('main', 2), [
      { site: 'main', at: '2030-01-02T03:04:05.000Z', level: 'info', code: 'STARTED', message: 'hello' },
      { site: 'main', at: '2030-01-02T03:04:05.000Z', level: 'error', code: 'ARCHIVE_CONFLICT', message: 'wal/X differs' },
    ]);
    l.transaction(() => {
      for (let i = 0; i < 1100; i++) l.recordEvent('main', 'info', 'N', String(i));
    });
    const kept = l.recentEvents('main', 5000);
    assert.equal(kept.length, 1000);
    assert.equal(kept[0].message, '1099');
  });

  it('commits a transaction as a whole or not at all', () => {
    const l = openLedger();
    l.registerSite(SITE);
    const r = l.transaction(() => {
      l.upsertReceiving('main', seg(1n));
      l.markComplete('main', 1, 1n, 'h');
      return 'done';
    });
    assert.equal(r, 'done');
    assert.throws(() => l.transaction(() => {
      l.markArchived('main', 1, 1n, 'wal/1', 'h');
      l.advancePositions('main', { archived: 0x999n });
      throw new Error('upload verification failed');
    }), /upload verification failed/);
    assert.equal(l.getSegment('main', 1, 1n)?.state, 'complete');
    assert.equal(l.getSite('main')?.archivedLsn, 0n);
  });
});

describe('read-only view (status)', () => {
  it('reads positions and the last archived segment beside an open writer, and writes nothing', () => {
    const w = openLedger(file, () => new Date('2026-01-02T03:04:05.000Z'));
    w.registerSite(SITE);
    w.advancePositions('main', { received: (1n << 56n) + 0x30n, fsynced: 0x20n, archived: 0x10n });
    for (const n of [3n, 4n]) w.upsertReceiving('main', seg(n));
    w.markComplete('main', 1, 3n, 'a3');
    w.markArchived('main', 1, 3n, 'wal/seg-1-3', 'a3');
    const before = fs.statSync(file).mtimeMs;

    const r = LedgerReader.open(file)!;
    try {
      const row = r.site('main');
      assert.equal(row?.timeline, 1);
      assert.equal(row?.receivedLsn, (1n << 56n) + 0x30n, 'exact past 2^53');
      assert.equal(row?.archivedLsn, 0x10n);
      assert.deepEqual(r.lastArchivedSegment('main'), { name: 'seg-1-3', at: '2026-01-02T03:04:05.000Z' });
      assert.equal(r.site('other'), null);
      assert.equal(r.lastArchivedSegment('other'), null);
    } finally {
      r.close();
    }
    assert.equal(fs.statSync(file).mtimeMs, before);
    w.advancePositions('main', { archived: 0x18n });
    assert.equal(w.getSite('main')?.archivedLsn, 0x18n, 'the writer goes on');
  });

  it('is null where there is no ledger, and creates none', () => {
    assert.equal(LedgerReader.open(file), null);
    assert.equal(fs.existsSync(file), false);
  });

  it('a file that is not a ledger is a typed LEDGER error naming it', () => {
    fs.writeFileSync(file, 'not a database, just text long enough to be looked at by SQLite'.repeat(20));
    throwsCode(() => {
      const r = LedgerReader.open(file);
      try {
        r?.site('main');
      } finally {
        r?.close();
      }
    }, 'LEDGER', new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
  });
});

describe('crash safety', () => {
  const ledgerJs = path.resolve(__dirname, '../../src/ledger/ledger.js');

  // The child does its work, then kills itself with SIGKILL: no exit handlers, no close, no
  // checkpoint. Whatever the reopened ledger shows was committed before the call returned.
  function runAndKill(body: string): void {
    const script = `
      const { Ledger } = require(${JSON.stringify(ledgerJs)});
      const l = Ledger.open(${JSON.stringify(file)});
      ${body}
      process.kill(process.pid, 'SIGKILL');
      setTimeout(() => process.exit(3), 5000);
    `;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(res.signal, 'SIGKILL', `child did not die by SIGKILL: status ${res.status}, stderr ${res.stderr}`);
  }

  it('finds a state written just before a SIGKILL', () => {
    runAndKill(`
      l.registerSite(${JSON.stringify(SITE)});
      l.upsertReceiving('main', { timeline: 1, segNo: 12n, name: 'S12', startLsn: 0xC000000n, size: ${SEG} });
      l.markComplete('main', 1, 12n, 'sha-12');
      l.advancePositions('main', { received: 0xD000000n, fsynced: 0xD000000n });
    `);
    // Still in the WAL file, not checkpointed: the reopen must recover it from there.
    assert.ok(fs.statSync(`${file}-wal`).size > 0);

    const l = openLedger();
    const row = l.getSegment('main', 1, 12n);
    assert.equal(row?.state, 'complete');
    assert.equal(row?.sha256, 'sha-12');
    assert.equal(l.getSite('main')?.fsyncedLsn, 0xD000000n);
  });

  it('loses a transaction killed before it committed, and nothing else', () => {
    runAndKill(`
      l.registerSite(${JSON.stringify(SITE)});
      l.upsertReceiving('main', { timeline: 1, segNo: 12n, name: 'S12', startLsn: 0xC000000n, size: ${SEG} });
      l.markComplete('main', 1, 12n, 'sha-12');
      l.transaction(() => {
        l.markArchived('main', 1, 12n, 'wal/S12', 'sha-12');
        l.advancePositions('main', { archived: 0xD000000n });
        process.kill(process.pid, 'SIGKILL');
      });
    `);
    const l = openLedger();
    assert.equal(l.getSegment('main', 1, 12n)?.state, 'complete');
    assert.equal(l.getSite('main')?.archivedLsn, 0n);
  });
});
