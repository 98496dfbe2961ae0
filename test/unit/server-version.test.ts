import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverVersionText } from '../../src/postgres/server-version';

test('server_version_num is written as people write the version', () => {
  assert.equal(serverVersionText(150018), '15.18');
  assert.equal(serverVersionText(170002), '17.2');
  assert.equal(serverVersionText(180000), '18.0');
  assert.equal(serverVersionText(100023), '10.23');
  // Before 10 the major version had two parts.
  assert.equal(serverVersionText(90624), '9.6.24');
  assert.equal(serverVersionText(90500), '9.5.0');
});
