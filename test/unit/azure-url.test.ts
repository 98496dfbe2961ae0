/**
 * azure:// archive URLs (container naming rules, prefixes, credentials refused without being
 * echoed), their codec default, and the [sites.NAME.azure] table. No store is contacted.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { loadConfigFile } from '../../src/config/config';
import { defaultCompression } from '../../src/config/keys';
import { isWalvaultError } from '../../src/errors';
import { parseAzureUrl } from '../../src/storage/azure-url';
import { storageFromUrl } from '../../src/storage/open';

/** Asserts CONFIG_INVALID on one line, mentioning `includes` and none of `excludes`. */
function assertInvalid(fn: () => unknown, includes: string[], excludes: string[] = []): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isWalvaultError(err, 'CONFIG_INVALID'), `expected CONFIG_INVALID, got ${String(err)}`);
    assert.ok(!/[\r\n]/.test(err.message), `one line: ${err.message}`);
    for (const s of includes) assert.ok(err.message.includes(s), `message lacks ${JSON.stringify(s)}: ${err.message}`);
    for (const s of excludes) assert.ok(!err.message.includes(s), `message leaks ${JSON.stringify(s)}: ${err.message}`);
    return true;
  });
}

describe('azure:// URLs', () => {
  test('container and prefix, with or without a trailing slash; the scheme in any case', () => {
    assert.deepEqual(parseAzureUrl('azure://wal-archive/cluster1'), { container: 'wal-archive', prefix: 'cluster1/' });
    assert.deepEqual(parseAzureUrl('azure://wal-archive/a/b/'), { container: 'wal-archive', prefix: 'a/b/' });
    assert.deepEqual(parseAzureUrl('azure://wal-archive'), { container: 'wal-archive', prefix: '' });
    assert.deepEqual(parseAzureUrl('azure://wal-archive/'), { container: 'wal-archive', prefix: '' });
    assert.deepEqual(parseAzureUrl('AZURE://abc/x'), { container: 'abc', prefix: 'x/' });
    assert.deepEqual(parseAzureUrl(`azure://${'a'.repeat(63)}/x`), { container: 'a'.repeat(63), prefix: 'x/' });
    assert.equal(parseAzureUrl('s3://bucket/x'), null);
    assert.equal(parseAzureUrl('/var/archive'), null);
  });

  test('container names outside Azure\'s rules are refused with the rules', () => {
    for (const bad of ['ab', 'a'.repeat(64), 'Wal-Archive', 'wal_archive', 'wal--archive', '-wal', 'wal-', 'wal.archive', '']) {
      assertInvalid(() => parseAzureUrl(`azure://${bad}/p`), ['is not a valid container name', '3-63 lower-case letters, digits and single hyphens']);
    }
  });

  test('prefixes with empty, "." or ".." parts are refused', () => {
    for (const bad of ['a//b', './x', 'x/../y', '..']) {
      assertInvalid(() => parseAzureUrl(`azure://wal-archive/${bad}`), ['the prefix has an empty, "." or ".." part']);
    }
  });

  test('credentials or a SAS in the URL are refused without being echoed', () => {
    assertInvalid(() => parseAzureUrl('azure://acct:SECRETKEY@wal-archive/p'), ['carries credentials', 'AZURE_STORAGE_CONNECTION_STRING'], ['SECRETKEY']);
    assertInvalid(() => parseAzureUrl('azure://wal-archive/p?sv=2021&sig=SECRETSIG'), ['query string', 'AZURE_STORAGE_SAS_TOKEN'], ['SECRETSIG']);
    assertInvalid(() => parseAzureUrl('azure://wal-archive?sig=SECRETSIG'), ['query string'], ['SECRETSIG']);
  });

  test('storageFromUrl refuses a malformed azure URL before loading the SDK, and lists azure:// among the accepted forms', () => {
    assertInvalid(() => storageFromUrl('azure://Bad_Name/x'), ['azure://Bad_Name/...', 'not a valid container name']);
    assertInvalid(() => storageFromUrl('gcs://bucket/x'), ['azure://container/prefix']);
  });

  test('object stores get zstd by default, a directory none', () => {
    assert.equal(defaultCompression('azure://wal-archive/c1'), 'zstd');
    assert.equal(defaultCompression('  AZURE://wal-archive/c1'), 'zstd');
    assert.equal(defaultCompression('s3://bucket/c1'), 'zstd');
    assert.equal(defaultCompression('/var/archive'), 'none');
  });
});

describe('the [azure] table', () => {
  const load = (body: string | null) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-azure-config-'));
    try {
      const file = path.join(dir, 'w.toml');
      const table = body === null ? '' : `\n[sites.main.azure]\n${body}\n`;
      fs.writeFileSync(file, `[sites.main]\npg = "host=db1"\narchive = "azure://wal-archive/main"\nstate = "/s"\n${table}`);
      return loadConfigFile(file);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };

  test('absent: no settings, the environment decides; the codec defaults to zstd', () => {
    const site = load(null).sites[0];
    assert.deepEqual(site.azure, {});
    assert.equal(site.archive, 'azure://wal-archive/main');
    assert.equal(site.compression, 'zstd');
  });

  test('account, endpoint and deadlines are read', () => {
    const site = load('account = "walarchive"\nendpoint = "http://127.0.0.1:10000/devstoreaccount1"\nrequest_timeout_seconds = 5\nconnect_timeout_seconds = 2').sites[0];
    assert.deepEqual(site.azure, { account: 'walarchive', endpoint: 'http://127.0.0.1:10000/devstoreaccount1', requestTimeoutSeconds: 5, connectTimeoutSeconds: 2 });
  });

  test('bad values name the key and the fix; secrets are not accepted as keys', () => {
    assertInvalid(() => load('account = "Wal_Archive"'), ['sites.main.azure.account', '3-24 lower-case letters and digits']);
    assertInvalid(() => load('endpoint = "127.0.0.1:10000"'), ['sites.main.azure.endpoint', 'http:// or https://']);
    assertInvalid(() => load('endpoint = "https://acct.blob.core.windows.net/?sig=SECRETSIG"'), ['sites.main.azure.endpoint', 'without credentials or a query'], ['SECRETSIG']);
    assertInvalid(() => load('request_timeout_seconds = 0'), ['sites.main.azure.request_timeout_seconds', 'positive number of seconds']);
    assertInvalid(() => load('key = "SECRETKEY"'), ['sites.main.azure.key', 'unknown key'], ['SECRETKEY']);
  });
});
