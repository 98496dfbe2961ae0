import { describe, it } from 'node:test';
import { availableMajors } from '../helpers/pg-cluster';
import { streamingScenario } from '../helpers/streaming-scenario';

describe('streaming works on every supported major version', () => {
  for (const major of [13, 14, 16, 17, 18]) {
    it(`PostgreSQL ${major}`, { skip: !availableMajors().includes(major) && `PostgreSQL ${major} binaries not installed` }, async () => {
      await streamingScenario({ major, walSegSizeMiB: 1 });
    });
  }
});
