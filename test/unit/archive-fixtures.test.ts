/**
 * Issue 18, item 5: the archive format is frozen. Every object in fixtures/ was written by
 * an earlier walvault (test/helpers/make-fixtures.ts); today's readers must decode each one
 * to the plaintext recorded for it. A second, independent reader built from
 * docs/archive-format.md alone (node:crypto, node:zlib and the codec libraries, none of
 * walvault's own code) decodes them too, so the document is proven to be enough to read an
 * archive without walvault.
 */
import assert from 'node:assert/strict';
import { createDecipheriv, createHash, createPublicKey, diffieHellman, hkdfSync, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { describe, test } from 'node:test';
import * as lz4 from 'lz4-napi';
import * as snappy from 'snappy';
import * as zstd from 'zstd-napi';
import { Archive } from '../../src/archive/archive';
import { createKeyPair, loadPrivateKey } from '../../src/archive/encryption';
import { decodeEnvelope } from '../../src/archive/read/decode-object';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { LocalStorage } from '../../src/storage/local';
import {
  fixturePlaintext,
  OBJECTS_ARCHIVE,
  OBJECTS_CLUSTER,
  OBJECTS_INDEX,
  SMALL_ARCHIVE,
  SMALL_ARCHIVE_INFO,
  TEST_PRIVATE_KEY,
  type ObjectsIndex,
  type SmallArchiveInfo,
} from '../helpers/archive-fixtures';

const index = JSON.parse(fs.readFileSync(OBJECTS_INDEX, 'utf8')) as ObjectsIndex;
const smallInfo = JSON.parse(fs.readFileSync(SMALL_ARCHIVE_INFO, 'utf8')) as SmallArchiveInfo;

function sha256Hex(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

function fileOf(root: string, key: string): string {
  return path.join(root, ...key.split('/'));
}

function rejectsWith(code: ErrorCode) {
  return (err: unknown) => {
    assert.ok(isWalvaultError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  };
}

// ---------------------------------------------------------------------------------------
// The reader from the document (docs/archive-format.md, sections 2 to 4), kept apart from
// src/ on purpose: if walvault's writer and reader drifted together, this one would not.

interface SpecObject {
  version: number;
  codec: string;
  encryption: string;
  framed: boolean;
  extension: Record<string, unknown>;
  frames: number | null;
  plaintext: Buffer;
}

const SPEC_CODECS = ['none', 'gzip', 'lz4', 'zstd', 'snappy'];
const SPEC_ENCRYPTIONS = ['none', 'aes-256-gcm'];

function specDecompress(codec: string, payload: Buffer, plainLength: number): Buffer {
  switch (codec) {
    case 'none':
      return payload;
    case 'gzip':
      return zlib.gunzipSync(payload);
    case 'lz4':
      // 4-byte little-endian plaintext length, then one raw LZ4 block: what uncompressSync takes.
      assert.equal(payload.readUInt32LE(0), plainLength, 'lz4: the length prefix is the frame\'s plaintext length');
      return lz4.uncompressSync(payload);
    case 'zstd':
      return zstd.decompress(payload);
    case 'snappy':
      return snappy.uncompressSync(payload, { asBuffer: true }) as Buffer;
  }
  throw new Error(`unknown codec ${codec}`);
}

function rawX25519Public(key: KeyObject): Buffer {
  const der = key.export({ type: 'spki', format: 'der' });
  return der.subarray(der.length - 32);
}

function specDataKey(enc: Record<string, string>, privateKey: KeyObject): Buffer {
  assert.equal(enc.alg, 'x25519-hkdf-sha256-a256gcm');
  const recipientRaw = rawX25519Public(createPublicKey(privateKey));
  assert.equal(enc.kid, createHash('sha256').update(recipientRaw).digest('hex').slice(0, 16), 'kid names the key');
  const epkRaw = Buffer.from(enc.epk, 'base64');
  const wk = Buffer.from(enc.wk, 'base64');
  assert.equal(epkRaw.length, 32);
  assert.equal(wk.length, 48);
  const epk = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), epkRaw]), format: 'der', type: 'spki' });
  const shared = diffieHellman({ privateKey, publicKey: epk });
  const kek = Buffer.from(hkdfSync('sha256', shared, Buffer.concat([epkRaw, recipientRaw]), Buffer.from('walvault v1 data key wrap'), 32));
  const d = createDecipheriv('aes-256-gcm', kek, Buffer.alloc(12));
  d.setAuthTag(wk.subarray(32));
  return Buffer.concat([d.update(wk.subarray(0, 32)), d.final()]);
}

