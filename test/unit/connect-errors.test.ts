import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { incrementalRefusal } from '../../src/backup/incremental-parent';
import { isWalvaultError, WalvaultError } from '../../src/errors';
import { mapPgError, sqlStateOf } from '../../src/postgres/connect-errors';

const target = { description: 'db1:5432 user=walvault', user: 'walvault', slot: 'walvault_main' };

describe('mapPgError: WAL the server no longer has', () => {
  test('an invalidated slot and removed WAL both end the run naming the gap', () => {
    const cases = [
      { code: '55000', message: 'can no longer get changes from replication slot "walvault_main"' },
      // PostgreSQL 18's START_REPLICATION on an invalidated physical slot.
      { code: '55000', message: 'can no longer access replication slot "walvault_main"' },
      { code: '58P01', message: 'requested WAL segment 000000010000000000000003 has already been removed' },
    ];
    for (const c of cases) {
      const err = mapPgError(Object.assign(new Error(c.message), { code: c.code }), target, 'START_REPLICATION');
      assert.equal(err.code, 'PG_WAL_REMOVED', c.message);
      assert.match(err.message, /no longer has the WAL needed to continue/);
      assert.ok(err.message.includes(c.message), 'the server\'s own words are kept');
    }
  });

  test('55000 answering another command is not read as a gap, whatever its words', () => {
    for (const message of ['cannot execute in a read-only transaction', 'can no longer access replication slot "walvault_main"']) {
      const err = mapPgError(Object.assign(new Error(message), { code: '55000' }), target);
      assert.equal(err.code, 'PG_SERVER_ERROR', message);
    }
    // Answering START_REPLICATION, the code decides even in another language.
    const translated = mapPgError(Object.assign(new Error('kann nicht mehr auf Replikations-Slot zugreifen'), { code: '55000' }), target, 'START_REPLICATION');
    assert.equal(translated.code, 'PG_WAL_REMOVED');
  });
});

describe('refusals told apart by SQLSTATE, not by their words', () => {
  const pgError = (code: string, message: string) => Object.assign(new Error(message), { code });

  test('sqlStateOf finds the server\'s code under the errors that wrap it', () => {
    const inner = pgError('55000', 'anything at all');
    const wrapped = new WalvaultError('PG_BACKUP_REFUSED', 'refused', { cause: inner });
    assert.equal(sqlStateOf(wrapped), '55000');
    assert.equal(sqlStateOf(new WalvaultError('BACKUP_ABORTED', 'outer', { cause: wrapped })), '55000');
    assert.equal(sqlStateOf(Object.assign(new Error('x'), { code: 'ECONNRESET' })), undefined, 'a network code is no SQLSTATE');
    assert.equal(sqlStateOf(Object.assign(new Error('x'), { code: 'EPIPE' })), undefined, 'five capitals, still no SQLSTATE');
  });

  test('an incremental refused before it began with 55000 is impossible; another SQLSTATE is left to the caller', () => {
    const refused = (code: string) => new WalvaultError('PG_BACKUP_REFUSED', 'server said no', { cause: pgError(code, 'words that do not matter') });
    const impossible = incrementalRefusal(refused('55000'), 'base_1', 'backup');
    assert.ok(isWalvaultError(impossible, 'BACKUP_INCREMENTAL_IMPOSSIBLE'));
    assert.match((impossible as WalvaultError).message, /against base_1/);
    // A server without zstd refuses with 0A000: the caller steps down its compression.
    assert.ok(isWalvaultError(incrementalRefusal(refused('0A000'), 'base_1', 'backup'), 'PG_BACKUP_REFUSED'));
    // A server error after the backup began is no refusal of the incremental.
    const midway = new WalvaultError('PG_SERVER_ERROR', 'mid-stream', { cause: pgError('55000', 'x') });
    assert.equal(incrementalRefusal(midway, 'base_1', 'backup'), midway);
    // Any server error answering UPLOAD_MANIFEST: the server cannot use the parent's manifest.
    assert.ok(isWalvaultError(incrementalRefusal(new WalvaultError('PG_SERVER_ERROR', 'bad manifest', { cause: pgError('XX000', 'x') }), 'base_1', 'manifest'), 'BACKUP_INCREMENTAL_IMPOSSIBLE'));
  });

  test('codes alone decide where PostgreSQL gives a cause its own SQLSTATE', () => {
    const cases: Array<[string, string]> = [
      ['28P01', 'PG_AUTH_FAILED'],
      ['42501', 'PG_NO_REPLICATION_ROLE'],
      ['55006', 'PG_SLOT_ACTIVE'],
      ['58P01', 'PG_WAL_REMOVED'],
      ['53300', 'PG_WALSENDERS_BUSY'],
      ['28000', 'PG_HBA_REJECTED'],
    ];
    for (const [code, expected] of cases) {
      // Translated words (lc_messages): the code still decides.
      assert.equal(mapPgError(pgError(code, 'Fehler: etwas ist schiefgegangen'), target).code, expected, code);
    }
  });
});
