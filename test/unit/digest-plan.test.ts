import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DigestPlan } from '../../src/restore/digest-plan';
import { DIGEST_RANGE } from '../../src/restore/file-writer-messages';

describe('DigestPlan: what a delta check reads of the files there', () => {
  test('by blocks, a file larger than a range is read in ranges, the last to its end; others whole', () => {
    const plan = new DigestPlan(3, [10, 2 * DIGEST_RANGE + 1, DIGEST_RANGE], true);
    assert.deepEqual(plan.items, [
      { file: 0 },
      { file: 1, range: [0, DIGEST_RANGE] },
      { file: 1, range: [DIGEST_RANGE, 2 * DIGEST_RANGE] },
      { file: 1, range: [2 * DIGEST_RANGE, Number.MAX_SAFE_INTEGER] },
      { file: 2 },
    ]);
  });

  test('not by blocks, every file is read whole', () => {
    assert.deepEqual(new DigestPlan(2, [3 * DIGEST_RANGE, 1], false).items, [{ file: 0 }, { file: 1 }]);
  });

  test('a file in ranges is done when its last range is, whatever their order: sizes summed, hashes in order', () => {
    const plan = new DigestPlan(1, [2 * DIGEST_RANGE + 1], true);
    const [a, b, c] = plan.items;
    const facts = (size: number, byte: number) => ({ size, checksum: '', blocks: Buffer.alloc(8, byte) });
    assert.equal(plan.done(c, facts(1, 3)), null);
    assert.equal(plan.done(a, facts(DIGEST_RANGE, 1)), null);
    const whole = plan.done(b, facts(DIGEST_RANGE, 2));
    assert.equal(whole?.size, 2 * DIGEST_RANGE + 1);
    assert.deepEqual(whole?.blocks, Buffer.concat([Buffer.alloc(8, 1), Buffer.alloc(8, 2), Buffer.alloc(8, 3)]));
  });

  test('a whole file is done at once', () => {
    const plan = new DigestPlan(1, [5], true);
    const facts = { size: 5, checksum: 'x' };
    assert.equal(plan.done(plan.items[0], facts), facts);
  });
});