function specDecode(obj: Buffer, privateKey?: KeyObject): SpecObject {
  assert.equal(obj.subarray(0, 4).toString('latin1'), 'WVLT', 'magic');
  const version = obj.readUInt8(4);
  assert.equal(version, 1, 'envelope version');
  const codec = SPEC_CODECS[obj.readUInt8(5)];
  const encryption = SPEC_ENCRYPTIONS[obj.readUInt8(6)];
  assert.ok(codec !== undefined && encryption !== undefined, 'known codec and encryption ids');
  const flags = obj.readUInt8(7);
  assert.equal(flags & ~1, 0, 'only the FRAMED flag');
  const framed = (flags & 1) === 1;
  const plaintextSize = Number(obj.readBigUInt64BE(8));
  const digest = obj.subarray(16, 48);
  const bodySize = Number(obj.readBigUInt64BE(48));
  const n = obj.readUInt32BE(56);
  const extension = n === 0 ? {} : (JSON.parse(obj.subarray(60, 60 + n).toString('utf8')) as Record<string, unknown>);
  assert.equal(obj.readUInt32BE(60 + n), zlib.crc32(obj.subarray(0, 60 + n)), 'header CRC-32');
  const headerBytes = obj.subarray(0, 64 + n);
  let plaintext: Buffer;
  let frames: number | null = null;
  if (!framed) {
    assert.ok(codec === 'none' && encryption === 'none', 'unframed bodies are plain');
    assert.equal(bodySize, plaintextSize);
    assert.equal(obj.length, 64 + n + bodySize, 'object length');
    plaintext = obj.subarray(64 + n);
  } else {
    assert.equal(bodySize, 0, 'framed: body size 0');
    const trailer = obj.subarray(obj.length - 48);
    assert.equal(trailer.subarray(0, 4).toString('latin1'), 'WVND', 'trailer magic');
    frames = trailer.readUInt32BE(4);
    assert.equal(Number(trailer.readBigUInt64BE(8)), obj.length, 'trailer: object length');
    assert.deepEqual(trailer.subarray(16, 48), createHash('sha256').update(obj.subarray(0, obj.length - 48)).digest(), 'trailer: SHA-256 of the stored bytes');
    const dataKey = encryption === 'aes-256-gcm' ? specDataKey(extension.enc as Record<string, string>, privateKey!) : null;
    const pieces: Buffer[] = [];
    let at = 64 + n;
    for (let i = 0; ; i++) {
      const frameHeader = obj.subarray(at, at + 8);
      const payloadLength = frameHeader.readUInt32BE(0);
      const field = frameHeader.readUInt32BE(4);
      const final = (field & 0x80000000) !== 0;
      const plainLength = field & 0x7fffffff;
      assert.ok(plainLength <= 1 << 20, 'a frame holds at most 1 MiB of plaintext');
      let payload = obj.subarray(at + 8, at + 8 + payloadLength);
      at += 8 + payloadLength;
      if (dataKey) {
        const nonce = Buffer.alloc(12);
        nonce.writeBigUInt64BE(BigInt(i), 0);
        nonce.writeUInt32BE(final ? 1 : 0, 8);
        const d = createDecipheriv('aes-256-gcm', dataKey, nonce);
        d.setAAD(Buffer.concat([headerBytes, frameHeader]));
        d.setAuthTag(payload.subarray(payload.length - 16));
        payload = Buffer.concat([d.update(payload.subarray(0, payload.length - 16)), d.final()]);
      }
      const plain = specDecompress(codec, payload, plainLength);
      assert.equal(plain.length, plainLength, `frame ${i}: plaintext length`);
      pieces.push(plain);
      if (final) {
        assert.equal(at, obj.length - 48, 'the final frame ends where the trailer begins');
        assert.equal(frames, i + 1, 'trailer: frame count');
        break;
      }
    }
    plaintext = Buffer.concat(pieces);
  }
  assert.equal(plaintext.length, plaintextSize, 'plaintext size');
  assert.deepEqual(createHash('sha256').update(plaintext).digest(), digest, 'plaintext SHA-256');
  return { version, codec, encryption, framed, extension, frames, plaintext };
}

