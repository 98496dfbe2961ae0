/**
 * One storage suite, two backends: the local directory and S3 (a real s3rver over HTTP).
 */
import { after, before } from 'node:test';
import * as path from 'node:path';
import { LocalStorage } from '../../src/storage/local';
import { S3Storage } from '../../src/storage/s3';
import { removeDir, tmpDir } from '../helpers/pg-cluster';
import { S3Server } from '../helpers/s3-server';
import { storageSuite } from '../helpers/storage-suite';

storageSuite('local directory', async () => {
  const dir = tmpDir('walvault-storage-');
  return { storage: new LocalStorage(path.join(dir, 'archive')), cleanup: async () => removeDir(dir) };
});

let server: S3Server;
let n = 0;
before(async () => {
  server = await S3Server.start();
});
after(async () => {
  await server?.destroy();
});

storageSuite('S3 (s3rver)', async () => {
  // A fresh prefix per test, small parts and small list pages so multipart uploads and
  // pagination are exercised.
  const prefix = `suite-${++n}`;
  const storage = new S3Storage({ bucket: server.bucket, prefix: `${prefix}/` }, { ...server.settings(), partSizeBytes: 5 * 1024 * 1024, listPageSize: 4 });
  return { storage, cleanup: async () => undefined };
});
