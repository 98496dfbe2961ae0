/**
 * The read stages (src/archive/read/): objects decoded as their bytes arrive, every check of
 * a whole-object decode kept, and nothing committed before all of them passed: each kind of
 * damage fails the iteration before the chunk that completes the plaintext is released, and
 * fetchWalFile leaves no destination file. Memory: the decoder pulls only a few frames ahead
 * of what its consumer took, whatever the object's size.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Archive } from '../../src/archive/archive';
import { codecByName, type CodecName } from '../../src/archive/codecs';
import { createKeyPair, loadPrivateKey, loadPublicKey, newDataKey, type PrivateKey } from '../../src/archive/encryption';
import { crc32 } from '@node-rs/crc32';
import { encodeFramedHeader, encodePlainHeader, readEnvelopeHeader, sha256 } from '../../src/archive/envelope';
import { encodeFrames, FRAME_HEADER_LENGTH, FRAME_PLAINTEXT_MAX, readFrameHeader, TRAILER_LENGTH } from '../../src/archive/framed-body';
import { decodeObject, type DecodeOptions } from '../../src/archive/read/decode-object';
import { workerSha256 } from '../../src/archive/read/hash-worker';
import { inThreadSha256 } from '../../src/archive/read/hashers';
import { ReadAhead } from '../../src/archive/read/read-ahead';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { fetchWalFile } from '../../src/restore/fetch-wal-file';
import { LocalStorage } from '../../src/storage/local';
import { BufferPool } from '../../src/util/buffer-pool';
import { segmentFileName } from '../../src/wal/lsn';
import { buildSegment, FIXTURE_SEG_SIZE, FIXTURE_SYSID } from '../helpers/wal-fixtures';

const LABEL = 'wal/000000010000000000000007';

async function tempDir(t: { after(fn: () => Promise<void>): void }, name: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `walvault-${name}-`));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

let keyPair: { publicKey: ReturnType<typeof loadPublicKey>; privateKey: PrivateKey } | null = null;
async function keys(): Promise<NonNullable<typeof keyPair>> {
  if (!keyPair) {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-read-keys-'));
    await createKeyPair(path.join(dir, 'k'), path.join(dir, 'k.pub'));
    keyPair = { publicKey: loadPublicKey(path.join(dir, 'k.pub')), privateKey: loadPrivateKey(path.join(dir, 'k')) };
    await fs.rm(dir, { recursive: true });
  }
  return keyPair;
}

/** A framed object as the write path makes it. `digest` overrides the header's plaintext SHA-256. */
async function framed(plaintext: Buffer, codec: CodecName, encrypted: boolean, digest = sha256(plaintext)): Promise<Buffer> {
  const wrapped = encrypted ? newDataKey((await keys()).publicKey) : null;
  const header = encodeFramedHeader(codec, wrapped ? 'aes-256-gcm' : 'none', plaintext.length, digest, wrapped ? { enc: wrapped.info } : {});
  async function* windows() {
    for (let at = 0; at < plaintext.length; at += FRAME_PLAINTEXT_MAX) yield plaintext.subarray(at, at + FRAME_PLAINTEXT_MAX);
  }
  const out = [header];
  for await (const c of encodeFrames(windows(), plaintext.length, header, { codec: codecByName(codec), dataKey: wrapped?.dataKey ?? null })) out.push(Buffer.concat(c as Buffer[]));
  return Buffer.concat(out);
}

/** Offsets of each frame in a framed object. */
function frameOffsets(obj: Buffer): number[] {
  const at: number[] = [];
  let pos = readEnvelopeHeader(obj, 'x').headerLength;
  for (;;) {
    at.push(pos);
    const f = readFrameHeader(obj.subarray(pos, pos + FRAME_HEADER_LENGTH));
    pos += FRAME_HEADER_LENGTH + f.payloadLength;
    if (f.final) return at;
  }
}

