import { describe, it } from 'node:test';
import { streamingScenario } from '../helpers/streaming-scenario';

describe('streaming into a local archive (PostgreSQL 15)', () => {
  it('archives byte-identical 1 MiB segments that pg_waldump reads', async () => {
    await streamingScenario({ major: 15, walSegSizeMiB: 1 });
  });

  it('archives byte-identical 16 MiB segments that pg_waldump reads', async () => {
    await streamingScenario({ major: 15, walSegSizeMiB: 16, scale: 5, seconds: 5 });
  });

  it('archives byte-identical segments over TLS (sslmode=require)', async () => {
    await streamingScenario({ major: 15, walSegSizeMiB: 1, tls: true });
  });
});
