/**
 * Objects bound to their key and cluster (issue 14, item 1): an object copied over another
 * name, position or archive is refused on every read path naming what it is; an encrypted
 * object's binding is authenticated; objects without a binding (earlier versions) and sealed
 * spool files (fixed 64-byte header) stay readable.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Archive, type ArchiveOptions } from '../../src/archive/archive';
import type { ClusterInfo } from '../../src/archive/cluster-marker';
import { codecByName } from '../../src/archive/codecs';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { crc32 } from '@node-rs/crc32';
import { encodeEnvelope, encodeFramedHeader, encodePlainHeader, readEnvelopeHeader, sha256 } from '../../src/archive/envelope';
import { encodeFrames } from '../../src/archive/framed-body';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { LocalStorage } from '../../src/storage/local';
import { segmentFileName } from '../../src/wal/lsn';

type T = { after(fn: () => Promise<void>): void };
const SEG = 16 << 20;
const OURS: ClusterInfo = { systemId: '7321487932742317001', pgVersionNum: 170004, walSegmentSize: SEG };
const seg = (n: number) => `wal/${segmentFileName(1, BigInt(n), SEG)}`;

async function tempDir(t: T, name: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `walvault-${name}-`));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function archiveAt(t: T, opts: ArchiveOptions = {}, cluster: ClusterInfo | null = OURS) {
  const root = await tempDir(t, 'binding');
  const archive = new Archive(new LocalStorage(root), opts);
  if (cluster) await archive.ensureCluster(cluster);
  return { root, archive, reader: new Archive(new LocalStorage(root), { privateKey: opts.privateKey }) };
}

async function encryption(t: T): Promise<ArchiveOptions> {
  const dir = await tempDir(t, 'keys');
  await createKeyPair(path.join(dir, 'k'), path.join(dir, 'k.pub'));
  return { codec: 'zstd', recipient: loadPublicKey(path.join(dir, 'k.pub')), privateKey: loadPrivateKey(path.join(dir, 'k')) };
}

function isCode(code: ErrorCode, ...parts: string[]) {
  return (err: unknown) => {
    assert.ok(isWalvaultError(err, code), `expected ${code}, got ${String(err)}`);
    for (const p of parts) assert.ok(err.message.includes(p), `message lacks "${p}": ${err.message}`);
    return true;
  };
}

async function copyObject(fromRoot: string, from: string, toRoot: string, to: string): Promise<void> {
  await fs.mkdir(path.dirname(path.join(toRoot, to)), { recursive: true });
  await fs.copyFile(path.join(fromRoot, from), path.join(toRoot, to));
}

const KINDS = [
  ['plain', async (): Promise<ArchiveOptions> => ({})],
  ['zstd', async (): Promise<ArchiveOptions> => ({ codec: 'zstd' })],
  ['zstd + aes-256-gcm', encryption],
] as const;

describe('objects are bound to their key and cluster', () => {
  for (const [kind, options] of KINDS) {
    test(`${kind}: a new object names its key and cluster; copied over another name it is refused on every read`, async (t) => {
      const opts = await options(t);
      const { root, archive, reader } = await archiveAt(t, opts);
      const a = randomBytes(100000);
      const b = randomBytes(100000);
      await archive.putImmutable(seg(0x36), a);
      await archive.putImmutable(seg(0x38), b);
      const stored = await fs.readFile(path.join(root, seg(0x38)));
      assert.deepEqual(readEnvelopeHeader(stored, 'x').extension.bind, { key: seg(0x38), sys: OURS.systemId });
      assert.ok((await reader.get(seg(0x38)))?.equals(b), 'read back under its own name');

      await copyObject(root, seg(0x36), root, seg(0x38));
      const fresh = new Archive(new LocalStorage(root), { privateKey: opts.privateKey });
      await assert.rejects(fresh.get(seg(0x38)), isCode('ARCHIVE_MISPLACED', `${seg(0x38)} in `, `holds ${seg(0x36)}`, "put that name's own object back"));
      await assert.rejects(fresh.read(seg(0x38), async () => assert.fail('a misplaced object is refused before its reader sees it')), isCode('ARCHIVE_MISPLACED', seg(0x36)));
      await assert.rejects(fresh.checkObject(seg(0x38)), isCode('ARCHIVE_MISPLACED', seg(0x36)));
      if (opts.recipient) {
        // verify without the private key still sees the binding (the trailer covers the header).
        await assert.rejects(new Archive(new LocalStorage(root)).checkObject(seg(0x38)), isCode('ARCHIVE_MISPLACED', seg(0x36)));
      }
    });

    test(`${kind}: a backup part copied over another position or from another backup is refused naming the part`, async (t) => {
      const opts = await options(t);
      const { root, archive, reader } = await archiveAt(t, opts);
      const part = (backup: string, i: number) => `backups/${backup}/parts/base.tar.00000${i}`;
      for (const [backup, i] of [['20260101T000000Z', 0], ['20260101T000000Z', 1], ['20260102T000000Z', 1]] as const) {
        const body = randomBytes(5000);
        await archive.putOwnedBuffer(part(backup, i), body, sha256(body));
      }
      await copyObject(root, part('20260101T000000Z', 0), root, part('20260101T000000Z', 1));
      await assert.rejects(reader.read(part('20260101T000000Z', 1), async () => assert.fail('refused before the part is read')), isCode('ARCHIVE_MISPLACED', part('20260101T000000Z', 1), `holds ${part('20260101T000000Z', 0)}`));
      await copyObject(root, part('20260101T000000Z', 0), root, part('20260102T000000Z', 1));
      await assert.rejects(reader.read(part('20260102T000000Z', 1), async () => assert.fail('refused before the part is read')), isCode('ARCHIVE_MISPLACED', part('20260102T000000Z', 1), `holds ${part('20260101T000000Z', 0)}`));
    });

    test(`${kind}: an object copied from another cluster's archive is refused naming its cluster`, async (t) => {
      const opts = await options(t);
      const theirs = await archiveAt(t, opts, { ...OURS, systemId: '6999999999999999999' });
      const ours = await archiveAt(t, opts);
      await theirs.archive.putImmutable('wal/00000002.history', Buffer.from('1\t0/3000000\tx\n'));
      await copyObject(theirs.root, 'wal/00000002.history', ours.root, 'wal/00000002.history');
      await assert.rejects(ours.reader.get('wal/00000002.history'), isCode('ARCHIVE_MISPLACED', 'database system 6999999999999999999', OURS.systemId));
    });
  }

  test('an encrypted object whose binding is rewritten (header CRC fixed up) fails authentication', async (t) => {
    const opts = await encryption(t);
    const { root, archive, reader } = await archiveAt(t, opts);
    await archive.putImmutable(seg(0x36), randomBytes(5000));
    const file = path.join(root, seg(0x36));
    const bytes = await fs.readFile(file);
    const h = readEnvelopeHeader(bytes, 'x');
    const extAt = 60;
    const ext = bytes.subarray(extAt, h.headerLength - 4);
    const forged = Buffer.from(ext.toString('utf8').replace(seg(0x36), seg(0x38)), 'utf8');
    assert.equal(forged.length, ext.length);
    forged.copy(bytes, extAt);
    bytes.writeUInt32BE(crc32(bytes.subarray(0, h.headerLength - 4)), h.headerLength - 4);
    await fs.mkdir(path.dirname(path.join(root, seg(0x38))), { recursive: true });
    await fs.writeFile(path.join(root, seg(0x38)), bytes);
    await assert.rejects(reader.get(seg(0x38)), isCode('ARCHIVE_AUTH_FAILED', seg(0x38)));
  });

  test('objects written before bindings (plain or framed) stay readable', async (t) => {
    const { root, reader } = await archiveAt(t, {});
    const plain = randomBytes(3000);
    await fs.mkdir(path.join(root, 'wal'), { recursive: true });
    await fs.writeFile(path.join(root, seg(1)), encodeEnvelope(plain));
    assert.ok((await reader.get(seg(1)))?.equals(plain));

    const framed = randomBytes(3000);
    const header = encodeFramedHeader('zstd', 'none', framed.length, sha256(framed));
    const chunks: Buffer[] = [header];
    async function* one() {
      yield framed;
    }
    for await (const pieces of encodeFrames(one(), framed.length, header, { codec: codecByName('zstd'), dataKey: null })) for (const p of pieces) chunks.push(Buffer.from(p));
    await fs.writeFile(path.join(root, seg(2)), Buffer.concat(chunks));
    assert.ok((await reader.get(seg(2)))?.equals(framed));
    const seen: Buffer[] = [];
    const checked = await reader.checkObject(seg(2), () => ({ write: (c) => void seen.push(Buffer.from(c)), end: () => undefined }));
    assert.equal(checked?.plaintextChecked, true);
    assert.ok(Buffer.concat(seen).equals(framed));
  });

  test('a sealed spool file keeps its 64-byte header when a local archive adopts it', async (t) => {
    const { root, archive } = await archiveAt(t, {});
    const dir = await tempDir(t, 'sealed');
    const plaintext = randomBytes(10000);
    const file = path.join(dir, 'spooled');
    await fs.writeFile(file, Buffer.concat([encodePlainHeader(plaintext.length, sha256(plaintext)), plaintext]));
    await archive.putSealedFile(seg(5), file, plaintext.length, sha256(plaintext));
    assert.equal(readEnvelopeHeader(await fs.readFile(path.join(root, seg(5))), 'x').headerLength, 64);
    assert.ok((await archive.get(seg(5)))?.equals(plaintext));
  });
});