/** Rewrites the trailer to match the object's bytes (as someone who can write to storage could). */
function resealTrailer(obj: Buffer, frames: number): Buffer {
  obj.writeUInt32BE(frames, obj.length - TRAILER_LENGTH + 4);
  obj.writeBigUInt64BE(BigInt(obj.length), obj.length - TRAILER_LENGTH + 8);
  createHash('sha256').update(obj.subarray(0, obj.length - TRAILER_LENGTH)).digest().copy(obj, obj.length - TRAILER_LENGTH + 16);
  return obj;
}

/** The object as a store delivers it: chunks of `chunk` bytes, each a fresh copy overwritten once the next is asked for. */
function delivered(obj: Buffer, chunk: number, counter?: { pulled: number }): AsyncIterable<Buffer> {
  return {
    async *[Symbol.asyncIterator]() {
      const window = Buffer.alloc(chunk);
      for (let at = 0; at < obj.length; at += chunk) {
        const n = obj.copy(window, 0, at, Math.min(obj.length, at + chunk));
        if (counter) counter.pulled = at + n;
        yield window.subarray(0, n);
        window.fill(0xee); // a consumer holding on to a chunk would see this
      }
    },
  };
}

/**
 * Decodes `obj` and collects what it releases. Returns the plaintext, or the error with the
 * number of plaintext bytes released before it.
 */
async function decode(obj: Buffer, opts: Partial<DecodeOptions> = {}, chunk = 64 * 1024): Promise<{ plaintext?: Buffer; error?: unknown; released: number }> {
  const got: Buffer[] = [];
  let released = 0;
  try {
    const d = await decodeObject(delivered(obj, chunk), obj.length, { label: LABEL, privateKey: keyPair?.privateKey, ...opts });
    try {
      for await (const c of d.chunks) {
        got.push(Buffer.from(c));
        released += c.length;
      }
      assert.equal(d.verified, true);
    } finally {
      await d.close();
    }
    return { plaintext: Buffer.concat(got), released };
  } catch (error) {
    return { error, released };
  }
}

function failsWith(r: { error?: unknown; released: number }, code: ErrorCode, size: number, ...parts: string[]): void {
  assert.ok(isWalvaultError(r.error, code), `expected ${code}, got ${String(r.error)}`);
  for (const p of parts) assert.ok(r.error.message.includes(p), `message lacks "${p}": ${r.error.message}`);
  assert.ok(r.error.message.startsWith(LABEL), r.error.message);
  // The chunk completing the plaintext (which a streaming consumer would act on last) never came.
  assert.ok(r.released < size || size === 0, `released ${r.released} of ${size} bytes before failing`);
}

function walLike(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) {
    buf.write(`page ${i} `, i);
    randomBytes(300).copy(buf, i + 64);
  }
  return buf;
}

const SIZE = 5 * FRAME_PLAINTEXT_MAX + 777;

