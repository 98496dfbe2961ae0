/**
 * Block indexes (src/backup/block-index.ts) of tars the system `tar` writes, fed in odd
 * chunks from one reused buffer: every file's offset points at its bytes in the tar, every
 * hash is the CRC-32C and CRC-32 of its 8 KiB block; the decoder refuses what is not an index.
 * And backup parts in 32 KiB frames read back with every codec.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Archive } from '../../src/archive/archive';
import { CODEC_NAMES } from '../../src/archive/codecs';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { BlockIndexer, decodeBlockIndex, INDEX_BLOCK_SIZE, type BlockIndex } from '../../src/backup/block-index';
import { BACKUP_FRAME_SIZE } from '../../src/backup/part-uploader';
import { isWalvaultError } from '../../src/errors';
import { LocalStorage } from '../../src/storage/local';
import { TarReader } from '../../src/util/tar-reader';
import { blockHashesOf, framePlainLengths, indexProblems } from '../helpers/block-index-checks';

const SIZES = [0, 1, 8191, 8192, 8193, 100000];

function tempDir(t: { after(fn: () => void): void }, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `walvault-${name}-`));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A directory of files of every interesting size, a subdirectory and a link, and its ustar. */
function makeTar(root: string): { dir: string; tar: Buffer } {
  const dir = path.join(root, 'data');
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  for (const size of SIZES) fs.writeFileSync(path.join(dir, `f${size}`), randomBytes(size), { mode: 0o640 });
  fs.writeFileSync(path.join(dir, 'sub', 'inner'), randomBytes(20000));
  fs.symlinkSync('f8192', path.join(dir, 'link'));
  const tar = path.join(root, 'data.tar');
  execFileSync('tar', ['--format=ustar', '-cf', tar, '-C', dir, ...fs.readdirSync(dir).sort()]);
  return { dir, tar: fs.readFileSync(tar) };
}

/** Feeds `tar` in chunks of the given sizes, in turn, each from one buffer overwritten after the call. */
function indexOf(tar: Buffer, sizes: number[]): Buffer {
  const indexer = new BlockIndexer('test.tar');
  const reused = Buffer.alloc(Math.max(...sizes));
  for (let at = 0, i = 0; at < tar.length; i++) {
    const n = Math.min(sizes[i % sizes.length], tar.length - at);
    tar.copy(reused, 0, at, at + n);
    indexer.write(reused.subarray(0, n));
    reused.fill(0xa5);
    at += n;
  }
  return indexer.finish();
}

function checkAgainst(index: BlockIndex, dir: string, tar: Buffer): void {
  assert.equal(index.blockSize, INDEX_BLOCK_SIZE);
  assert.deepEqual(indexProblems(index, tar, 'test.tar'), []);
  const paths = index.members.map((m) => m.path).sort();
  assert.deepEqual(paths, [...SIZES.map((s) => `f${s}`), 'link', 'sub', 'sub/inner'].sort());
  for (const m of index.members) {
    const onDisk = path.join(dir, m.path);
    const st = fs.lstatSync(onDisk);
    assert.equal(m.mode, st.mode & 0o7777, `${m.path}: mode`);
    if (m.type === 'file') {
      const content = fs.readFileSync(onDisk);
      assert.equal(m.size, content.length, `${m.path}: size`);
      assert.ok(tar.subarray(m.offset, m.offset + m.size).equals(content), `${m.path}: its offset points at its bytes in the tar`);
      assert.equal(m.offset % 512, 0);
      assert.ok(m.hashes.equals(blockHashesOf(content)), `${m.path}: every block's CRC-32C and XXH64`);
    } else if (m.type === 'symlink') {
      assert.ok(st.isSymbolicLink());
      assert.equal(m.target, 'f8192');
      assert.equal(m.hashes.length, 0);
    } else {
      assert.ok(st.isDirectory(), m.path);
      assert.equal(m.size, 0);
    }
  }
}

