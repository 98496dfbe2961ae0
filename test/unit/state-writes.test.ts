import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Logger } from 'pino';
import { StateWrites } from '../../src/daemon/state-writes';
import { isWalvaultError, WalvaultError } from '../../src/errors';
import { isDiskFull } from '../../src/util/disk-full';

function recordingLog(): { log: Logger; lines: Array<{ level: string; msg: string }> } {
  const lines: Array<{ level: string; msg: string }> = [];
  const at = (level: string) => (_obj: unknown, msg: string) => lines.push({ level, msg });
  return { log: { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') } as unknown as Logger, lines };
}

const full = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
const sqliteFull = () => Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });

describe('isDiskFull', () => {
  test('ENOSPC, EDQUOT, SQLITE_FULL, SQLITE_IOERR_SHMSIZE and typed errors caused by them; nothing else', () => {
    for (const code of ['ENOSPC', 'EDQUOT', 'SQLITE_FULL', 'SQLITE_IOERR_SHMSIZE']) assert.ok(isDiskFull(Object.assign(new Error(code), { code })), code);
    for (const code of ['EACCES', 'EIO', 'SQLITE_BUSY', 'SQLITE_IOERR_WRITE', undefined]) assert.ok(!isDiskFull(Object.assign(new Error('x'), { code })), String(code));
    assert.ok(isDiskFull(new WalvaultError('STATE_DISK_FULL', 'x')));
    assert.ok(isDiskFull(new WalvaultError('STATE_DIR_UNWRITABLE', 'x', { cause: full() })));
    assert.ok(!isDiskFull(null));
  });
});

describe('StateWrites', () => {
  test('must: waits out a full disk and lands the write; one line naming the directory and the fix, and one when room is back', async () => {
    const { log, lines } = recordingLog();
    const writes = new StateWrites('/var/lib/walvault/state/main', log, new AbortController().signal);
    let calls = 0;
    const result = await writes.must('recording a segment', () => {
      calls++;
      if (calls < 3) throw calls === 1 ? full() : sqliteFull();
      return 'landed';
    });
    assert.equal(result, 'landed');
    assert.equal(calls, 3);
    assert.equal(writes.fullForMs, null, 'room again');
    const errors = lines.filter((l) => l.level === 'error');
    assert.equal(errors.length, 1, 'one line, not one per attempt');
    assert.match(errors[0].msg, /^state directory \/var\/lib\/walvault\/state\/main is full: recording a segment failed \(ENOSPC: .*\); free space on its filesystem/);
    assert.equal(lines.filter((l) => /has room again/.test(l.msg)).length, 1);
  });

  test('must: other errors are thrown at once; a stop ends the wait with the typed error', async () => {
    const { log } = recordingLog();
    const stop = new AbortController();
    const writes = new StateWrites('/s', log, stop.signal);
    await assert.rejects(writes.must('x', () => {
      throw new Error('constraint failed');
    }), /constraint failed/);
    const waiting = writes.must('recording a segment', () => {
      throw full();
    });
    setTimeout(() => stop.abort(), 50);
    await assert.rejects(waiting, (err) => isWalvaultError(err, 'STATE_DISK_FULL') && /recording a segment/.test(err.message));
    assert.notEqual(writes.fullForMs, null);
  });

  test('may: a full disk skips the record (false) and marks the state full until a waited write lands; other errors are thrown', () => {
    const { log, lines } = recordingLog();
    const writes = new StateWrites('/s', log, new AbortController().signal);
    assert.equal(writes.may('positions', () => undefined), true);
    assert.equal(writes.may('positions', () => {
      throw sqliteFull();
    }), false);
    assert.notEqual(writes.fullForMs, null);
    // A small record that lands says nothing about room: still full.
    assert.equal(writes.may('event', () => undefined), true);
    assert.notEqual(writes.fullForMs, null);
    writes.worked();
    assert.equal(writes.fullForMs, null);
    assert.throws(() => writes.may('x', () => {
      throw new WalvaultError('ARCHIVE_CONFLICT', 'different bytes');
    }), /different bytes/);
    // Full again within the minute: no second error line.
    writes.may('positions', () => {
      throw full();
    });
    assert.equal(lines.filter((l) => l.level === 'error').length, 1);
  });
});