describe('read stages', () => {
  for (const [codec, encrypted] of [['zstd', false], ['lz4', true], ['none', true]] as const) {
    const kind = `${codec}${encrypted ? ' + aes-256-gcm' : ''}`;

    test(`${kind}: round trip whatever the chunking, chunks overwritten once passed`, async () => {
      const data = walLike(SIZE);
      const obj = await framed(data, codec, encrypted);
      for (const chunk of [1000, 65536, 1 << 20, obj.length]) {
        const r = await decode(obj, {}, chunk);
        assert.ok(r.plaintext?.equals(data), `chunk ${chunk}: ${String(r.error)}`);
      }
      const viaWorkers = await decode(obj, { hasher: workerSha256 });
      assert.ok(viaWorkers.plaintext?.equals(data), String(viaWorkers.error));
    });

    test(`${kind}: a damaged frame fails before the plaintext completes`, async () => {
      const data = walLike(SIZE);
      const obj = await framed(data, codec, encrypted);
      const offsets = frameOffsets(obj);
      for (const f of [0, 2, offsets.length - 1]) {
        const bad = Buffer.from(obj);
        bad[offsets[f] + FRAME_HEADER_LENGTH + 40] ^= 0x04;
        // Encrypted: authentication, for the last frame too (before the stored checksum's verdict).
        if (encrypted) failsWith(await decode(bad), 'ARCHIVE_AUTH_FAILED', SIZE, `frame ${f} fails authentication`);
        else failsWith(await decode(bad), 'ARCHIVE_CORRUPT', SIZE);
        // Even with the trailer recomputed over the damage.
        failsWith(await decode(resealTrailer(bad, offsets.length)), encrypted ? 'ARCHIVE_AUTH_FAILED' : 'ARCHIVE_CORRUPT', SIZE);
      }
    });

    test(`${kind}: truncated at a frame boundary, trailer rewritten to match, is refused`, async () => {
      const data = walLike(SIZE);
      const obj = await framed(data, codec, encrypted);
      const offsets = frameOffsets(obj);
      const last = offsets[offsets.length - 1];
      // Drop the last frame, keep a trailer that agrees with what is left.
      const cut = resealTrailer(Buffer.concat([obj.subarray(0, last), Buffer.alloc(TRAILER_LENGTH)]), offsets.length - 1);
      cut.write('WVND', cut.length - TRAILER_LENGTH, 'ascii');
      resealTrailer(cut, offsets.length - 1);
      failsWith(await decode(cut), 'ARCHIVE_CORRUPT', SIZE, 'not marked as the last');
      // And with the frame before marked final: its plaintext falls short of the header's size
      // (encrypted, the flag is in the nonce as well, so no header can be made to agree).
      const forged = Buffer.from(cut);
      const prev = offsets[offsets.length - 2];
      forged.writeUInt32BE((forged.readUInt32BE(prev + 4) | 0x80000000) >>> 0, prev + 4);
      resealTrailer(forged, offsets.length - 1);
      failsWith(await decode(forged), 'ARCHIVE_CORRUPT', SIZE, 'size mismatch');
      // Plain truncations of the tail.
      for (const n of [1, TRAILER_LENGTH, TRAILER_LENGTH + 1, 5000]) failsWith(await decode(obj.subarray(0, obj.length - n)), 'ARCHIVE_CORRUPT', SIZE, 'truncated');
    });

    test(`${kind}: a trailer that does not match is refused`, async () => {
      const data = walLike(SIZE);
      const obj = await framed(data, codec, encrypted);
      const t = obj.length - TRAILER_LENGTH;
      const cases: Array<[string, (b: Buffer) => void, string]> = [
        ['checksum', (b) => (b[t + 20] ^= 1), 'its trailer records'],
        ['frame count', (b) => b.writeUInt32BE(b.readUInt32BE(t + 4) + 1, t + 4), 'frames, but it has'],
        ['length', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(t + 8) - 1n, t + 8), 'bytes, but it has'],
        ['magic', (b) => (b[t] ^= 1), 'trailer'],
      ];
      for (const [, damage, says] of cases) {
        const bad = Buffer.from(obj);
        damage(bad);
        failsWith(await decode(bad), 'ARCHIVE_CORRUPT', SIZE, says);
      }
    });

    test(`${kind}: a plaintext whose SHA-256 is not the header's is refused before its last chunk`, async () => {
      const data = walLike(SIZE);
      const wrong = sha256(Buffer.from('something else'));
      failsWith(await decode(await framed(data, codec, encrypted, wrong)), 'ARCHIVE_CORRUPT', SIZE, 'checksum mismatch');
    });
  }

  test('unframed: a changed body byte, a wrong size, extra bytes', async () => {
    const data = randomBytes(3 * 65536 + 5);
    const obj = Buffer.concat([encodePlainHeader(data.length, sha256(data)), data]);
    assert.ok((await decode(obj)).plaintext?.equals(data));
    const bad = Buffer.from(obj);
    bad[obj.length - 1] ^= 1;
    failsWith(await decode(bad), 'ARCHIVE_CORRUPT', data.length, 'checksum mismatch');
    failsWith(await decode(obj.subarray(0, obj.length - 1)), 'ARCHIVE_CORRUPT', data.length, 'truncated');
    failsWith(await decode(Buffer.concat([obj, Buffer.alloc(3)])), 'ARCHIVE_CORRUPT', data.length, '3 unexpected bytes');
  });

  test('a damaged header is refused before any body byte is read', async () => {
    const data = walLike(SIZE);
    const obj = await framed(data, 'zstd', false);
    const counter = { pulled: 0 };
    const bad = Buffer.from(obj);
    bad[20] ^= 1;
    await assert.rejects(decodeObject(delivered(bad, 4096, counter), bad.length, { label: LABEL }), (err: unknown) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && /header checksum/.test(err.message));
    assert.ok(counter.pulled <= 4096, `${counter.pulled} bytes read`);
    // A binding the caller refuses: refused before the caller sees a byte of it.
    const hl = readEnvelopeHeader(obj, 'x').headerLength;
    assert.equal(crc32(obj.subarray(0, hl - 4)), obj.readUInt32BE(hl - 4));
    await assert.rejects(
      decodeObject(delivered(obj, 4096), obj.length, {
        label: LABEL,
        trusted: () => {
          throw new Error('not ours');
        },
      }),
      /not ours/,
    );
  });

  test('an encrypted object without its key: named at once, or checked by its stored bytes only', async () => {
    const data = walLike(SIZE);
    const obj = await framed(data, 'zstd', true);
    const noKey = await decode(obj, { privateKey: undefined });
    assert.ok(isWalvaultError(noKey.error, 'ARCHIVE_KEY_REQUIRED'), String(noKey.error));
    const stored = await decodeObject(delivered(obj, 65536), obj.length, { label: LABEL, storedOnlyWithoutKey: true });
    assert.equal(stored.plaintextChecked, false);
    for await (const c of stored.chunks) assert.fail(`no plaintext without the key (${c.length})`);
    assert.equal(stored.verified, true);
    const bad = Buffer.from(obj);
    bad[obj.length - TRAILER_LENGTH - 5] ^= 1;
    const damaged = await decodeObject(delivered(bad, 65536), bad.length, { label: LABEL, storedOnlyWithoutKey: true });
    await assert.rejects((async () => {
      for await (const c of damaged.chunks) void c;
    })(), (err: unknown) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && /trailer records/.test(err.message));
  });

  test('memory: the decoder pulls a few frames ahead of its consumer, not the object', async () => {
    // 48 frames; encrypted without compression, so stored and plaintext sizes match.
    const data = randomBytes(48 * FRAME_PLAINTEXT_MAX);
    for (const [obj, kind] of [
      [await framed(data, 'none', true), 'encrypted'],
      [Buffer.concat([encodePlainHeader(data.length, sha256(data)), data]), 'unframed'],
    ] as const) {
      const counter = { pulled: 0 };
      const d = await decodeObject(delivered(obj, 256 * 1024, counter), obj.length, { label: LABEL, privateKey: keyPair!.privateKey });
      let taken = 0;
      let worst = 0;
      for await (const c of d.chunks) {
        taken += c.length;
        worst = Math.max(worst, counter.pulled - taken);
      }
      await d.close();
      assert.equal(taken, data.length);
      // At most the frame being passed on, the one being read, and a chunk.
      assert.ok(worst <= 3 * FRAME_PLAINTEXT_MAX, `${kind}: ${worst} bytes read ahead of the consumer`);
    }
  });

  test('worker SHA-256 equals the in-thread one, however it is fed; abandoned hashes are dropped', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const expected = sha256(data);
    for (const step of [1, 4097, 65536, 1 << 20, data.length]) {
      const h = workerSha256();
      for (let at = 0; at < data.length; at += step) await h.update(data.subarray(at, at + step));
      assert.ok((await h.digest()).equals(expected), `step ${step}`);
    }
    const many = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
      const h = workerSha256();
      const part = data.subarray(i * 1000);
      for (let at = 0; at < part.length; at += 300000) await h.update(part.subarray(at, at + 300000));
      return (await h.digest()).equals(sha256(part));
    }));
    assert.deepEqual(many, [true, true, true, true, true, true]);
    const dropped = workerSha256();
    await dropped.update(data);
    dropped.dispose();
    const t = inThreadSha256();
    await t.update(data);
    assert.ok((await t.digest()).equals(expected));
  });

  test('worker SHA-256 of shared memory: read in place, the memory free to reuse once update() resolves', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 333);
    // One window reused for every read, as storage reads reuse theirs: a worker reading it
    // after update() resolved would hash the next chunk's bytes instead.
    const window = Buffer.from(new SharedArrayBuffer(1 << 20));
    for (const sizes of [[1 << 20], [65536, 1000, 200000, 70000, 1 << 20, 5], [65535, 65536, 65537]]) {
      const h = workerSha256();
      let at = 0;
      for (let i = 0; at < data.length; i++) {
        const n = Math.min(sizes[i % sizes.length], data.length - at);
        data.copy(window, 0, at, at + n);
        await h.update(window.subarray(0, n));
        window.fill(0xee, 0, n);
        at += n;
      }
      assert.ok((await h.digest()).equals(sha256(data)), `sizes ${sizes.join(',')}`);
    }
  });

  test('read-ahead: bounded, in order, the producer failure delivered, cancel stops it', async () => {
    const pool = new BufferPool(65536, 8);
    const data = randomBytes(1 << 20);
    let produced = 0;
    let taken = 0;
    let worst = 0;
    const ahead = new ReadAhead(async (push) => {
      for (let at = 0; at < data.length; at += 10000) {
        await push(data.subarray(at, at + 10000));
        produced = Math.min(data.length, at + 10000);
      }
    }, pool, 4 * 65536);
    const got: Buffer[] = [];
    for await (const c of ahead) {
      got.push(Buffer.from(c));
      taken += c.length;
      worst = Math.max(worst, produced - taken);
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(Buffer.concat(got).equals(data));
    assert.ok(worst <= 6 * 65536, `${worst} bytes ahead`);

    const failing = new ReadAhead(async (push) => {
      await push(data.subarray(0, 100));
      throw new Error('frame 3 failed');
    }, pool, 65536);
    await assert.rejects((async () => {
      for await (const c of failing) void c;
    })(), /frame 3 failed/);

    let stopped = false;
    const endless = new ReadAhead(async (push) => {
      try {
        for (;;) await push(data.subarray(0, 30000));
      } finally {
        stopped = true;
      }
    }, pool, 65536);
    for await (const c of endless) {
      void c;
      break;
    }
    assert.equal(stopped, true, 'the producer stopped when the consumer did');
  });

  test('read-ahead: a view of a lent block is queued as it is, a second view of it copied, unused loans returned', async () => {
    let out = 0;
    const pool = {
      acquire: () => {
        out++;
        return Buffer.alloc(4096);
      },
      release: () => void out--,
    };
    const lent: Buffer[] = [];
    const ahead = new ReadAhead(async (push, lend) => {
      const a = lend();
      lent.push(a);
      a.fill(1);
      await push(a.subarray(100)); // the header's bytes before it are not passed on
      await push(a.subarray(0, 10)); // the same block again: copied
      const b = lend();
      lent.push(b);
      b.fill(2);
      await push(b.subarray(0, 4000));
      lend(); // never read into
    }, pool, 1 << 20);
    const got: Array<[number, number, string]> = [];
    for await (const c of ahead) got.push([c.length, c[0], lent.findIndex((l) => l.buffer === c.buffer) === -1 ? 'copied' : `lent ${lent.findIndex((l) => l.buffer === c.buffer)}`]);
    assert.deepEqual(got, [
      [3996, 1, 'lent 0'],
      [10, 1, 'copied'],
      [4000, 2, 'lent 1'],
    ]);
    assert.equal(out, 0, 'every block went back to the pool: queued, copied into, and the one never read into');
  });
});

