/**
 * One pass per byte on the write path (issue 15): storing a sealed spool file hashes its
 * plaintext once and the stored bytes once on the way out, the read-back hashes the stored
 * bytes once more, and nothing is copied in memory except, on S3 and Azure, once into the
 * part (block) buffer.
 * Counted on this thread by the bench's byte counter (copies by Buffer.concat, Buffer.from,
 * Uint8Array.from and the like; SHA-256 by Hash#update and webcrypto; file reads), against a
 * local archive, a real s3rver and a real Azurite.
 */
// First: everything imported after it is counted.
import { counterReady } from '../helpers/count-bytes';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { collectCounts, resetCounts, type ByteCounts } from '../../bench/byte-counter';
import { Archive, type ArchiveOptions } from '../../src/archive/archive';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { encodePlainHeader, PLAIN_HEADER_LENGTH } from '../../src/archive/envelope';
import { LocalStorage } from '../../src/storage/local';
import { AzureStorage } from '../../src/storage/azure';
import { S3Storage } from '../../src/storage/s3';
import type { Storage } from '../../src/storage/storage';
import { removeDir, tmpDir } from '../helpers/pg-cluster';
import { AzuriteServer } from '../helpers/azurite-server';
import { S3Server } from '../helpers/s3-server';

const MiB = 1024 * 1024;
/** Bookkeeping around the bytes (headers, keys, XML, small buffers): far below one frame. */
const SLACK = 64 * 1024;

/** Compresses about 3:1, like WAL: text with numbers. */
function walLike(size: number): Buffer {
  const buf = Buffer.alloc(size);
  let at = 0;
  for (let i = 0; at < size; i++) at += buf.write(`${i}|order ${(i * 7919) % 100003}|status active|${(i * 31337) % 65536} `, at, 'latin1');
  return buf;
}

describe('one pass per byte when storing a sealed spool file', () => {
  let server: S3Server;
  let azurite: AzuriteServer;
  let dir: string;
  let file: string;
  const plaintext = walLike(8 * MiB);
  const digest = createHash('sha256').update(plaintext).digest();
  let encrypted: ArchiveOptions;
  let n = 0;

  before(async () => {
    await counterReady;
    [server, azurite] = await Promise.all([S3Server.start(), AzuriteServer.start()]);
    azurite.useKeyInThisProcess();
    dir = tmpDir('walvault-write-passes-');
    file = path.join(dir, 'spool-file');
    fs.writeFileSync(file, Buffer.concat([encodePlainHeader(plaintext.length, digest), plaintext]));
    await createKeyPair(path.join(dir, 'site.key'), path.join(dir, 'site.pub'));
    encrypted = { codec: 'zstd', recipient: loadPublicKey(path.join(dir, 'site.pub')), privateKey: loadPrivateKey(path.join(dir, 'site.key')) };
  });

  after(async () => {
    await server?.destroy();
    await azurite?.destroy();
    removeDir(dir);
  });

  /** What storing the spool file once cost, after a first store that loads modules and connects. */
  async function counted(storage: Storage, opts: ArchiveOptions, put: { bodyCrc32c?: number } = {}): Promise<{ counts: ByteCounts; stored: number }> {
    const archive = new Archive(storage, opts);
    const key = (i: number) => Archive.walKey(`0000000100000000000000${String(++n + i).padStart(2, '0')}`);
    assert.equal(await archive.putSealedFile(key(0), file, plaintext.length, digest), 'stored');
    const k = key(50);
    await collectCounts(0);
    resetCounts();
    assert.equal(await archive.putSealedFile(k, file, plaintext.length, digest, put), 'stored');
    const counts = await collectCounts(0);
    const stored = (await storage.head(k))!.size;
    await archive.close();
    return { counts, stored };
  }

  function near(actual: number, expected: number, what: string): void {
    assert.ok(Math.abs(actual - expected) <= SLACK, `${what}: ${actual} bytes, expected ${expected} (± ${SLACK})`);
  }

  it('local, plain: linked, nothing copied, read back once and hashed once', async () => {
    const { counts } = await counted(new LocalStorage(path.join(dir, 'plain')), {});
    near(counts.copy, 0, 'copied');
    near(counts.sha256, plaintext.length, 'hashed');
    near(counts.read, PLAIN_HEADER_LENGTH + plaintext.length, 'read');
  });

  it("local, plain, with the CRC32C the receiver took on arrival: linked, read back once, no SHA-256 at all", async () => {
    const { counts } = await counted(new LocalStorage(path.join(dir, 'plain-crc')), {}, { bodyCrc32c: crc32c(plaintext) });
    near(counts.copy, 0, 'copied');
    near(counts.sha256, 0, 'hashed');
    near(counts.read, PLAIN_HEADER_LENGTH + plaintext.length, 'read');
  });

  const stores: Record<'local' | 's3rver' | 'Azurite', () => Storage> = {
    local: () => new LocalStorage(path.join(dir, `archive-${++n}`)),
    s3rver: () => new S3Storage({ bucket: server.bucket, prefix: `passes-${++n}/` }, { ...server.settings(), signPayloads: false }),
    Azurite: () => new AzureStorage({ container: azurite.container, prefix: `passes-${++n}/` }, azurite.settings()),
  };
  for (const store of ['local', 's3rver', 'Azurite'] as const) {
    for (const [label, opts] of [
      ['zstd', () => ({ codec: 'zstd' }) as ArchiveOptions],
      ['zstd + encryption', () => encrypted],
    ] as const) {
      const remote = store !== 'local';
      it(`${store}, ${label}: the plaintext hashed once, the stored bytes once out and once read back, ${remote ? 'copied once into the part buffer' : 'nothing copied'}`, async () => {
        const { counts, stored } = await counted(stores[store](), opts());
        assert.ok(stored < plaintext.length / 2, `compressed: ${stored} bytes stored`);
        near(counts.sha256, plaintext.length + 2 * stored, 'hashed');
        near(counts.copy, remote ? stored : 0, `copied (${JSON.stringify(counts.copyBy)})`);
        // The spool file's WAL once; locally also the object, read back.
        near(counts.read, plaintext.length + (remote ? 0 : stored), 'read');
      });
    }
  }
});