// ---------------------------------------------------------------------------------------

describe('fixtures/objects: every codec, with and without encryption, decodes to its recorded plaintext', () => {
  const privateKey = loadPrivateKey(TEST_PRIVATE_KEY);
  const withKey = new Archive(new LocalStorage(OBJECTS_ARCHIVE), { privateKey });
  const withoutKey = new Archive(new LocalStorage(OBJECTS_ARCHIVE));

  test('the index covers every codec, both encryptions, each size, and every file in the archive', () => {
    const combos = new Set(index.objects.map((o) => `${o.codec}/${o.encryption}/${o.size}`));
    for (const codec of ['none', 'gzip', 'lz4', 'zstd', 'snappy']) {
      for (const enc of ['none', 'aes-256-gcm']) for (const size of ['empty', 'small', 'large']) assert.ok(combos.has(`${codec}/${enc}/${size}`), `${codec}/${enc}/${size}`);
    }
    assert.equal(index.keyId, privateKey.keyId, 'encrypted for the test-only key pair');
    const listed = [...index.objects.map((o) => o.key), ...index.leases.map((l) => l.key), 'cluster.json'].sort();
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(dir, e.name));
        else files.push(path.relative(OBJECTS_ARCHIVE, path.join(dir, e.name)).split(path.sep).join('/'));
      }
    };
    walk(OBJECTS_ARCHIVE);
    assert.deepEqual(files.sort(), listed);
    for (const o of index.objects) if (o.size === 'large' && o.framed) assert.equal(o.frames, 2, `${o.key} spans two frames`);
  });

  test('the fixture files are as written, and their plaintexts are what the generator makes', () => {
    for (const o of [...index.objects, ...index.leases]) {
      const bytes = fs.readFileSync(fileOf(OBJECTS_ARCHIVE, o.key));
      assert.equal(bytes.length, o.storedBytes, `${o.key}: stored size`);
      assert.equal(sha256Hex(bytes), o.storedSha256, `${o.key}: stored bytes changed (a fixture must never be edited)`);
    }
    for (const o of index.objects) assert.equal(sha256Hex(fixturePlaintext(o.seed, o.plaintextBytes)), o.plaintextSha256, `${o.key}: generator`);
  });

  test('cluster.json', async () => {
    const cluster = await withoutKey.readCluster();
    assert.ok(cluster);
    assert.equal(cluster.systemId, OBJECTS_CLUSTER.systemId);
    assert.equal(cluster.walSegmentSize, OBJECTS_CLUSTER.walSegmentSize);
    assert.deepEqual(cluster.settings, { compression: 'none', encryption: null });
  });

  for (const o of index.objects) {
    test(`${o.key} (${o.codec}, ${o.encryption}, ${o.plaintextBytes} bytes)`, async () => {
      const got = await withKey.read(o.key, async (d) => {
        const chunks: Buffer[] = [];
        for await (const c of d.chunks) chunks.push(Buffer.from(c));
        return { header: d.header, plaintext: Buffer.concat(chunks) };
      });
      assert.ok(got, 'present');
      assert.equal(got.header.version, 1);
      assert.equal(got.header.codec, o.codec);
      assert.equal(got.header.encryption, o.encryption);
      assert.equal(got.header.framed, o.framed);
      assert.equal(got.plaintext.length, o.plaintextBytes);
      assert.equal(sha256Hex(got.plaintext), o.plaintextSha256);

      if (o.encryption === 'none') {
        const plain = await withoutKey.get(o.key);
        assert.ok(plain && sha256Hex(plain) === o.plaintextSha256, 'unencrypted: read without any key');
      } else {
        await assert.rejects(withoutKey.get(o.key), rejectsWith('ARCHIVE_KEY_REQUIRED'));
        // verify's view without the key: the stored bytes against the trailer.
        const checked = await withoutKey.checkObject(o.key);
        assert.ok(checked && !checked.plaintextChecked && checked.storedBytes === o.storedBytes);
      }

      const spec = specDecode(fs.readFileSync(fileOf(OBJECTS_ARCHIVE, o.key)), o.encryption === 'none' ? undefined : privateKey.key);
      assert.equal(sha256Hex(spec.plaintext), o.plaintextSha256, 'the document\'s reader agrees');
      assert.equal(spec.codec, o.codec);
      assert.equal(spec.frames, o.frames);
      if (o.writtenBy === 'putSealedFile') {
        assert.deepEqual(spec.extension, {}, 'a sealed spool file has no extension: a 64-byte header');
      } else {
        assert.deepEqual(spec.extension.bind, { key: o.key, sys: OBJECTS_CLUSTER.systemId }, 'bound to its key and cluster');
      }
    });
  }

  test('an encrypted fixture read with another private key is refused as a key mismatch', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-fixture-keys-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    await createKeyPair(path.join(dir, 'other.key'), path.join(dir, 'other.pub'));
    const other = new Archive(new LocalStorage(OBJECTS_ARCHIVE), { privateKey: loadPrivateKey(path.join(dir, 'other.key')) });
    const key = index.objects.find((o) => o.encryption !== 'none' && o.size === 'small')!.key;
    await assert.rejects(other.get(key), rejectsWith('ARCHIVE_KEY_MISMATCH'));
  });

  test('an object under another name is refused by its binding', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-fixture-moved-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.cpSync(OBJECTS_ARCHIVE, dir, { recursive: true });
    fs.copyFileSync(fileOf(OBJECTS_ARCHIVE, 'data/zstd/plain/small'), fileOf(dir, 'data/zstd/plain/large'));
    await assert.rejects(new Archive(new LocalStorage(dir)).get('data/zstd/plain/large'), rejectsWith('ARCHIVE_MISPLACED'));
  });

  test('the leases decode, and the document\'s reader reads them too', async () => {
    for (const l of index.leases) {
      const bytes = fs.readFileSync(fileOf(OBJECTS_ARCHIVE, l.key));
      const { header, plaintext } = await decodeEnvelope(bytes, l.key);
      assert.equal(header.codec, 'none');
      assert.deepEqual(header.extension, {}, 'leases carry no binding');
      const holder = JSON.parse(plaintext.toString('utf8')) as Record<string, unknown>;
      for (const f of ['id', 'host', 'pid', 'site', 'state', 'acquiredAt', 'heartbeatAt']) assert.ok(f in holder, `${l.key}: ${f}`);
      if (l.key === 'backups/lease.json') {
        assert.equal(holder.backup, '20261201T000000Z');
        assert.deepEqual(holder.progress, { phase: 'streaming', bytesDone: 1048576, bytesTotal: 4194304, secondsLeft: 3 });
      }
      assert.deepEqual(specDecode(bytes).plaintext, plaintext);
    }
  });
});