describe('fetchWalFile commits only a verified, checked file', () => {
  const name = segmentFileName(1, 0x21n, FIXTURE_SEG_SIZE);
  const cluster = { systemId: FIXTURE_SYSID.toString(), pgVersionNum: 160000, walSegmentSize: FIXTURE_SEG_SIZE };

  for (const encrypted of [false, true]) {
    test(`${encrypted ? 'zstd + aes-256-gcm' : 'plain'}: every kind of damage leaves no file`, async (t) => {
      const k = encrypted ? await keys() : null;
      const root = await tempDir(t, 'fetch-archive');
      const out = await tempDir(t, 'fetch-out');
      const archive = new Archive(new LocalStorage(root), k ? { codec: 'zstd', recipient: k.publicKey, privateKey: k.privateKey } : {});
      await archive.ensureCluster(cluster);
      const segment = buildSegment(0x21n);
      await archive.putImmutable(Archive.walKey(name), segment);
      const file = path.join(root, 'wal', name);
      const stored = await fs.readFile(file);
      const dest = path.join(out, 'RECOVERYXLOG');
      assert.equal(await fetchWalFile(archive, name, dest, { cluster: async () => cluster }), true);
      assert.ok((await fs.readFile(dest)).equals(segment));
      await fs.rm(dest);

      const damages: Array<[string, Buffer]> = [
        ['a body byte', Buffer.from(stored).fill(stored[stored.length - 100] ^ 1, stored.length - 100, stored.length - 99)],
        ['truncated', stored.subarray(0, stored.length - 1)],
        ['the header', Buffer.from(stored).fill(stored[10] ^ 1, 10, 11)],
      ];
      if (encrypted) damages.push(['the trailer', Buffer.from(stored).fill(stored[stored.length - 1] ^ 1, stored.length - 1)]);
      for (const [what, bytes] of damages) {
        await fs.writeFile(file, bytes);
        await assert.rejects(fetchWalFile(archive, name, dest, { cluster: async () => cluster }), (err: unknown) => isWalvaultError(err) && err.message.includes(name), what);
        assert.deepEqual(await fs.readdir(out), [], `${what}: nothing left in the destination directory`);
      }
      // Another name's object copied over this one: refused by its binding before a byte is written.
      const neighbour = segmentFileName(1, 0x22n, FIXTURE_SEG_SIZE);
      await archive.putImmutable(Archive.walKey(neighbour), buildSegment(0x22n));
      await fs.copyFile(path.join(root, 'wal', neighbour), file);
      let asked = false;
      await assert.rejects(
        fetchWalFile(archive, name, dest, {
          cluster: async () => {
            asked = true;
            return cluster;
          },
        }),
        (err: unknown) => isWalvaultError(err, 'ARCHIVE_MISPLACED') && err.message.includes(`holds wal/${neighbour}`),
      );
      assert.equal(asked, false, 'refused before the reader got the object');
      assert.deepEqual(await fs.readdir(out), [], 'binding: nothing left in the destination directory');
      // Another segment's object, whole and bound to this name: refused by its pages.
      const otherRoot = await tempDir(t, 'fetch-other');
      const other = new Archive(new LocalStorage(otherRoot));
      await other.ensureCluster(cluster);
      await other.putImmutable(Archive.walKey(name), buildSegment(0x20n));
      await fs.copyFile(path.join(otherRoot, 'wal', name), file);
      await assert.rejects(fetchWalFile(archive, name, dest, { cluster: async () => cluster }), (err: unknown) => isWalvaultError(err, 'ARCHIVE_MISPLACED'));
      assert.deepEqual(await fs.readdir(out), [], 'misplaced: nothing left in the destination directory');
    });
  }
});
