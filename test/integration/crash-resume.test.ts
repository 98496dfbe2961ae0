/**
 * kill -9 of the receiver at random moments during a pgbench run, local archive (the S3 run
 * is in s3-receiver.test.ts). The kill delays come from a seeded PRNG; the seed and each delay
 * are printed, and a failure names the seed: replay it with
 *   WALVAULT_TEST_SEED=<seed> node --test dist/test/integration/crash-resume.test.js
 */
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { crashScenario } from '../helpers/crash-scenario';

const KILLS = 12;

describe('crash safety: kill -9 during a pgbench run', () => {
  it(`loses nothing and duplicates nothing across ${KILLS} kills`, async () => {
    await crashScenario(KILLS, (work) => path.join(work, 'archive'));
  });
});
