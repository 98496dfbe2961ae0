/**
 * One storage suite, three backends: the local directory, S3 (a real s3rver over HTTP) and
 * Azure Blob Storage (a real Azurite over HTTP). Then what is Azure's own: its credentials and
 * that no secret reaches an error, its deadlines against a hung Azurite, an outage, and the
 * archive's rules (immutable puts, read-back) on top of each backend.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { createClientLogger } from '@azure/logger';
import { Archive } from '../../src/archive/archive';
import { isWalvaultError, WalvaultError } from '../../src/errors';
import { AzureStorage, type AzureSettings } from '../../src/storage/azure';
import { LocalStorage } from '../../src/storage/local';
import { storageFromUrl } from '../../src/storage/open';
import { setSdkLogSink } from '../../src/storage/sdk-log';
import { S3Storage } from '../../src/storage/s3';
import type { Storage } from '../../src/storage/storage';
import { AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer } from '../helpers/azurite-server';
import { chunksOf, everyCallTimesOut, progressNotTotal, stallsMidBody, timesOut as timesOutWithin } from '../helpers/deadline-checks';
import { removeDir, tmpDir } from '../helpers/pg-cluster';
import { S3Server } from '../helpers/s3-server';
import { storageSuite } from '../helpers/storage-suite';

const AZURE_VARS = ['AZURE_STORAGE_CONNECTION_STRING', 'AZURE_STORAGE_ACCOUNT', 'AZURE_STORAGE_KEY', 'AZURE_STORAGE_SAS_TOKEN'];
const savedEnv = Object.fromEntries(AZURE_VARS.map((v) => [v, process.env[v]]));

/** Runs `fn` with exactly these Azure variables set (the others unset), then restores them. */
async function withAzureEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const before = Object.fromEntries(AZURE_VARS.map((v) => [v, process.env[v]]));
  for (const v of AZURE_VARS) delete process.env[v];
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const v of AZURE_VARS) {
      if (before[v] === undefined) delete process.env[v];
      else process.env[v] = before[v];
    }
  }
}

storageSuite('local directory', async () => {
  const dir = tmpDir('walvault-storage-');
  return { storage: new LocalStorage(path.join(dir, 'archive')), cleanup: async () => removeDir(dir) };
});

let server: S3Server;
let azurite: AzuriteServer;
let n = 0;
before(async () => {
  [server, azurite] = await Promise.all([S3Server.start(), AzuriteServer.start()]);
  azurite.useKeyInThisProcess();
});
after(async () => {
  await Promise.all([server?.destroy(), azurite?.destroy()]);
  for (const v of AZURE_VARS) {
    if (savedEnv[v] === undefined) delete process.env[v];
    else process.env[v] = savedEnv[v];
  }
});

storageSuite('S3 (s3rver)', async () => {
  // A fresh prefix per test, small parts and small list pages so multipart uploads and
  // pagination are exercised.
  const prefix = `suite-${++n}`;
  const storage = new S3Storage({ bucket: server.bucket, prefix: `${prefix}/` }, { ...server.settings(), partSizeBytes: 5 * 1024 * 1024, listPageSize: 4 });
  return { storage, cleanup: async () => undefined };
});

/** An Azure backend on the test's Azurite, under a fresh prefix. */
function azureStorage(extra: AzureSettings = {}, prefix = `azure-${++n}/`): AzureStorage {
  return new AzureStorage({ container: azurite.container, prefix }, { ...azurite.settings(), ...extra });
}

storageSuite('Azure (Azurite)', async () => {
  // Small blocks and small list pages so block uploads and pagination are exercised.
  return { storage: azureStorage({ blockSizeBytes: 1024 * 1024, listPageSize: 4 }), cleanup: async () => undefined };
});

/** The archive's write rules hold on every backend: they sit above the Storage interface. */
function archiveRules(label: string, make: () => Storage): void {
  describe(`archive rules on ${label}`, () => {
    it('an immutable put of the same bytes is a no-op, of other bytes ARCHIVE_CONFLICT; a damaged object fails its read', async () => {
      const storage = make();
      try {
        const archive = new Archive(storage);
        const key = Archive.walKey('000000010000000000000007');
        const body = randomBytes(100_000);
        assert.equal(await archive.putImmutable(key, body), 'stored');
        assert.equal(await archive.putImmutable(key, Buffer.from(body)), 'unchanged');
        const other = Buffer.from(body);
        other[5000] ^= 1;
        await assert.rejects(archive.putImmutable(key, other), (err: unknown) => isWalvaultError(err, 'ARCHIVE_CONFLICT'));
        assert.ok((await archive.get(key))?.equals(body), 'the stored object stays');

        // A byte changed in the store, behind walvault's back, is caught on read.
        const stored = (await storage.get(key))!;
        stored[stored.length - 10] ^= 1;
        await storage.put(key, stored);
        await assert.rejects(archive.get(key), (err: unknown) => isWalvaultError(err, 'ARCHIVE_CORRUPT'));
      } finally {
        await storage.close();
      }
    });
  });
}

