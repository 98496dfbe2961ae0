/**
 * Deadlines of the S3 backend (issue 14, item 3) against a real s3rver frozen with SIGSTOP (a
 * hung store: the kernel takes connections and request bytes, nothing answers). Every call
 * ends in bounded time with STORAGE_TIMEOUT: HEAD, LIST, GET (whole, ranged, streamed),
 * DELETE, a single PUT and a multipart upload, also when the store stops in the middle of a
 * download or of an upload's part. The deadline is one of progress, not a fixed total: over a
 * slow link, objects that take several times the deadline go through byte for byte. Nothing
 * the SDK says reaches the console; its warnings (socket capacity) go to the log sink.
 * Azure's counterparts of each (Azurite frozen the same way, over the same slow link, the
 * Azure SDK's log) are in storage-backends.test.ts, beside the rest of the Azure backend's tests.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { isWalvaultError } from '../../src/errors';
import { S3Storage, type S3Settings } from '../../src/storage/s3';
import { setSdkLogSink } from '../../src/storage/sdk-log';
import { chunksOf, everyCallTimesOut, progressNotTotal, stallsMidBody, timesOut as timesOutWithin } from '../helpers/deadline-checks';
import { S3Server } from '../helpers/s3-server';

/** Short, so the suite stays quick, and still longer than a busy machine's pauses. */
const TIMEOUT_S = 2;
const ATTEMPTS = 2;
/**
 * What a call may take when nothing answers: attempts x (connect or progress deadline), the
 * SDK's backoff, and a generous margin for a loaded machine. A hang is what is ruled out.
 */
const BOUND_MS = ATTEMPTS * TIMEOUT_S * 1000 + 20_000;

function isTimeout(err: unknown): boolean {
  return isWalvaultError(err, 'STORAGE_TIMEOUT') && /the store did not answer in time/.test(err.message);
}

/** Runs `fn`, which must reject with STORAGE_TIMEOUT within BOUND_MS; returns the time taken. */
function timesOut(what: string, fn: () => Promise<unknown>): Promise<number> {
  return timesOutWithin(what, BOUND_MS, fn, (err) => assert.ok(isTimeout(err), `${what}: ${String((err as Error)?.message ?? err)}`));
}

describe('S3 deadlines against a hung store (s3rver stopped with SIGSTOP)', () => {
  let server: S3Server;
  const consoleLines: string[] = [];
  const sinkLines: string[] = [];
  const saved = { warn: console.warn, log: console.log, error: console.error };
  const opened: S3Storage[] = [];
  const storage = (extra: S3Settings = {}): S3Storage => {
    const s = new S3Storage({ bucket: server.bucket, prefix: 'deadlines/' }, { ...server.settings(), requestTimeoutSeconds: TIMEOUT_S, connectTimeoutSeconds: TIMEOUT_S, attempts: ATTEMPTS, ...extra });
    opened.push(s);
    return s;
  };
  /**
   * For what is not under test (objects put before the store stops, checks after it resumes):
   * deadlines that a store slowed by a busy machine still meets, so only the calls made
   * against the stopped store are held to TIMEOUT_S.
   */
  const patient = (): S3Storage => storage({ requestTimeoutSeconds: 60, connectTimeoutSeconds: 30 });

  before(async () => {
    server = await S3Server.start();
    for (const k of ['warn', 'log', 'error'] as const) console[k] = (...args: unknown[]) => void consoleLines.push(`console.${k}: ${args.map(String).join(' ')}`);
    setSdkLogSink({ warn: (_o, msg) => void sinkLines.push(msg) });
  });

  after(async () => {
    Object.assign(console, saved);
    setSdkLogSink(null);
    server?.resume();
    for (const s of opened) await s.close();
    await server?.destroy();
  });

  it('every kind of call ends with STORAGE_TIMEOUT in bounded time, and works again after the store resumes', async () => {
    const s = storage();
    await patient().put('small', randomBytes(3000));
    await everyCallTimesOut(s, 'small', 12 * 1024 * 1024, server, TIMEOUT_S * 1000, timesOut);
    const fresh = patient();
    await fresh.put('again', Buffer.from('ok'));
    assert.deepEqual(await fresh.get('again'), Buffer.from('ok'));
  });

  it('a download the store stops sending in the middle ends with STORAGE_TIMEOUT', async () => {
    const s = storage();
    // Larger than the socket buffers on both ends, so the store stops mid-body.
    const body = randomBytes(64 * 1024 * 1024);
    await patient().put('large', body);
    const opened = await s.openRead('large');
    assert.ok(opened);
    await stallsMidBody(opened, body.length, server, timesOut);
  });

  it('a multipart upload the store stops taking in the middle of a part ends with STORAGE_TIMEOUT and leaves no object', async () => {
    const s = storage({ partSizeBytes: 5 * 1024 * 1024 });
    try {
      // Frozen while the second part is being read from the source: the first part's
      // request (or the second's) is on the wire.
      await timesOut('multipart put', () => s.put('torn', chunksOf(30 * 1024 * 1024, 1024 * 1024, (n) => n === 7 && server.pause())));
    } finally {
      server.resume();
    }
    assert.equal(await patient().head('torn'), null, 'no object under the key');
  });

  it('the deadline is one of progress: over a slow link, objects taking several deadlines go through intact', async () => {
    await progressNotTotal(server.port, TIMEOUT_S, (port, requestTimeoutSeconds) => storage({ endpoint: `http://127.0.0.1:${port}`, requestTimeoutSeconds }), patient());
  });

  it("the SDK's warnings go to the log sink, never to the console", async () => {
    // 200 requests at once on 50 sockets to a store that answers nothing: the HTTP handler's
    // socket-capacity warning, which it prints with console.warn unless given a logger.
    const s = storage({ requestTimeoutSeconds: 4, attempts: 1 });
    await patient().put('cap', Buffer.from('x'));
    server.pause();
    try {
      const all = await Promise.allSettled(Array.from({ length: 200 }, () => s.head('cap')));
      assert.ok(all.every((r) => r.status === 'rejected'));
    } finally {
      server.resume();
    }
    assert.ok(sinkLines.some((l) => /socket usage at capacity/.test(l)), `the capacity warning reached the sink: ${JSON.stringify(sinkLines.slice(0, 3))}`);
    assert.deepEqual(consoleLines, [], 'nothing went to the console');
  });
});
