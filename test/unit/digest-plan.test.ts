import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DigestPlan } from '../../src/restore/digest-plan';
import { DIGEST_BATCH_BYTES, DIGEST_BATCH_FILES, DIGEST_RANGE } from '../../src/restore/file-writer-messages';

describe('DigestPlan: what a delta check reads of the files there', () => {
  test('by blocks, a file larger than a range is read in ranges, the last to its end; smaller files together', () => {
    const plan = new DigestPlan(4, [10, 2 * DIGEST_RANGE + 1, DIGEST_RANGE, 20], true);
    assert.deepEqual(plan.items, [
      { files: [0] },
      { files: [1], range: [0, DIGEST_RANGE] },
      { files: [1], range: [DIGEST_RANGE, 2 * DIGEST_RANGE] },
      { files: [1], range: [2 * DIGEST_RANGE, Number.MAX_SAFE_INTEGER] },
      { files: [2] },
      { files: [3] },
    ]);
  });

  test('small files go together up to a count and a size, in order', () => {
    const n = DIGEST_BATCH_FILES + 3;
    const counted = new DigestPlan(n, new Array<number>(n).fill(100), true).items;
    assert.deepEqual(
      counted.map((i) => i.files),
      [Array.from({ length: DIGEST_BATCH_FILES }, (_, i) => i), [DIGEST_BATCH_FILES, DIGEST_BATCH_FILES + 1, DIGEST_BATCH_FILES + 2]],
    );
    const half = DIGEST_BATCH_BYTES / 2;
    assert.deepEqual(
      new DigestPlan(4, [half, half, 1, half], true).items.map((i) => i.files),
      [[0, 1], [2, 3]],
    );
  });

  test('not by blocks, every file is read whole, however large', () => {
    assert.deepEqual(new DigestPlan(2, [3 * DIGEST_RANGE, 1], false).items, [{ files: [0] }, { files: [1] }]);
  });

  test('a file in ranges is done when its last range is, whatever their order: sizes summed, hashes in order', () => {
    const plan = new DigestPlan(1, [2 * DIGEST_RANGE + 1], true);
    const [a, b, c] = plan.items;
    const facts = (size: number, byte: number) => [{ size, checksum: '', blocks: Buffer.alloc(8, byte) }];
    assert.deepEqual(plan.done(c, facts(1, 3)), []);
    assert.deepEqual(plan.done(a, facts(DIGEST_RANGE, 1)), []);
    const done = plan.done(b, facts(DIGEST_RANGE, 2));
    assert.equal(done.length, 1);
    const [file, whole] = done[0];
    assert.equal(file, 0);
    assert.equal(whole.size, 2 * DIGEST_RANGE + 1);
    assert.deepEqual(whole.blocks, Buffer.concat([Buffer.alloc(8, 1), Buffer.alloc(8, 2), Buffer.alloc(8, 3)]));
  });

  test('the files of a request are done at once, each with its own facts', () => {
    const plan = new DigestPlan(2, [5, 6], true);
    const facts = [
      { size: 5, checksum: 'a' },
      { size: 6, checksum: 'b' },
    ];
    assert.deepEqual(plan.done(plan.items[0], facts), [
      [0, facts[0]],
      [1, facts[1]],
    ]);
  });
});
