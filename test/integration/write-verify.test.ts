/**
 * Every write is read back (issue 15: one pass per byte, but the read-back stays): a store
 * that damages one bit of what it is sent, while answering as if all were well, is caught
 * before the object counts as stored, and the damaged object is removed. The store is a real
 * s3rver, or a real Azurite, behind a TCP proxy that flips a bit in one request body
 * (../helpers/tampering-proxy.ts): a part (an Azure block) of a multipart upload, framed
 * (zstd + encryption) or plain, or a single PUT. Over http the Azure client sends each body's
 * MD5, which Azurite checks: for the store to take the damage without a word the proxy drops
 * it from the damaged request (and the requests are signed by a SAS, which leaves headers
 * out); left in, the store refuses the damaged body itself.
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
import { AzureStorage } from '../../src/storage/azure';
import { S3Storage } from '../../src/storage/s3';
import { AZURITE_ACCOUNT, AzuriteServer } from '../helpers/azurite-server';
import { removeDir, tmpDir } from '../helpers/pg-cluster';
import { S3Server } from '../helpers/s3-server';
import { TamperingProxy, type Tamper } from '../helpers/tampering-proxy';

const MiB = 1024 * 1024;
const PART = 5 * MiB;

/** A store behind tampering proxies: how to write through one, and its requests' shapes. */
interface Target {
  name: string;
  /** The store's own port (started in `before`). */
  port(): number;
  /** An archive at `prefix` writing through the proxy at `endpointPort`, and one reading the store directly. */
  archives(prefix: string, endpointPort: number, opts: ArchiveOptions): { through: Archive; direct: Archive };
  /** The request carrying part `n` (from 1) of a multipart upload (an Azure block). */
  part(n: number): (requestLine: string) => boolean;
  /** A single PUT of `key` (the whole object in one request). */
  single(key: string): (requestLine: string) => boolean;
  /** The header the proxy drops from the damaged request, so the store takes it. */
  strip?: string;
}

const AZURE_VARS = ['AZURE_STORAGE_CONNECTION_STRING', 'AZURE_STORAGE_ACCOUNT', 'AZURE_STORAGE_KEY', 'AZURE_STORAGE_SAS_TOKEN'];

