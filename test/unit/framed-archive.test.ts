import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Archive, type ArchiveOptions } from '../../src/archive/archive';
import { CODEC_NAMES, codecByName } from '../../src/archive/codecs';
import { createKeyPair, decryptFrame, encryptFrame, encryptFramePieces, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { hex32, readEnvelopeHeader, sha256 } from '../../src/archive/envelope';
import { crc32c } from '@node-rs/crc32';
import { FRAME_PLAINTEXT_MAX, TRAILER_LENGTH } from '../../src/archive/framed-body';
import { fileSource } from '../../src/archive/body-source';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { LocalStorage } from '../../src/storage/local';

async function tempDir(t: { after(fn: () => Promise<void>): void }, name: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `walvault-${name}-`));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function keys(t: { after(fn: () => Promise<void>): void }) {
  const dir = await tempDir(t, 'keys');
  const kid = await createKeyPair(path.join(dir, 'site.key'), path.join(dir, 'site.pub'));
  return { dir, kid, publicKey: loadPublicKey(path.join(dir, 'site.pub')), privateKey: loadPrivateKey(path.join(dir, 'site.key')) };
}

function isCode(code: ErrorCode, ...parts: string[]) {
  return (err: unknown) => {
    assert.ok(isWalvaultError(err, code), `expected ${code}, got ${String(err)}`);
    for (const p of parts) assert.ok(err.message.includes(p), `message lacks "${p}": ${err.message}`);
    return true;
  };
}

/** WAL-like plaintext: compressible, with a marker string, a little over three frames. */
function walLike(marker: string): Buffer {
  const buf = Buffer.alloc(3 * FRAME_PLAINTEXT_MAX + 12345);
  for (let i = 0; i < buf.length; i += 8192) {
    buf.write(`page ${i} ${marker} `, i);
    randomBytes(200).copy(buf, i + 100);
  }
  return buf;
}

const KEY = 'wal/000000010000000000000007';

