import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { OutageLog } from '../../src/daemon/outage-log';

describe('OutageLog', () => {
  test('logs the first failure, then one per interval, and ends with a summary', () => {
    const o = new OutageLog(30000);
    assert.equal(o.recovered(1000), null, 'no outage, nothing to report');
    const logged = [0, 500, 1500, 3500, 7500, 15500, 29999, 30000, 45000, 60001].map((t) => o.failed(100000 + t));
    assert.deepEqual(logged, [true, false, false, false, false, false, false, true, false, true]);
    assert.equal(o.failures, 10);
    assert.equal(o.failingForMs(100000 + 61000), 61000);
    assert.deepEqual(o.recovered(100000 + 62000), { failingForMs: 62000, failures: 10 });
    assert.equal(o.recovered(100000 + 63000), null, 'reported once');
    assert.equal(o.failingForMs(), null);
    // A new outage is logged at once again.
    assert.equal(o.failed(200000), true);
    assert.equal(o.failed(200001), false);
    assert.equal(o.failures, 2);
  });
});
