/** What deadline tests of a storage backend against a frozen store need. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Storage } from '../../src/storage/storage';
import { SlowLink } from './slow-link';

/**
 * Runs `fn`, which must reject within `boundMs` with an error `accept` takes (it asserts on
 * it); returns the time taken. Still waiting at `boundMs` is a hang, and fails.
 */
export async function timesOut(what: string, boundMs: number, fn: () => Promise<unknown>, accept: (err: unknown) => void): Promise<number> {
  const t0 = Date.now();
  let guard: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_r, reject) => {
    guard = setTimeout(() => reject(new Error(`${what}: still waiting after ${boundMs} ms (hung)`)), boundMs);
  });
  try {
    await assert.rejects(Promise.race([fn(), hang]), (err: unknown) => {
      accept(err);
      return true;
    });
  } finally {
    clearTimeout(guard);
  }
  return Date.now() - t0;
}

/** `size` random bytes as chunks of `chunk`; `onChunk(i)` before the i-th is made. */
export async function* chunksOf(size: number, chunk: number, onChunk?: (i: number) => void): AsyncIterable<Buffer> {
  for (let at = 0, i = 0; at < size; at += chunk, i++) {
    onChunk?.(i);
    yield randomBytes(Math.min(chunk, size - at));
  }
}

/**
 * Every kind of call on `s` with its store frozen (`server.pause()`, resumed however it ends),
 * at once, each through `timesOut` (which asserts the error): HEAD, GET (whole, ranged,
 * streamed), LIST, DELETE, a one-request PUT and a streamed one of `streamed` bytes. `existing`
 * is an object put before the freeze. None may give up before `deadlineMs`.
 */
export async function everyCallTimesOut(
  s: Storage,
  existing: string,
  streamed: number,
  server: { pause(): void; resume(): void },
  deadlineMs: number,
  timesOut: (what: string, fn: () => Promise<unknown>) => Promise<number>,
): Promise<void> {
  server.pause();
  try {
    const took = await Promise.all([
      timesOut('head', () => s.head(existing)),
      timesOut('get', () => s.get(existing)),
      timesOut('getRange', () => s.getRange(existing, 10, 100)),
      timesOut('openRead', () => s.openRead(existing)),
      timesOut('list', () => s.list('')),
      timesOut('delete', () => s.delete(existing)),
      timesOut('put (one request)', () => s.put('other', randomBytes(2000))),
      timesOut('put (streamed)', () => s.put('big', chunksOf(streamed, 256 * 1024))),
    ]);
    assert.ok(took.every((ms) => ms >= deadlineMs - 100), `no call gave up before its deadline: ${took.join(', ')} ms`);
  } finally {
    server.resume();
  }
}

/**
 * Reads `opened` (a large object's openRead) and freezes its store (`server.pause()`) when the
 * first chunk arrives: the read must then fail through `timesOut`, after part of the `size`
 * bytes came and before all of them. The store is resumed however it ends.
 */
export async function stallsMidBody(
  opened: { chunks: AsyncIterable<Buffer> },
  size: number,
  server: { pause(): void; resume(): void },
  timesOut: (what: string, fn: () => Promise<unknown>) => Promise<number>,
): Promise<void> {
  let got = 0;
  try {
    await timesOut('openRead body', async () => {
      for await (const c of opened.chunks) {
        if (got === 0) server.pause();
        got += c.length;
      }
    });
  } finally {
    server.resume();
  }
  assert.ok(got > 0 && got < size, `part of the body arrived before the stall (${got} of ${size} bytes)`);
}

/**
 * The deadline is one of progress, not a fixed total: over a slow link to the store (a
 * SlowLink to `storePort`), objects that take several deadlines go through byte for byte.
 * `through(endpointPort, requestTimeoutSeconds)` makes a storage that reaches the store at a
 * link's port with `timeoutS`-long connect deadlines and that progress deadline (closed here);
 * `patient` reaches it directly, for what is not under test.
 */
export async function progressNotTotal(storePort: number, timeoutS: number, through: (linkPort: number, requestTimeoutSeconds: number) => Storage, patient: Storage): Promise<void> {
  const body = randomBytes(24 * 1024 * 1024);
  // Downloads: the client sees every byte arrive, so the deadline can be short.
  await patient.put('slow', body.subarray(0, 4 * 1024 * 1024));
  let link = await SlowLink.open(storePort, 512 * 1024);
  let s = through(link.port, timeoutS);
  try {
    const t0 = Date.now();
    const back = await s.get('slow');
    const took = Date.now() - t0;
    assert.ok(back?.equals(body.subarray(0, 4 * 1024 * 1024)), 'downloaded byte for byte');
    assert.ok(took > 3 * timeoutS * 1000, `the download took several deadlines (${took} ms)`);
  } finally {
    await s.close();
    await link.close();
  }
  // Uploads: what the kernels on the way have taken (several MiB on loopback here) is not
  // seen leaving, so the deadline must outlast draining that; everything before is seen
  // (Node counts a large write's partial progress as socket activity).
  link = await SlowLink.open(storePort, 2 * 1024 * 1024);
  s = through(link.port, 5);
  try {
    const t0 = Date.now();
    await s.put('slow', body);
    const took = Date.now() - t0;
    assert.ok(took > 2 * 5000, `the upload took several deadlines (${took} ms)`);
    assert.ok((await patient.get('slow'))?.equals(body), 'uploaded byte for byte');
  } finally {
    await s.close();
    await link.close();
  }
}
