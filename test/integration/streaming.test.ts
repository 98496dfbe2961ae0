import { describe, it } from 'node:test';
import { streamingScenario } from '../helpers/streaming-scenario';
import { DEFAULT_MAJOR } from '../helpers/pg-cluster';

describe(`streaming into a local archive (PostgreSQL ${DEFAULT_MAJOR})`, () => {
  it('archives byte-identical 1 MiB segments that pg_waldump reads', async () => {
    await streamingScenario({ major: DEFAULT_MAJOR, walSegSizeMiB: 1 });
  });

  it('archives byte-identical 16 MiB segments that pg_waldump reads', async () => {
    await streamingScenario({ major: DEFAULT_MAJOR, walSegSizeMiB: 16, scale: 5, seconds: 5 });
  });

  it('archives byte-identical segments over TLS (sslmode=require)', async () => {
    await streamingScenario({ major: DEFAULT_MAJOR, walSegSizeMiB: 1, tls: true });
  });
});
