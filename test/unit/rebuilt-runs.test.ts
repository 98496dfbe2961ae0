/**
 * A rebuilt file's CRC-32C from the runs written into it equals the CRC of the file's bytes
 * (zeros between the runs), before and after runs that meet are merged; and the in-flight
 * counter the patcher uses waits for every piece and keeps the first failure.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { crc32c } from '@node-rs/crc32';
import { crcOfRuns, foldCrcs, mergeRuns, type Run } from '../../src/restore/rebuilt-runs';
import { InFlight } from '../../src/util/in-flight';

describe('the CRC-32C of a rebuilt file from its runs', () => {
  test('matches the whole file, with runs out of order, meeting or apart; merged runs give the same', () => {
    const file = Buffer.alloc(64 * 1024);
    // [at, length]: two pairs that meet, one alone, a gap of zeros at the start and the end.
    const spans: Array<[number, number]> = [[40960, 8192], [8192, 4096], [12288, 8192], [49152, 100], [30000, 5000]];
    const runs: Run[] = spans.map(([at, length]) => {
      const bytes = randomBytes(length);
      bytes.copy(file, at);
      return { at, length, crc: crc32c(bytes) >>> 0 };
    });
    const want = crc32c(file) >>> 0;
    assert.equal(crcOfRuns(runs, file.length), want);
    const merged = mergeRuns(runs);
    assert.equal(merged.length, 3, `merged: ${JSON.stringify(merged.map((r) => [r.at, r.length]))}`);
    assert.equal(crcOfRuns(merged, file.length), want);
  });

  test('stretches in order fold to the CRC of their concatenation', () => {
    const parts = [randomBytes(1), randomBytes(8192), randomBytes(3000)];
    assert.equal(foldCrcs(parts.map((p) => ({ length: p.length, crc: crc32c(p) >>> 0 }))), crc32c(Buffer.concat(parts)) >>> 0);
  });
});

describe('counting work in flight', () => {
  test('drain waits for every piece and throws the first failure', async () => {
    const work = new InFlight();
    const ends: Array<(err: Error | null) => void> = [];
    for (let i = 0; i < 3; i++) work.track((done) => ends.push(done));
    let drained = false;
    const waiting = work.drain().then(
      () => (drained = true),
      (err: Error) => err,
    );
    ends[1](new Error('second failed'));
    ends[0](null);
    await new Promise((r) => setImmediate(r));
    assert.equal(drained, false, 'one piece still in flight');
    ends[2](new Error('third failed'));
    assert.equal(((await waiting) as Error).message, 'second failed');
  });

  test('drain with nothing in flight resolves at once', async () => {
    await new InFlight().drain();
  });
});
