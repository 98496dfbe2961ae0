import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mapPgError } from '../../src/postgres/connect-errors';

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
      const err = mapPgError(Object.assign(new Error(c.message), { code: c.code }), target);
      assert.equal(err.code, 'PG_WAL_REMOVED', c.message);
      assert.match(err.message, /no longer has the WAL needed to continue/);
      assert.ok(err.message.includes(c.message), 'the server\'s own words are kept');
    }
  });

  test('other 55000 errors are not read as a gap', () => {
    const err = mapPgError(Object.assign(new Error('cannot execute in a read-only transaction'), { code: '55000' }), target);
    assert.equal(err.code, 'PG_SERVER_ERROR');
  });
});
