/**
 * Some frames of a stored object decoded, the rest passed over (src/archive/read/pick-frames.ts):
 * what a delta restore reads of a backup part. Real objects written by the archive, with
 * every codec, encrypted and not; damage that the walk can see is refused.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Archive, type ArchiveOptions } from '../../src/archive/archive';
import { CODEC_NAMES } from '../../src/archive/codecs';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { readEnvelopeHeader } from '../../src/archive/envelope';
import { decodeFrame, type PickedFrame } from '../../src/archive/read/pick-frames';
import { isWalvaultError } from '../../src/errors';
import { differingRuns } from '../../src/restore/delta-blocks';
import { LocalStorage } from '../../src/storage/local';
import { BLOCK_HASH_LENGTH, matchesIndex, writeBlockHash } from '../../src/util/block-hash';

const KEY = 'backups/20261207T000000Z/parts/base.tar.000000';

/** What a delta restore does with a part: read it (layout and binding checked), then decode the frames `want` asks for. */
async function pick(archive: Archive, key: string, want: (start: number, end: number) => boolean): Promise<{ plaintextSize: number; frames: PickedFrame[] } | null> {
  const read = await archive.readFramed(key);
  if (!read) return null;
  const frames: PickedFrame[] = [];
  for (const f of read.frames) if (f.plainLength > 0 && want(f.plainAt, f.plainAt + f.plainLength)) frames.push({ at: f.plainAt, bytes: await decodeFrame(read.stored, f, read.keys) });
  return { plaintextSize: read.header.plaintextSize, frames };
}
const FRAME = 32768;

async function tempDir(t: { after(fn: () => Promise<void>): void }, name: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `walvault-${name}-`));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Text-like bytes that compress, 4 MiB less a little: the last frame is short. */
function partLike(): Buffer {
  const words = Array.from({ length: 500 }, (_, i) => `w${i.toString(36)}`);
  const out: string[] = [];
  let n = 0;
  for (let i = 0; n < 4 * 1024 * 1024 - 5000; i++) {
    const line = `${words[(i * 7919) % 500]} ${words[(i * 104729) % 500]} ${(i * 2654435761) % 1000003}\n`;
    out.push(line);
    n += line.length;
  }
  // In shared memory, as a backup part's buffer is: zstd compresses such frames in batches.
  const text = Buffer.from(out.join(''));
  const shared = Buffer.from(new SharedArrayBuffer(text.length));
  text.copy(shared);
  return shared;
}

