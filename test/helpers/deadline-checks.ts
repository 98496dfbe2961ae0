/** What deadline tests of a storage backend against a frozen store need. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Storage } from '../../src/storage/storage';

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
