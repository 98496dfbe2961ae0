/**
 * The behaviour every Storage backend owes the archive layer, as one suite that runs against
 * each backend (test/integration/storage-backends.test.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import { isWalvaultError } from '../../src/errors';
import type { Storage } from '../../src/storage/storage';

export interface StorageUnderTest {
  storage: Storage;
  cleanup(): Promise<void>;
}

/** Chunks from one reused buffer, refilled only when the next chunk is asked for. */
async function* reusedChunks(data: Buffer, chunk: number): AsyncIterable<Buffer> {
  const buf = Buffer.alloc(chunk);
  for (let at = 0; at < data.length; at += chunk) {
    const n = Math.min(chunk, data.length - at);
    data.copy(buf, 0, at, at + n);
    yield buf.subarray(0, n);
    buf.fill(0xcc); // a backend still holding the previous chunk would now see garbage
  }
}

export function storageSuite(label: string, make: () => Promise<StorageUnderTest>): void {
  const withStorage = (fn: (s: Storage) => Promise<void>) => async () => {
    const t = await make();
    try {
      await fn(t.storage);
    } finally {
      await t.storage.close();
      await t.cleanup();
    }
  };

  describe(`storage suite: ${label}`, () => {
    it(
      'put (buffer, parts), get, head, replace, delete',
      withStorage(async (s) => {
        const a = randomBytes(1000);
        await s.put('wal/a', a);
        assert.ok((await s.get('wal/a'))?.equals(a));
        assert.deepEqual(withoutTime(await s.head('wal/a')), { key: 'wal/a', size: 1000 });

        const parts = [Buffer.from('header:'), randomBytes(5000)];
        await s.put('wal/a', parts);
        assert.ok((await s.get('wal/a'))?.equals(Buffer.concat(parts)), 'put replaces (partials rely on it)');

        await s.delete('wal/a');
        assert.equal(await s.get('wal/a'), null);
        assert.equal(await s.head('wal/a'), null);
        await s.delete('wal/a'); // deleting what is not there is no error
        await s.put('empty', Buffer.alloc(0));
        assert.deepEqual(await s.get('empty'), Buffer.alloc(0));
        assert.deepEqual(withoutTime(await s.head('empty')), { key: 'empty', size: 0 });
      }),
    );

    it(
      'streamed put of a large object from a reused buffer is exact',
      withStorage(async (s) => {
        const data = randomBytes(21 * 1024 * 1024 + 12345); // several S3 parts, a short last one
        await s.put('base/big', reusedChunks(data, 1024 * 1024));
        const back = await s.get('base/big');
        assert.equal(back?.length, data.length);
        assert.ok(back!.equals(data), 'the stored object equals what was streamed');
      }),
    );

    it(
      'streamed chunks that are lists of buffers (frame pieces), refilled once the next is asked for, across part boundaries, are exact',
      withStorage(async (s) => {
        // Frames of odd sizes: an 8-byte header, a payload, a 16-byte tag, each from a buffer
        // the producer refills, so pieces straddle every S3 part boundary somewhere.
        const data = randomBytes(11 * 1024 * 1024 + 4321);
        async function* frames(): AsyncIterable<readonly Buffer[]> {
          const head = Buffer.alloc(8);
          const payload = Buffer.alloc(700 * 1024);
          const tag = Buffer.alloc(16);
          for (let at = 0; at < data.length; ) {
            const bufs = [head, payload, tag];
            const pieces: Buffer[] = [];
            for (const b of bufs) {
              const n = Math.min(b.length, data.length - at);
              data.copy(b, 0, at, at + n);
              pieces.push(b.subarray(0, n));
              at += n;
            }
            yield pieces;
            for (const b of bufs) b.fill(0xcc);
          }
        }
        await s.put('base/frames', frames());
        assert.ok((await s.get('base/frames'))?.equals(data), 'the stored object equals what was streamed');
        // Exactly one S3 part's worth (5 MiB in the suite) is still one object.
        const five = randomBytes(5 * 1024 * 1024);
        await s.put('base/five', reusedChunks(five, 1024 * 1024));
        assert.ok((await s.get('base/five'))?.equals(five));
      }),
    );

    it(
      'a streamed body that fails leaves no object, and an old one stays',
      withStorage(async (s) => {
        async function* failing(): AsyncIterable<Buffer> {
          yield randomBytes(6 * 1024 * 1024);
          yield randomBytes(6 * 1024 * 1024);
          throw new Error('source broke');
        }
        await assert.rejects(s.put('wal/x', failing()), /source broke/);
        assert.equal(await s.head('wal/x'), null);
        assert.deepEqual(await s.list('wal/'), []);

        const old = Buffer.from('old');
        await s.put('wal/y', old);
        await assert.rejects(s.put('wal/y', failing()), /source broke/);
        assert.ok((await s.get('wal/y'))?.equals(old));
      }),
    );

    it(
      'getRange: middle, short at the end, past the end, missing object, into a caller buffer',
      withStorage(async (s) => {
        const data = randomBytes(3000);
        await s.put('r', data);
        assert.ok((await s.getRange('r', 100, 200))?.equals(data.subarray(100, 300)));
        assert.ok((await s.getRange('r', 2900, 500))?.equals(data.subarray(2900)));
        assert.equal((await s.getRange('r', 3000, 10))?.length, 0);
        assert.equal(await s.getRange('missing', 0, 10), null);
        const into = Buffer.alloc(1024);
        const got = await s.getRange('r', 1000, 1024, into);
        assert.ok(got?.equals(data.subarray(1000, 2024)));
      }),
    );

    it(
      'openRead: the whole object in chunks with its size, missing and empty objects, and abandoned reads release what they hold',
      withStorage(async (s) => {
        const data = randomBytes(3 * 1024 * 1024 + 17);
        await s.put('o', data);
        const read = async (into?: Buffer) => {
          const opened = await s.openRead('o', into);
          assert.ok(opened, 'the object is there');
          assert.equal(opened.size, data.length);
          const got: Buffer[] = [];
          for await (const c of opened.chunks) got.push(Buffer.from(c)); // a chunk may be refilled after the next
          return Buffer.concat(got);
        };
        assert.ok((await read()).equals(data));
        assert.ok((await read(Buffer.alloc(64 * 1024))).equals(data), 'through a small caller buffer');
        // A fresh buffer per read: every chunk stays as it was after later reads (a backend
        // that reads into the buffers does not reuse one).
        const given: Buffer[] = [];
        const fresh = await s.openRead('o', () => given[given.push(Buffer.alloc(256 * 1024)) - 1]);
        const views: Buffer[] = [];
        for await (const c of fresh!.chunks) views.push(c);
        assert.ok(Buffer.concat(views).equals(data), 'chunks kept whole, not copied, are intact at the end');
        assert.ok(given.length <= Math.ceil(data.length / (256 * 1024)), `${given.length} buffers asked for: none past the object's end`);
        assert.equal(await s.openRead('missing'), null);
        await s.put('empty', Buffer.alloc(0));
        const empty = await s.openRead('empty');
        let bytes = 0;
        for await (const c of empty!.chunks) bytes += c.length;
        assert.deepEqual([empty!.size, bytes], [0, 0]);

        // A read given up before its first chunk, or after one, holds no file or socket.
        const fds = () => fs.readdirSync('/proc/self/fd').length;
        const before = fds();
        for (let i = 0; i < 20; i++) {
          const opened = (await s.openRead('o'))!;
          const it = opened.chunks[Symbol.asyncIterator]();
          if (i % 2 === 1) await it.next();
          await it.return?.();
        }
        await new Promise((r) => setTimeout(r, 200)); // destroyed sockets close on the next tick
        assert.ok(fds() <= before + 3, `open descriptors went from ${before} to ${fds()}`);
      }),
    );

    it(
      'list: by prefix, sorted, sizes, across many pages',
      withStorage(async (s) => {
        const names = Array.from({ length: 23 }, (_, i) => `wal/0000000100000000000000${i.toString(16).padStart(2, '0').toUpperCase()}`);
        for (const n of [...names].reverse()) await s.put(n, Buffer.alloc(names.indexOf(n) + 1));
        await s.put('wal/00000002.history', Buffer.from('h'));
        await s.put('cluster.json', Buffer.from('{}'));
        await s.put('walrus/other', Buffer.from('x'));

        const wal = await s.list('wal/');
        assert.deepEqual(
          wal.map((o) => o.key),
          [...names, 'wal/00000002.history'].sort(),
        );
        assert.equal(wal.find((o) => o.key === names[4])?.size, 5);
        // A prefix is a string prefix, not a directory: segments 0x10 to 0x16.
        assert.deepEqual((await s.list('wal/00000001000000000000001')).map((o) => o.key), names.slice(16));
        assert.deepEqual((await s.list('')).length, 26);
        assert.deepEqual(await s.list('nothing/'), []);

        // From a name on (S3 StartAfter), at most a few: what a reader near the end needs.
        const keys = (o: Array<{ key: string }>) => o.map((x) => x.key);
        assert.deepEqual(keys(await s.list('wal/', { startAfter: names[20] })), [...names.slice(21), 'wal/00000002.history']);
        assert.deepEqual(keys(await s.list('wal/', { startAfter: names[3], limit: 2 })), names.slice(4, 6));
        assert.deepEqual(keys(await s.list('wal/', { startAfter: 'wal/00000001Z', limit: 5 })), ['wal/00000002.history'], 'a key past every timeline 1 name skips them all');
        assert.deepEqual(keys(await s.list('wal/', { startAfter: 'wal/00000002.history' })), []);
        assert.deepEqual(keys(await s.list('wal/', { limit: 1 })), [names[0]]);
        assert.equal((await s.list('wal/', { startAfter: names[4], limit: 1 }))[0].size, 6, 'sizes with a limit too');
      }),
    );

    it(
      'refuses keys that could escape the archive',
      withStorage(async (s) => {
        for (const bad of ['../x', 'a/../../x', '/abs', 'a//b', '']) {
          await assert.rejects(s.put(bad, Buffer.from('x')), (err: unknown) => isWalvaultError(err, 'STORAGE_IO'), `key ${JSON.stringify(bad)}`);
        }
      }),
    );
  });
}

/** An object's info without its modification time (checked on its own: a recent Date). */
function withoutTime(info: { key: string; size: number; modified?: Date } | null): { key: string; size: number } | null {
  if (info === null) return null;
  assert.ok(info.modified instanceof Date && Math.abs(Date.now() - info.modified.getTime()) < 10 * 60_000, `${info.key}: a modification time`);
  return { key: info.key, size: info.size };
}
