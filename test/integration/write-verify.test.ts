/**
 * Every write is read back (issue 15: one pass per byte, but the read-back stays): a store
 * that damages one bit of what it is sent, while answering as if all were well, is caught
 * before the object counts as stored, and the damaged object is removed. The store is a real
 * s3rver behind a TCP proxy that flips a bit in one request body (../helpers/tampering-proxy.ts):
 * a part of a multipart upload, framed (zstd + encryption) or plain, or a single PUT.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Archive, type ArchiveOptions } from '../../src/archive/archive';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { encodePlainHeader } from '../../src/archive/envelope';
import { isWalvaultError } from '../../src/errors';
import { S3Storage } from '../../src/storage/s3';
import { removeDir, tmpDir } from '../helpers/pg-cluster';
import { S3Server } from '../helpers/s3-server';
import { TamperingProxy, type Tamper } from '../helpers/tampering-proxy';

const MiB = 1024 * 1024;
const PART = 5 * MiB;

/** Requests that carry part `n` of a multipart upload. */
function part(n: number): (requestLine: string) => boolean {
  return (line) => line.startsWith('PUT ') && new RegExp(`[?&]partNumber=${n}(&|\\s)`).test(line);
}

describe('a store that damages what it is sent is caught by the read-back', () => {
  let server: S3Server;
  let dir: string;
  let options: ArchiveOptions;
  const proxies: TamperingProxy[] = [];
  let prefixes = 0;

  before(async () => {
    server = await S3Server.start();
    dir = tmpDir('walvault-write-verify-');
    await createKeyPair(path.join(dir, 'site.key'), path.join(dir, 'site.pub'));
    options = { codec: 'zstd', recipient: loadPublicKey(path.join(dir, 'site.pub')), privateKey: loadPrivateKey(path.join(dir, 'site.key')) };
  });

  after(async () => {
    for (const p of proxies) await p.close();
    await server?.destroy();
    removeDir(dir);
  });

  /** An archive writing through a tampering proxy, and one reading the store directly. */
  async function archives(tamper: Tamper, opts: ArchiveOptions): Promise<{ through: Archive; direct: Archive; proxy: TamperingProxy }> {
    const proxy = await TamperingProxy.open(server.port, tamper);
    proxies.push(proxy);
    const location = { bucket: server.bucket, prefix: `verify-${++prefixes}/` };
    // Unsigned payloads, as over https: the read-back is then the only check of what the store took.
    const through = new Archive(new S3Storage(location, { ...server.settings(), endpoint: proxy.endpoint, partSizeBytes: PART, signPayloads: false }), opts);
    const direct = new Archive(new S3Storage(location, server.settings()), opts);
    return { through, direct, proxy };
  }

  function caught(key: string) {
    return (err: unknown) => {
      assert.ok(isWalvaultError(err, 'ARCHIVE_CORRUPT'), String(err));
      assert.match(err.message, /read back/);
      assert.ok(err.message.includes(key), err.message);
      assert.match(err.message, /removed/);
      return true;
    };
  }

  it('a bit flipped in part 2 of a framed (zstd + encrypted) multipart upload: refused, removed, and a retry stores it', async () => {
    const { through, direct, proxy } = await archives({ match: part(2), offset: 12345 }, options);
    // Random bytes do not compress: about 14 MiB stored, three parts.
    const data = randomBytes(14 * MiB);
    const key = 'wal/000000010000000000000003';
    await assert.rejects(through.putImmutable(key, data), caught(key));
    assert.equal(proxy.tampered.length, 1, 'one part body was damaged');
    assert.equal(await direct.exists(key), false, 'the damaged object was removed');
    // The proxy damages once: the retry goes through and the object reads back whole.
    assert.equal(await through.putImmutable(key, data), 'stored');
    assert.ok((await direct.get(key))?.equals(data));
    await through.close();
    await direct.close();
  });

  it('a bit flipped in the last part of a plain sealed spool file: refused, removed, and a retry stores it', async () => {
    const { through, direct, proxy } = await archives({ match: part(2), offset: 100 }, {});
    const plaintext = randomBytes(8 * MiB);
    const digest = createHash('sha256').update(plaintext).digest();
    const file = path.join(dir, '000000010000000000000004');
    fs.writeFileSync(file, Buffer.concat([encodePlainHeader(plaintext.length, digest), plaintext]));
    const key = 'wal/000000010000000000000004';
    await assert.rejects(through.putSealedFile(key, file, plaintext.length, digest), caught(key));
    assert.equal(proxy.tampered.length, 1);
    assert.equal(await direct.exists(key), false, 'the damaged object was removed');
    assert.equal(await through.putSealedFile(key, file, plaintext.length, digest), 'stored');
    assert.ok((await direct.get(key))?.equals(plaintext));
    await through.close();
    await direct.close();
  });

  it('a bit flipped in a single PUT (an object smaller than a part): refused and removed', async () => {
    const key = 'wal/000000010000000000000005';
    const { through, direct, proxy } = await archives({ match: (line) => line.startsWith('PUT ') && line.includes(key) && !line.includes('partNumber='), offset: 2000 }, options);
    const data = randomBytes(MiB + 17);
    await assert.rejects(through.putImmutable(key, data), caught(key));
    assert.equal(proxy.tampered.length, 1);
    assert.equal(await direct.exists(key), false, 'the damaged object was removed');
    await through.close();
    await direct.close();
  });

  it('request payloads are signed over a plain http endpoint, and left unsigned when sign_payloads is false', async () => {
    const proxy = await TamperingProxy.open(server.port, { match: () => false, offset: 0 });
    proxies.push(proxy);
    const body = randomBytes(PART + 1000);
    const payloadHashes = async (signPayloads: boolean | undefined): Promise<string[]> => {
      proxy.heads.length = 0;
      const settings = { ...server.settings(), endpoint: proxy.endpoint, partSizeBytes: PART, ...(signPayloads === undefined ? {} : { signPayloads }) };
      const storage = new S3Storage({ bucket: server.bucket, prefix: `signing-${++prefixes}/` }, settings);
      try {
        await storage.put('single', body.subarray(0, 1000));
        async function* chunks() {
          yield body;
        }
        await storage.put('multi', chunks());
      } finally {
        await storage.close();
      }
      return proxy.heads
        .filter((h) => /^PUT /.test(h))
        .map((h) => /\r\nx-amz-content-sha256:\s*(\S+)/i.exec(h)?.[1] ?? 'none');
    };
    const signed = await payloadHashes(undefined);
    assert.ok(signed.length >= 3, `a single PUT and two parts: ${signed.join(', ')}`);
    for (const h of signed) assert.match(h, /^[0-9a-f]{64}$/, 'http: the SHA-256 of the body is in the signature');
    const unsigned = await payloadHashes(false);
    assert.ok(unsigned.length >= 3);
    for (const h of unsigned) assert.equal(h, 'UNSIGNED-PAYLOAD');
  });
});