describe('fixtures/archive-small: every object decodes, and the catalog agrees with what it names', () => {
  const archive = new Archive(new LocalStorage(SMALL_ARCHIVE));
  const read = (key: string): Buffer => fs.readFileSync(fileOf(SMALL_ARCHIVE, key));

  test('the files are as written', () => {
    for (const o of smallInfo.objects) {
      const bytes = read(o.key);
      assert.equal(bytes.length, o.storedBytes, o.key);
      assert.equal(sha256Hex(bytes), o.storedSha256, `${o.key}: stored bytes changed (a fixture must never be edited)`);
    }
    const kinds = smallInfo.objects.map((o) => o.key);
    assert.ok(kinds.includes('cluster.json'));
    assert.ok(kinds.some((k) => /^wal\/[0-9A-F]{24}$/.test(k)), 'segments');
    assert.ok(kinds.some((k) => /^wal\/[0-9A-F]{8}\.history$/.test(k)), 'a history file');
    assert.ok(kinds.some((k) => /^wal\/[0-9A-F]{24}\.partial$/.test(k)), 'a partial');
    assert.ok(kinds.includes(`backups/${smallInfo.backup}/complete.json`), 'a complete backup');
  });

  test('both readers decode every object; WAL and catalog objects are what their names say', async () => {
    const cluster = await archive.readCluster();
    assert.ok(cluster);
    assert.equal(cluster.systemId, smallInfo.systemId);
    assert.deepEqual(cluster.settings, { compression: 'zstd', encryption: null });
    const plain = new Map<string, Buffer>();
    for (const o of smallInfo.objects) {
      const ours = await archive.get(o.key);
      assert.ok(ours, o.key);
      const spec = specDecode(read(o.key));
      assert.ok(spec.plaintext.equals(ours), `${o.key}: the readers agree`);
      if (o.key !== 'cluster.json') assert.deepEqual(spec.extension.bind, { key: o.key, sys: cluster.systemId }, `${o.key}: binding`);
      plain.set(o.key, ours);
      if (/^wal\/[0-9A-F]{24}$/.test(o.key)) {
        assert.equal(spec.codec, 'zstd');
        assert.equal(ours.length, cluster.walSegmentSize, `${o.key}: a whole segment`);
        // PostgreSQL's XLogLongPageHeaderData (little-endian here): xlp_pageaddr at 8, xlp_sysid at 24.
        const segNo: bigint = BigInt('0x' + o.key.slice(12, 20)) * 0x100000000n / BigInt(cluster.walSegmentSize) + BigInt('0x' + o.key.slice(20, 28));
        assert.equal(ours.readBigUInt64LE(8), segNo * BigInt(cluster.walSegmentSize), `${o.key}: its own segment`);
        assert.equal(ours.readBigUInt64LE(24).toString(), cluster.systemId, `${o.key}: the cluster's WAL`);
      }
      if (o.key.endsWith('.partial')) assert.ok(ours.length > 0 && ours.length < cluster.walSegmentSize, `${o.key}: part of a segment`);
    }
    const history = plain.get('wal/00000002.history')!.toString('utf8');
    assert.match(history, /^1\t[0-9A-F]+\/[0-9A-F]+\t/m, 'a history file names its parent and switch point');

    const prefix = `backups/${smallInfo.backup}/`;
    const metadataText = plain.get(prefix + 'metadata.json')!;
    const metadata = JSON.parse(metadataText.toString('utf8'));
    const marker = JSON.parse(plain.get(prefix + 'complete.json')!.toString('utf8'));
    assert.equal(metadata.format, 1);
    assert.equal(marker.name, smallInfo.backup);
    assert.equal(marker.metadataSha256, sha256Hex(metadataText), 'the marker vouches for metadata.json');
    assert.deepEqual(marker.metadata, metadata);
    const manifest = plain.get(metadata.manifest.key)!;
    assert.equal(manifest.length, metadata.manifest.size);
    assert.equal(sha256Hex(manifest), metadata.manifest.sha256);
    for (const a of metadata.archives) {
      for (const p of a.parts) {
        const part = plain.get(p.key)!;
        assert.equal(part.length, p.size, `${p.key}: size`);
        assert.equal(sha256Hex(part), p.sha256, `${p.key}: SHA-256`);
        assert.equal(read(p.key).length, p.storedSize, `${p.key}: stored size`);
      }
    }
  });
});