describe('a store that damages what it is sent is caught by the read-back', () => {
  let server: S3Server;
  let azurite: AzuriteServer;
  let dir: string;
  let options: ArchiveOptions;
  const proxies: TamperingProxy[] = [];
  const savedEnv = Object.fromEntries(AZURE_VARS.map((v) => [v, process.env[v]]));
  let prefixes = 0;

  const s3: Target = {
    name: 'S3 (s3rver)',
    port: () => server.port,
    archives(prefix, endpointPort, opts) {
      const location = { bucket: server.bucket, prefix };
      // Unsigned payloads, as over https: the read-back is then the only check of what the store took.
      const through = new Archive(new S3Storage(location, { ...server.settings(), endpoint: `http://127.0.0.1:${endpointPort}`, partSizeBytes: PART, signPayloads: false }), opts);
      return { through, direct: new Archive(new S3Storage(location, server.settings()), opts) };
    },
    part: (n) => (line) => line.startsWith('PUT ') && new RegExp(`[?&]partNumber=${n}(&|\\s)`).test(line),
    single: (key) => (line) => line.startsWith('PUT ') && line.includes(key) && !line.includes('partNumber='),
  };

  const azure: Target = {
    name: 'Azure (Azurite)',
    port: () => azurite.port,
    archives(prefix, endpointPort, opts) {
      const location = { container: azurite.container, prefix };
      const through = new Archive(new AzureStorage(location, { account: AZURITE_ACCOUNT, endpoint: `http://127.0.0.1:${endpointPort}/${AZURITE_ACCOUNT}`, blockSizeBytes: PART }), opts);
      return { through, direct: new Archive(new AzureStorage(location, azurite.settings()), opts) };
    },
    // Block ids end in the block's index from 0 (../../src/storage/azure-upload.ts).
    part: (n) => (line) => {
      const id = /[?&]comp=block&.*blockid=([^&\s]+)/.exec(line)?.[1];
      return line.startsWith('PUT ') && id !== undefined && Buffer.from(decodeURIComponent(id), 'base64').toString().endsWith(`-${String(n - 1).padStart(6, '0')}`);
    },
    single: (key) => (line) => line.startsWith('PUT ') && line.includes(key) && !line.includes('comp='),
    strip: 'content-md5',
  };

  before(async () => {
    [server, azurite] = await Promise.all([S3Server.start(), AzuriteServer.start()]);
    // A SAS signs no header: the proxy may drop Content-MD5 without breaking the signature.
    for (const v of AZURE_VARS) delete process.env[v];
    process.env.AZURE_STORAGE_SAS_TOKEN = AzuriteServer.sasToken();
    dir = tmpDir('walvault-write-verify-');
    await createKeyPair(path.join(dir, 'site.key'), path.join(dir, 'site.pub'));
    options = { codec: 'zstd', recipient: loadPublicKey(path.join(dir, 'site.pub')), privateKey: loadPrivateKey(path.join(dir, 'site.key')) };
  });

  after(async () => {
    for (const p of proxies) await p.close();
    await server?.destroy();
    await azurite?.destroy();
    for (const v of AZURE_VARS) {
      if (savedEnv[v] === undefined) delete process.env[v];
      else process.env[v] = savedEnv[v];
    }
    removeDir(dir);
  });

  /** An archive writing through a tampering proxy in front of `target`, and one reading the store directly. */
  async function archives(target: Target, tamper: Tamper, opts: ArchiveOptions): Promise<{ through: Archive; direct: Archive; proxy: TamperingProxy }> {
    const proxy = await TamperingProxy.open(target.port(), { strip: target.strip, ...tamper });
    proxies.push(proxy);
    return { ...target.archives(`verify-${++prefixes}/`, proxy.port, opts), proxy };
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

  for (const target of [s3, azure]) {
    it(`${target.name}: a bit flipped in part 2 of a framed (zstd + encrypted) multipart upload: refused, removed, and a retry stores it`, async () => {
      const { through, direct, proxy } = await archives(target, { match: target.part(2), offset: 12345 }, options);
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

    it(`${target.name}: a bit flipped in the last part of a plain sealed spool file: refused, removed, and a retry stores it`, async () => {
      const { through, direct, proxy } = await archives(target, { match: target.part(2), offset: 100 }, {});
      const plaintext = randomBytes(8 * MiB);
      const digest = createHash('sha256').update(plaintext).digest();
      const file = path.join(dir, `000000010000000000000004-${prefixes}`);
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

    it(`${target.name}: a bit flipped in a single PUT (an object smaller than a part): refused and removed`, async () => {
      const key = 'wal/000000010000000000000005';
      const { through, direct, proxy } = await archives(target, { match: target.single(key), offset: 2000 }, options);
      const data = randomBytes(MiB + 17);
      await assert.rejects(through.putImmutable(key, data), caught(key));
      assert.equal(proxy.tampered.length, 1);
      assert.equal(await direct.exists(key), false, 'the damaged object was removed');
      await through.close();
      await direct.close();
    });
  }

  it('Azure (Azurite) over http: each request carries its body\'s MD5, so the store itself refuses a damaged block or blob; nothing is stored, and a retry stores it', async () => {
    for (const [what, key] of [
      ['block 2', 'wal/000000010000000000000007'],
      ['a single Put Blob', 'wal/000000010000000000000008'],
    ] as const) {
      const match = what === 'block 2' ? azure.part(2) : azure.single(key);
      const { through, direct, proxy } = await archives(azure, { match, offset: 2000, strip: undefined }, options);
      const data = randomBytes(what === 'block 2' ? 14 * MiB : MiB + 17);
      await assert.rejects(through.putImmutable(key, data), (err: unknown) => {
        assert.ok(isWalvaultError(err, 'STORAGE_IO'), `${what}: ${String(err)}`);
        assert.match(err.message, /Md5Mismatch/, what);
        assert.ok(err.message.includes(key), err.message);
        return true;
      });
      assert.equal(proxy.tampered.length, 1, `${what}: one body was damaged`);
      assert.equal(await direct.exists(key), false, `${what}: nothing under the key`);
      assert.equal(await through.putImmutable(key, data), 'stored', `${what}: the retry`);
      assert.ok((await direct.get(key))?.equals(data), `${what}: stored whole`);
      await through.close();
      await direct.close();
    }
  });

  // S3's own: payload signing is an S3 (SigV4) setting; Azure's check over http is the MD5 above.
  it('S3 (s3rver): request payloads are signed over a plain http endpoint, and left unsigned when sign_payloads is false', async () => {
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