describe('framed objects (compression and encryption)', () => {
  for (const codec of CODEC_NAMES) {
    for (const encrypted of [false, true]) {
      if (codec === 'none' && !encrypted) continue;
      test(`${codec}${encrypted ? ' + aes-256-gcm' : ''}: round trip, and every kind of damage is named`, async (t) => {
        const root = await tempDir(t, 'framed');
        const k = encrypted ? await keys(t) : null;
        const opts: ArchiveOptions = { codec, recipient: k?.publicKey, privateKey: k?.privateKey };
        const archive = new Archive(new LocalStorage(root), opts);
        const marker = 'DISTINCTIVE-MARKER-42';
        const data = walLike(marker);
        assert.equal(await archive.putImmutable(KEY, data), 'stored');
        const file = path.join(root, KEY);
        const stored = await fs.readFile(file);
        const header = readEnvelopeHeader(stored, KEY);
        assert.equal(header.codec, codec);
        assert.equal(header.encryption, encrypted ? 'aes-256-gcm' : 'none');
        assert.equal(header.framed, true);
        if (codec !== 'none') assert.ok(stored.length < data.length / 2, `${codec} stored ${stored.length} bytes of ${data.length}`);
        if (encrypted) assert.equal(stored.includes(marker), false);
        assert.ok((await archive.get(KEY))?.equals(data));

        // Same plaintext again: unchanged, whatever the codec; different plaintext: refused.
        assert.equal(await archive.putImmutable(KEY, Buffer.from(data)), 'unchanged');
        assert.equal(await new Archive(new LocalStorage(root)).putImmutable(KEY, Buffer.from(data)), 'unchanged');
        const other = Buffer.from(data);
        other[5] ^= 1;
        await assert.rejects(archive.putImmutable(KEY, other), isCode('ARCHIVE_CONFLICT', KEY));

        // A flipped byte anywhere in the body.
        for (const at of [header.headerLength + 3, header.headerLength + 100, Math.floor(stored.length / 2), stored.length - 20]) {
          const bad = Buffer.from(stored);
          bad[at] ^= 0x10;
          await fs.writeFile(file, bad);
          await assert.rejects(archive.get(KEY), (err: unknown) => {
            // Encrypted: any changed body byte fails authentication (the trailer is not authenticated, but checked).
            const inTrailer = at >= stored.length - TRAILER_LENGTH;
            const expected = encrypted && !inTrailer ? ['ARCHIVE_AUTH_FAILED'] : ['ARCHIVE_CORRUPT'];
            assert.ok(isWalvaultError(err) && expected.includes(err.code), `flip at ${at}: ${String(err)}`);
            assert.ok(err.message.includes(KEY), err.message);
            return true;
          }, `flip at ${at}`);
        }
        // Truncated: in the trailer, and dropped whole frames with the trailer kept.
        for (const cut of [1, 48, 49, 5000]) {
          await fs.writeFile(file, stored.subarray(0, stored.length - cut));
          await assert.rejects(archive.get(KEY), isCode('ARCHIVE_CORRUPT', KEY), `cut ${cut}`);
          // A torn object holds nothing anyone relies on: storing the segment again repairs it.
          assert.equal(await archive.putImmutable(KEY, data), 'repaired', `put over cut ${cut}`);
          assert.ok((await archive.get(KEY))?.equals(data), `repaired after cut ${cut}`);
        }
        await fs.writeFile(file, stored);
        assert.ok((await archive.get(KEY))?.equals(data));

        if (k) {
          await assert.rejects(new Archive(new LocalStorage(root)).get(KEY), isCode('ARCHIVE_KEY_REQUIRED', KEY, k.kid));
          const other = await keys(t);
          await assert.rejects(new Archive(new LocalStorage(root), { privateKey: other.privateKey }).get(KEY), isCode('ARCHIVE_KEY_MISMATCH', KEY, k.kid, other.kid));
        }
      });
    }
  }

  test('a header swapped for another object fails: authentication when encrypted', async (t) => {
    const root = await tempDir(t, 'swap');
    const k = await keys(t);
    const archive = new Archive(new LocalStorage(root), { codec: 'lz4', recipient: k.publicKey, privateKey: k.privateKey });
    const a = walLike('A');
    const b = walLike('B');
    await archive.putImmutable('wal/a', a);
    await archive.putImmutable('wal/b', b);
    const sa = await fs.readFile(path.join(root, 'wal/a'));
    const sb = await fs.readFile(path.join(root, 'wal/b'));
    const ha = readEnvelopeHeader(sa, 'a').headerLength;
    const hb = readEnvelopeHeader(sb, 'b').headerLength;
    // An attacker who can write to storage can also recompute the unkeyed trailer: the
    // swapped header must still fail, by authentication.
    const forged = Buffer.concat([sb.subarray(0, hb), sa.subarray(ha)]);
    forged.writeBigUInt64BE(BigInt(forged.length), forged.length - TRAILER_LENGTH + 8);
    createHash('sha256').update(forged.subarray(0, forged.length - TRAILER_LENGTH)).digest().copy(forged, forged.length - TRAILER_LENGTH + 16);
    await fs.writeFile(path.join(root, 'wal/a'), forged);
    await assert.rejects(archive.get('wal/a'), isCode('ARCHIVE_AUTH_FAILED', 'wal/a'));
  });

  test('a sealed spool file is compressed on the way out, and a file that changed aborts the write', async (t) => {
    const root = await tempDir(t, 'sealed');
    const spool = await tempDir(t, 'spool');
    const archive = new Archive(new LocalStorage(root), { codec: 'zstd' });
    const data = walLike('S');
    const file = path.join(spool, 'seg');
    await fs.writeFile(file, Buffer.concat([Buffer.alloc(64), data]));
    assert.equal(await archive.putSealedFile(KEY, file, data.length, sha256(data)), 'stored');
    assert.notEqual((await fs.stat(path.join(root, KEY))).ino, (await fs.stat(file)).ino);
    assert.ok((await archive.get(KEY))?.equals(data));

    const changed = Buffer.from(data);
    changed[2 * FRAME_PLAINTEXT_MAX + 7] ^= 1;
    await fs.writeFile(file, Buffer.concat([Buffer.alloc(64), changed]));
    await assert.rejects(archive.putImmutable('wal/x', fileSource(file, data.length, 64), sha256(data)), isCode('ARCHIVE_CORRUPT', file, 'changed since it was received'));
    assert.equal(await archive.exists('wal/x'), false);
  });

  test("with the CRC32C the plaintext had on arrival, a sealed file is checked against it on the way out; a changed file aborts the write", async (t) => {
    const root = await tempDir(t, 'sealed-crc');
    const spool = await tempDir(t, 'spool-crc');
    const archive = new Archive(new LocalStorage(root), { codec: 'zstd' });
    const data = walLike('C');
    const file = path.join(spool, 'seg');
    await fs.writeFile(file, Buffer.concat([Buffer.alloc(64), data]));
    assert.equal(await archive.putSealedFile(KEY, file, data.length, sha256(data), { bodyCrc32c: crc32c(data) }), 'stored');
    assert.ok((await archive.get(KEY))?.equals(data));

    // One bit changed after arrival (the SHA-256 in the header would still claim the old bytes).
    const changed = Buffer.from(data);
    changed[FRAME_PLAINTEXT_MAX + 99] ^= 8;
    await fs.writeFile(file, Buffer.concat([Buffer.alloc(64), changed]));
    await assert.rejects(
      archive.putSealedFile('wal/000000010000000000000099', file, data.length, sha256(data), { bodyCrc32c: crc32c(data) }),
      isCode('ARCHIVE_CORRUPT', file, `changed since it was received: its content has CRC32C ${hex32(crc32c(changed))}, not ${hex32(crc32c(data))}`),
    );
    assert.equal(await archive.exists('wal/000000010000000000000099'), false, 'nothing is stored');
  });

  test('empty and one-byte plaintexts frame correctly', async (t) => {
    const root = await tempDir(t, 'tiny');
    const k = await keys(t);
    for (const codec of ['snappy', 'zstd'] as const) {
      const archive = new Archive(new LocalStorage(root), { codec, recipient: k.publicKey, privateKey: k.privateKey });
      for (const data of [Buffer.alloc(0), Buffer.from('x')]) {
        const key = `wal/${codec}-${data.length}`;
        await archive.putImmutable(key, data);
        assert.ok((await archive.get(key))?.equals(data));
      }
    }
  });

  test('encryption hands on its pieces unjoined: the same bytes encryptFrame gives and the reader decrypts', () => {
    const dataKey = randomBytes(32);
    const aad = [randomBytes(211), randomBytes(8)];
    const plain = randomBytes(70000);
    const pieces = encryptFramePieces(dataKey, 5, true, aad, plain);
    assert.ok(pieces.length >= 2 && pieces[pieces.length - 1].length === 16, 'ciphertext, then the tag');
    const joined = Buffer.concat(pieces);
    assert.ok(joined.equals(encryptFrame(dataKey, 5, true, aad, plain)));
    assert.ok(decryptFrame(dataKey, 5, true, aad, joined, 'x').equals(plain));
  });

  test('zstd compresses frames into pooled shared-memory buffers, reused once released', async () => {
    const zstd = codecByName('zstd');
    const frame = Buffer.from(new SharedArrayBuffer(FRAME_PLAINTEXT_MAX));
    walLike('Z').copy(frame);
    const first = await zstd.compressFrame(frame);
    assert.ok(first.bytes.buffer instanceof SharedArrayBuffer, 'written where the worker left it');
    assert.ok((await zstd.decompress(first.bytes, frame.length)).equals(frame));
    const buffer = first.bytes.buffer;
    first.release();
    const second = await zstd.compressFrame(frame);
    assert.equal(second.bytes.buffer, buffer, 'the released buffer is used again');
    assert.ok(second.bytes.equals(first.bytes));
    second.release();
    // A frame in ordinary memory works too (it is copied to the worker).
    const ordinary = await zstd.compressFrame(Buffer.from(frame));
    assert.ok((await zstd.decompress(ordinary.bytes, frame.length)).equals(frame));
    ordinary.release();
  });

  test('keys create refuses to replace a key file and writes the private key 0600', async (t) => {
    const k = await keys(t);
    const st = await fs.stat(path.join(k.dir, 'site.key'));
    assert.equal(st.mode & 0o777, 0o600);
    await assert.rejects(createKeyPair(path.join(k.dir, 'site.key'), path.join(k.dir, 'new.pub')), isCode('CONFIG_INVALID', 'already exists'));
    await assert.rejects(fs.stat(path.join(k.dir, 'new.pub')));
    assert.throws(() => loadPublicKey(path.join(k.dir, 'site.key')), isCode('CONFIG_INVALID', 'site.key', 'private key'));
    assert.match(k.kid, /^[0-9a-f]{16}$/);
  });
});
