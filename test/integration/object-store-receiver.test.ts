/**
 * The receiver suite against each object store (S3 on s3rver, Azure Blob Storage on Azurite),
 * a real server over HTTP found by the receiver through its SDK's standard environment
 * variables only (the one-site form needs nothing else).
 */
import { after, before, describe, it } from 'node:test';
import * as path from 'node:path';
import { crashScenario } from '../helpers/crash-scenario';
import { OBJECT_STORES, S3_STORE, type ObjectStore } from '../helpers/object-stores';
import { streamingScenario } from '../helpers/streaming-scenario';

for (const kind of OBJECT_STORES)
describe(`the receiver with an archive in ${kind.name}`, () => {
  let store: ObjectStore;
  before(async () => {
    store = await kind.start();
  });
  after(async () => {
    await store?.destroy();
  });

  describe('streaming (PostgreSQL 15)', () => {
    // Beyond the crash scenario below, which compares 1 MiB segments byte for byte on every
    // store, this checks what does not depend on the store (pg_waldump reads them, the
    // start-up line): one store is enough, and the suite stays shorter.
    if (kind === S3_STORE)
    it('archives byte-identical 1 MiB segments that pg_waldump reads', async () => {
      await streamingScenario({ major: 15, walSegSizeMiB: 1, store });
    });

    it('archives byte-identical 16 MiB segments (multipart or block uploads)', async () => {
      await streamingScenario({ major: 15, walSegSizeMiB: 16, scale: 5, seconds: 5, store });
    });
  });

  describe('crash safety', () => {
    it('loses nothing and duplicates nothing across 10 kills', async () => {
      await crashScenario(10, (work) => store.url(`${path.basename(work)}/main`));
    });
  });
});