describe('block index', () => {
  test('of a tar fed in odd chunks (views reused after each call): offsets and block hashes are right', (t) => {
    const { dir, tar } = makeTar(tempDir(t, 'index'));
    const whole = indexOf(tar, [tar.length]);
    checkAgainst(decodeBlockIndex(whole, 'whole'), dir, tar);
    for (const sizes of [[1], [511], [7000], [1, 511, 7000, 8192, 3, 65536, 8193]]) {
      const plaintext = indexOf(tar, sizes);
      assert.ok(plaintext.equals(whole), `chunks of ${sizes.join(', ')} give the same index`);
    }
  });

  test('the plaintext starts with its header; every member of a tar has one record', (t) => {
    const { tar } = makeTar(tempDir(t, 'index-header'));
    const plaintext = indexOf(tar, [4096]);
    assert.equal(plaintext.toString('ascii', 0, 4), 'WVIX');
    assert.equal(plaintext.readUInt32BE(4), 2);
    assert.equal(plaintext.readUInt32BE(8), 8192);
    assert.equal(plaintext.readUInt32BE(12), 0);
    // f0..f100000, link, sub, sub/inner: records of 5 + path bytes, + 16 + hashes for files,
    // + 2 + target for the link.
    const expected =
      16 +
      SIZES.reduce((s, size) => s + 5 + `f${size}`.length + 16 + Math.ceil(size / 8192) * 12, 0) +
      (5 + 4 + 2 + 5) +
      (5 + 3) +
      (5 + 9 + 16 + 3 * 12);
    assert.equal(plaintext.length, expected);
  });

  test('a tar cut short is refused when the index is finished', (t) => {
    const { tar } = makeTar(tempDir(t, 'index-cut'));
    const indexer = new BlockIndexer('cut.tar');
    indexer.write(tar.subarray(0, 2000));
    assert.throws(() => indexer.finish(), (err) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && /cut\.tar.*truncated/.test(err.message));
  });

  test("TarReader's synchronous write refuses a sink that returns a promise", (t) => {
    const { tar } = makeTar(tempDir(t, 'index-sync'));
    const reader = new TarReader({ entry: async () => undefined, data: () => undefined, entryEnd: () => undefined }, 'sync.tar');
    assert.throws(() => reader.writeSync(tar), (err) => isWalvaultError(err, 'INTERNAL') && /sync\.tar: a synchronous tar sink returned a promise/.test(err.message));
  });

  test('decoding refuses bad magic, an unknown format or type, and any cut inside a record', (t) => {
    const { tar } = makeTar(tempDir(t, 'index-refusals'));
    const plaintext = indexOf(tar, [65536]);
    const refused = (buf: Buffer, pattern: RegExp) =>
      assert.throws(() => decodeBlockIndex(buf, 'backups/X/index/base.tar'), (err) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && err.message.startsWith('backups/X/index/base.tar: ') && pattern.test(err.message));
    const bad = Buffer.from(plaintext);
    bad.write('WVIY', 0, 'ascii');
    refused(bad, /no WVIX header/);
    refused(plaintext.subarray(0, 10), /no WVIX header/);
    const format = Buffer.from(plaintext);
    format.writeUInt32BE(3, 4);
    refused(format, /format 3 is not known/);
    // Format 1 (a development version, 8-byte block records) is refused too.
    format.writeUInt32BE(1, 4);
    refused(format, /format 1 is not known/);
    const type = Buffer.from(plaintext);
    type[16] = 3;
    refused(type, /unknown member type 3/);
    // Cut at a record's end the rest still decodes (the plaintext's length is the envelope's
    // to vouch for); cut anywhere else it is refused.
    const full = decodeBlockIndex(plaintext, 'full');
    const ends = new Set<number>([16]);
    let at = 16;
    for (const m of full.members) {
      at += 5 + Buffer.byteLength(m.path) + (m.type === 'file' ? 16 + m.hashes.length : m.type === 'symlink' ? 2 + Buffer.byteLength(m.target!) : 0);
      ends.add(at);
    }
    assert.equal(at, plaintext.length);
    for (let cut = 16; cut < plaintext.length; cut++) {
      if (ends.has(cut)) assert.equal(decodeBlockIndex(plaintext.subarray(0, cut), 'cut').members.length, [...ends].filter((e) => e <= cut).length - 1);
      else refused(plaintext.subarray(0, cut), /truncated/);
    }
  });
});

describe('backup parts in 32 KiB frames', () => {
  for (const codec of CODEC_NAMES) {
    for (const encrypted of [false, true]) {
      if (codec === 'none' && !encrypted) continue;
      test(`${codec}${encrypted ? ' + aes-256-gcm' : ''}: a part in ${BACKUP_FRAME_SIZE}-byte frames reads back`, async (t) => {
        const root = tempDir(t, 'frames');
        let keys = {};
        if (encrypted) {
          await createKeyPair(path.join(root, 'k'), path.join(root, 'k.pub'));
          keys = { recipient: loadPublicKey(path.join(root, 'k.pub')), privateKey: loadPrivateKey(path.join(root, 'k')) };
        }
        const archive = new Archive(new LocalStorage(path.join(root, 'archive')), { codec, ...keys });
        // Compressible, like a tar of a database: a repeated page with a little noise.
        const part = Buffer.alloc(4 * 1024 * 1024 - 1000);
        for (let i = 0; i < part.length; i += 8192) randomBytes(100).copy(part, i);
        const shared = Buffer.from(new SharedArrayBuffer(part.length));
        part.copy(shared);
        const key = 'backups/20261207T010203Z/parts/base.tar.000000';
        await archive.putOwnedBuffer(key, shared, createHash('sha256').update(part).digest(), { frameSize: BACKUP_FRAME_SIZE });
        assert.ok((await archive.get(key))!.equals(part));
        const frames = framePlainLengths(fs.readFileSync(path.join(root, 'archive', key)), key);
        assert.equal(frames.length, Math.ceil(part.length / BACKUP_FRAME_SIZE));
        assert.ok(frames.slice(0, -1).every((n) => n === BACKUP_FRAME_SIZE), 'every frame but the last holds 32 KiB');
        assert.equal(frames[frames.length - 1], part.length % BACKUP_FRAME_SIZE);
        await archive.close();
      });
    }
  }
});