describe('picking frames out of a stored object', () => {
  for (const codec of CODEC_NAMES) {
    for (const encrypted of [false, true]) {
      test(`${codec}${encrypted ? ' + aes-256-gcm' : ''}: the frames asked for, and only those, with their plaintext`, async (t) => {
        const root = await tempDir(t, 'pick');
        let opts: ArchiveOptions = { codec };
        if (encrypted) {
          const dir = await tempDir(t, 'keys');
          await createKeyPair(path.join(dir, 'k'), path.join(dir, 'k.pub'));
          opts = { codec, recipient: loadPublicKey(path.join(dir, 'k.pub')), privateKey: loadPrivateKey(path.join(dir, 'k')) };
        }
        const archive = new Archive(new LocalStorage(root), opts);
        const data = partLike();
        await archive.putOwnedBuffer(KEY, data, createHash('sha256').update(data).digest(), { frameSize: FRAME });
        const framed = codec !== 'none' || encrypted;
        // Two ranges: one inside a frame, one across a frame boundary; and the last bytes.
        const ranges: Array<[number, number]> = [[100, 200], [5 * FRAME - 10, 5 * FRAME + 10], [data.length - 3, data.length]];
        const asked: Array<[number, number]> = [];
        const picked = await pick(archive, KEY, (s, e) => {
          asked.push([s, e]);
          return ranges.some(([a, b]) => a < e && s < b);
        });
        assert.ok(picked);
        assert.equal(picked.plaintextSize, data.length);
        assert.ok((await archive.get(KEY))?.equals(data), 'the whole object reads back');
        for (const f of picked.frames) assert.ok(f.bytes.equals(data.subarray(f.at, f.at + f.bytes.length)), `frame at ${f.at}`);
        for (const [a, b] of ranges) {
          const covered = picked.frames.some((f) => f.at <= a && a < f.at + f.bytes.length) && picked.frames.some((f) => f.at < b && b <= f.at + f.bytes.length);
          assert.ok(covered, `[${a}, ${b}) is in the frames picked`);
        }
        if (framed) {
          assert.equal(asked.length, Math.ceil(data.length / FRAME), 'every frame asked about once');
          assert.ok(asked.every(([s, e]) => e - s <= FRAME));
          assert.equal(picked.frames.length, 4, 'one frame, two across a boundary, the last one');
        } else {
          assert.equal(picked.frames.length, 1, 'a plain object is one body');
        }
      });
    }
  }

  test('damage the walk can see is refused, naming the object; a missing object is null', async (t) => {
    const root = await tempDir(t, 'pick-bad');
    const archive = new Archive(new LocalStorage(root), { codec: 'zstd' });
    const data = partLike();
    await archive.putOwnedBuffer(KEY, data, createHash('sha256').update(data).digest(), { frameSize: FRAME });
    const file = path.join(root, KEY);
    const saved = await fs.readFile(file);
    const all = () => true;
    await fs.writeFile(file, saved.subarray(0, saved.length - 100));
    await assert.rejects(pick(archive, KEY, all), (err) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && err.message.includes(KEY));
    // A frame header whose length runs past the trailer. (Damage inside a payload may decode
    // to other bytes of the right length: what the walk cannot see, the block check does.)
    const garbled = Buffer.from(saved);
    garbled.writeUInt32BE(saved.length, readEnvelopeHeader(saved, KEY).headerLength);
    await fs.writeFile(file, garbled);
    await assert.rejects(pick(archive, KEY, all), (err) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && err.message.includes(KEY));
    assert.equal(await pick(archive, 'backups/x/parts/none.000000', all), null);
  });

  test('read into a given buffer at the size recorded for it; another size is refused before the walk', async (t) => {
    const root = await tempDir(t, 'pick-into');
    const archive = new Archive(new LocalStorage(root), { codec: 'zstd' });
    const data = partLike();
    await archive.putOwnedBuffer(KEY, data, createHash('sha256').update(data).digest(), { frameSize: FRAME });
    const size = (await fs.stat(path.join(root, KEY))).size;
    const into = Buffer.from(new SharedArrayBuffer(size + 100));
    const read = await archive.readFramed(KEY, { size, into });
    assert.ok(read);
    assert.equal(read.stored.buffer, into.buffer, 'read where it was asked to be');
    assert.equal(read.stored.length, size);
    assert.ok(Buffer.concat(await Promise.all(read.frames.map((f) => decodeFrame(read.stored, f, read.keys)))).equals(data));
    for (const recorded of [size - 1, size + 1]) {
      await assert.rejects(archive.readFramed(KEY, { size: recorded, into }), (err) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && err.message.includes(KEY) && err.message.includes(`${recorded} bytes recorded`));
    }
    assert.equal(await archive.readFramed('backups/x/parts/none.000000', { size, into }), null);
  });
});

describe('the blocks of a file that differ from its block index', () => {
  // An index's records (CRC-32C, then XXH64) and what the threads compute there (XXH64 only).
  const want = (...blocks: number[]) => Buffer.concat(blocks.map((b) => Buffer.concat([Buffer.alloc(4, 0xee), Buffer.alloc(8, b)])));
  const have = (...blocks: number[]) => Buffer.concat(blocks.map((b) => Buffer.alloc(8, b)));
  test('runs of differing blocks, and of blocks past what is there', () => {
    assert.deepEqual(differingRuns(want(1, 2, 3, 4), have(1, 2, 3, 4)), []);
    assert.deepEqual(differingRuns(want(1, 2, 3, 4), have(1, 9, 9, 4)), [[1, 3]]);
    assert.deepEqual(differingRuns(want(1, 2, 3, 4), have(9, 2, 9, 4)), [[0, 1], [2, 3]]);
    assert.deepEqual(differingRuns(want(1, 2, 3, 4), have(1, 2)), [[2, 4]]);
    assert.deepEqual(differingRuns(want(1, 2), have(1, 2, 3, 4)), [], 'a longer file: its blocks past the end are cut, not fetched');
    assert.deepEqual(differingRuns(want(1, 2, 3), null), [[0, 3]]);
    assert.deepEqual(differingRuns(want(), have(1)), []);
  });
});

describe('a block against its record in a block index', () => {
  test('matches its own record, and not once a byte changed or against another block', () => {
    const a = Buffer.alloc(8192, 7);
    const b = Buffer.from(a);
    b[4000] ^= 1;
    const hashes = Buffer.alloc(2 * BLOCK_HASH_LENGTH);
    writeBlockHash(a, hashes, 0);
    writeBlockHash(b.subarray(0, 100), hashes, BLOCK_HASH_LENGTH);
    assert.equal(matchesIndex(a, hashes, 0), true);
    assert.equal(matchesIndex(b, hashes, 0), false);
    assert.equal(matchesIndex(b.subarray(0, 100), hashes, 1), true, 'a short last block');
    assert.equal(matchesIndex(Buffer.alloc(100, 8), hashes, 1), false);
  });
});