archiveRules('a local directory', () => new LocalStorage(path.join(tmpDir('walvault-rules-'), 'archive')));
archiveRules('S3 (s3rver)', () => new S3Storage({ bucket: server.bucket, prefix: `rules-${++n}/` }, server.settings()));
archiveRules('Azure (Azurite)', () => azureStorage());

/** Every way a secret could leave an error: message, fix, cause chain, inspection, JSON. */
function assertNoSecret(err: unknown, secrets: string[]): void {
  const shown = [String((err as Error)?.message), (err as WalvaultError)?.fix ?? '', inspect(err, { depth: 10 }), JSON.stringify(err) ?? ''].join('\n');
  for (const s of secrets) {
    assert.ok(!shown.includes(s), `a secret (${s.slice(0, 6)}...) appears in the error: ${shown.slice(0, 2000)}`);
  }
}

describe('Azure (Azurite): credentials', () => {
  const roundTrip = async (s: Storage) => {
    try {
      const body = randomBytes(3000);
      await s.put('creds/x', body);
      assert.ok((await s.get('creds/x'))?.equals(body));
      assert.ok(!s.description.includes(AZURITE_KEY), s.description);
    } finally {
      await s.close();
    }
  };

  it('a connection string, an account key and a SAS token each reach the container; the URL form works through storageFromUrl', async () => {
    await withAzureEnv({ AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString() }, () => roundTrip(storageFromUrl(azurite.url('creds-cs'))));
    await withAzureEnv({ AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_KEY: AZURITE_KEY }, () => roundTrip(storageFromUrl(azurite.url('creds-key'), {}, {}, { endpoint: azurite.endpoint })));
    const sas = AzuriteServer.sasToken();
    await withAzureEnv({ AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_SAS_TOKEN: sas }, () => roundTrip(azureStorage()));
  });

  it('the connection string wins over an account key, as documented', async () => {
    const wrongKey = randomBytes(64).toString('base64');
    await withAzureEnv({ AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString(), AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_KEY: wrongKey }, () => roundTrip(azureStorage()));
  });

  it('no account and no credentials: CONFIG_INVALID naming every source', async () => {
    await withAzureEnv({}, async () => {
      assert.throws(
        () => new AzureStorage({ container: azurite.container, prefix: '' }, { endpoint: azurite.endpoint }),
        (err: unknown) => isWalvaultError(err, 'CONFIG_INVALID') && /AZURE_STORAGE_CONNECTION_STRING/.test(err.fix) && /managed identity/.test(err.fix),
      );
    });
  });

  it('a wrong key, a wrong connection string and a forged SAS fail with STORAGE_IO naming the fix, and no secret appears in the error', async () => {
    const wrongKey = randomBytes(64).toString('base64');
    const forgedSas = `sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=${encodeURIComponent(randomBytes(32).toString('base64'))}`;
    const cases: Array<[string, Record<string, string>, string[]]> = [
      ['account key', { AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_KEY: wrongKey }, [wrongKey]],
      ['connection string', { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString().replace(AZURITE_KEY, wrongKey) }, [wrongKey]],
      ['SAS token', { AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_SAS_TOKEN: forgedSas }, [forgedSas, decodeURIComponent(forgedSas.split('sig=')[1])]],
    ];
    for (const [what, vars, secrets] of cases) {
      await withAzureEnv(vars, async () => {
        const s = azureStorage({ attempts: 1 });
        try {
          for (const call of [() => s.put('x', Buffer.from('x')), () => s.get('x'), () => s.list('')]) {
            const err = await call().then(
              () => assert.fail(`${what}: the call succeeded`),
              (e: unknown) => e,
            );
            assert.ok(isWalvaultError(err, 'STORAGE_IO'), `${what}: ${String(err)}`);
            assert.match(err.message, /Azure (put|get|list) of azure:\/\/walvault-test\//);
            assert.match(err.fix, /credentials/, `${what}: the fix names the credentials: ${err.fix}`);
            assertNoSecret(err, [...secrets, AZURITE_KEY]);
          }
        } finally {
          await s.close();
        }
      });
    }
  });

  it("the SDK's log: its warnings reach the log sink scrubbed of secrets, its request log nothing, the console nothing", async () => {
    const wrongKey = randomBytes(64).toString('base64');
    const sinkLines: string[] = [];
    const consoleLines: string[] = [];
    const saved = { warn: console.warn, log: console.log, error: console.error, info: console.info };
    for (const k of ['warn', 'log', 'error', 'info'] as const) console[k] = (...args: unknown[]) => void consoleLines.push(args.map(String).join(' '));
    const stderrWrite = process.stderr.write;
    process.stderr.write = ((chunk: unknown) => (consoleLines.push(String(chunk)), true)) as typeof process.stderr.write;
    setSdkLogSink({ warn: (_o, msg) => void sinkLines.push(msg) });
    try {
      await withAzureEnv({ AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT, AZURE_STORAGE_KEY: wrongKey }, async () => {
        const s = azureStorage({ attempts: 2 });
        try {
          await assert.rejects(s.get('x'));
          const sdk = createClientLogger('storage-blob');
          sdk.warning(`a warning that quotes the key ${wrongKey}`);
          sdk.info(`a request line that quotes the key ${wrongKey}`);
          sdk.error(`an error line that quotes the key ${wrongKey}`);
        } finally {
          await s.close();
        }
      });
    } finally {
      Object.assign(console, saved);
      process.stderr.write = stderrWrite;
      setSdkLogSink(null);
    }
    assert.deepEqual(consoleLines, [], 'nothing on the console or stderr');
    assert.equal(sinkLines.length, 1, `one warning in the sink: ${JSON.stringify(sinkLines)}`);
    assert.match(sinkLines[0], /a warning that quotes the key \*\*\*/);
    assert.ok(!sinkLines.join('\n').includes(wrongKey));
  });

  it('a missing container is STORAGE_IO telling to create it, not an absent object', async () => {
    const s = new AzureStorage({ container: 'no-such-container', prefix: 'p/' }, { ...azurite.settings(), attempts: 1 });
    try {
      for (const call of [() => s.get('x'), () => s.head('x'), () => s.list(''), () => s.put('x', Buffer.from('x'))]) {
        await assert.rejects(call(), (err: unknown) => isWalvaultError(err, 'STORAGE_IO') && /create the container/.test(err.fix));
      }
    } finally {
      await s.close();
    }
  });
});

/** Short, so the tests stay quick, and still longer than a busy machine's pauses. */
const TIMEOUT_S = 2;
const ATTEMPTS = 2;
/** attempts x (connect or progress deadline), the SDK's backoff, a margin for a loaded machine. */
const BOUND_MS = ATTEMPTS * TIMEOUT_S * 1000 + 20_000;

/** A call against the frozen Azurite: STORAGE_TIMEOUT within the bound, naming the endpoint. */
function timesOut(what: string, fn: () => Promise<unknown>): Promise<number> {
  return timesOutWithin(what, BOUND_MS, fn, (err) => {
    assert.ok(isWalvaultError(err, 'STORAGE_TIMEOUT'), `${what}: ${String((err as Error)?.message ?? err)}`);
    assert.match(err.fix, new RegExp(`127\\.0\\.0\\.1:${azurite.port}`), 'the fix names the endpoint');
  });
}

describe('Azure (Azurite): a hung store and an outage', () => {
  const prefix = 'deadlines/';
  const hurried = () => azureStorage({ requestTimeoutSeconds: TIMEOUT_S, connectTimeoutSeconds: TIMEOUT_S, attempts: ATTEMPTS, blockSizeBytes: 1024 * 1024 }, prefix);
  const patient = () => azureStorage({ requestTimeoutSeconds: 60, connectTimeoutSeconds: 30 }, prefix);

  after(() => azurite?.resume());

  it('every kind of call ends with STORAGE_TIMEOUT in bounded time while Azurite is frozen, and works again after', async () => {
    const setup = patient();
    await setup.put('small', randomBytes(3000));
    await setup.close();
    const s = hurried();
    try {
      // Streamed: 6 blocks of 1 MiB.
      await everyCallTimesOut(s, 'small', 6 * 1024 * 1024, azurite, TIMEOUT_S * 1000, timesOut);
    } finally {
      await s.close();
    }
    const fresh = patient();
    try {
      await fresh.put('again', Buffer.from('ok'));
      assert.deepEqual(await fresh.get('again'), Buffer.from('ok'));
    } finally {
      await fresh.close();
    }
  });

  it('a download Azurite stops sending in the middle ends with STORAGE_TIMEOUT', async () => {
    const setup = patient();
    const body = randomBytes(48 * 1024 * 1024); // larger than the socket buffers on both ends
    await setup.put('large', body);
    await setup.close();
    const s = hurried();
    const opened = await s.openRead('large');
    assert.ok(opened);
    try {
      await stallsMidBody(opened, body.length, azurite, timesOut);
    } finally {
      await s.close();
    }
  });

  it('a block upload Azurite stops taking midway ends with STORAGE_TIMEOUT and commits nothing', async () => {
    const s = hurried();
    try {
      await timesOut('block put', () => s.put('torn', chunksOf(12 * 1024 * 1024, 512 * 1024, (i) => i === 5 && azurite.pause())));
    } finally {
      azurite.resume();
      await s.close();
    }
    const check = patient();
    try {
      assert.equal(await check.head('torn'), null, 'no blob under the key');
    } finally {
      await check.close();
    }
  });

  it('the deadline is one of progress: over a slow link, objects taking several deadlines go through intact', async () => {
    const patiently = patient();
    try {
      const through = (port: number, requestTimeoutSeconds: number) =>
        azureStorage({ endpoint: `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`, requestTimeoutSeconds, connectTimeoutSeconds: TIMEOUT_S, attempts: ATTEMPTS }, prefix);
      await progressNotTotal(azurite.port, TIMEOUT_S, through, patiently);
    } finally {
      await patiently.close();
    }
  });

  it('with Azurite stopped, calls fail with STORAGE_IO naming the endpoint; after a restart the same storage works and every object is there', async () => {
    const s = azureStorage({ attempts: 1 }, 'outage/');
    try {
      const bodies = Array.from({ length: 5 }, () => randomBytes(200_000));
      for (const [i, b] of bodies.entries()) await s.put(`o${i}`, b);
      await azurite.stop();
      await assert.rejects(s.get('o1'), (err: unknown) => isWalvaultError(err, 'STORAGE_IO') && err.fix.includes(azurite.endpoint));
      await azurite.restart();
      for (const [i, b] of bodies.entries()) assert.ok((await s.get(`o${i}`))?.equals(b), `o${i} survived the outage`);
      assert.equal((await s.list('')).length, 5);
    } finally {
      await s.close();
    }
  });

  /** A large body streamed in pieces, so it goes up as blocks. */
  async function* inPieces(b: Buffer): AsyncIterable<Buffer> {
    for (let at = 0; at < b.length; at += 100_000) yield b.subarray(at, at + 100_000);
  }

  it('puts under way while Azurite stops and starts again fail with STORAGE_IO or STORAGE_TIMEOUT, go through when retried, and nothing is lost', async () => {
    const s = azureStorage({ attempts: 1, requestTimeoutSeconds: 5, connectTimeoutSeconds: 5, blockSizeBytes: 256 * 1024 }, 'outage-load/');
    const bodies = Array.from({ length: 40 }, (_, i) => randomBytes(i % 3 === 0 ? 1024 * 1024 + 17 : 50_000));
    const failures = new Map<string, number>();
    // The uploader's way: a put that fails is tried again after a pause, until it goes through.
    const putUntilStored = async (i: number) => {
      for (;;) {
        try {
          await s.put(`o${i}`, bodies[i].length > 256 * 1024 ? inPieces(bodies[i]) : bodies[i]);
          return;
        } catch (err) {
          assert.ok(isWalvaultError(err, 'STORAGE_IO') || isWalvaultError(err, 'STORAGE_TIMEOUT'), String(err));
          failures.set((err as WalvaultError).code, (failures.get((err as WalvaultError).code) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    };
    try {
      const writers = (async () => {
        for (let i = 0; i < bodies.length; i += 4) await Promise.all([0, 1, 2, 3].filter((k) => i + k < bodies.length).map((k) => putUntilStored(i + k)));
      })();
      await new Promise((r) => setTimeout(r, 300));
      await azurite.stop();
      await new Promise((r) => setTimeout(r, 2000));
      await azurite.restart();
      await writers;
      assert.ok(failures.size > 0, 'some puts met the outage');
      for (const [i, b] of bodies.entries()) assert.ok((await s.get(`o${i}`))?.equals(b), `o${i} is stored whole`);
      assert.equal((await s.list('')).length, bodies.length);
    } finally {
      await s.close();
    }
  });
});
