/**
 * The receiver suite against S3: a real s3rver over HTTP, found by the receiver through the
 * standard AWS_* environment variables only (the one-site form needs nothing else).
 */
import { after, before, describe, it } from 'node:test';
import * as path from 'node:path';
import { crashScenario } from '../helpers/crash-scenario';
import { S3Server } from '../helpers/s3-server';
import { streamingScenario } from '../helpers/streaming-scenario';

let server: S3Server;
before(async () => {
  server = await S3Server.start();
  server.useInThisProcess();
});
after(async () => {
  await server?.destroy();
});

describe('streaming into an S3 archive (PostgreSQL 15)', () => {
  it('archives byte-identical 1 MiB segments that pg_waldump reads', async () => {
    await streamingScenario({ major: 15, walSegSizeMiB: 1, s3: server });
  });

  it('archives byte-identical 16 MiB segments (multipart uploads)', async () => {
    await streamingScenario({ major: 15, walSegSizeMiB: 16, scale: 5, seconds: 5, s3: server });
  });
});

describe('crash safety with an S3 archive', () => {
  it('loses nothing and duplicates nothing across 10 kills', async () => {
    await crashScenario(10, (work) => server.url(`${path.basename(work)}/main`));
  });
});
