import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import { LocalStorage } from '../../src/storage/local';
import { storageFromUrl } from '../../src/storage/open';
import { runTestAs, unprivilegedUser } from '../helpers/pg-cluster';

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-local-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file and directory under `dir`, relative, sorted. */
async function walkAll(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
    const name = rel === '' ? e.name : `${rel}/${e.name}`;
    out.push(name);
    if (e.isDirectory()) out.push(...(await walkAll(dir, name)));
  }
  return out.sort();
}

function isCode(code: ErrorCode, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(isWalvaultError(err, code), `expected ${code}, got ${String(err)}`);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

describe('LocalStorage', () => {
  test('adoptFile links a file in as an object, creating directories, and never replaces one', async (t) => {
    const root = await tempDir(t);
    const outside = await tempDir(t);
    const s = new LocalStorage(root);
    const file = path.join(outside, 'f');
    await fs.writeFile(file, 'first');
    assert.equal(await s.adoptFile('wal/deep/a', file), 'adopted');
    assert.equal((await s.get('wal/deep/a'))?.toString(), 'first');
    assert.equal((await fs.stat(file)).nlink, 2);

    const second = path.join(outside, 'g');
    await fs.writeFile(second, 'second');
    assert.equal(await s.adoptFile('wal/deep/a', second), 'exists');
    assert.equal((await s.get('wal/deep/a'))?.toString(), 'first', 'the object is unchanged');
    assert.equal((await fs.stat(second)).nlink, 1);
  });

  test('put/get/head/delete round trip', async (t) => {
    const root = await tempDir(t);
    const s = new LocalStorage(root);
    const body = randomBytes(1000);

    assert.equal(await s.get('obj'), null);
    assert.equal(await s.head('obj'), null);
    await s.put('obj', body);
    assert.deepEqual(await s.get('obj'), body);
    assert.deepEqual(withoutTime(await s.head('obj')), { key: 'obj', size: 1000 });
    assert.deepEqual(await fs.readFile(path.join(root, 'obj')), body);

    await s.delete('obj');
    assert.equal(await s.get('obj'), null);
    assert.equal(await s.head('obj'), null);
    await assert.doesNotReject(s.delete('obj'));
    await assert.doesNotReject(s.delete('never/existed/at/all'));
    await s.close();
  });

  test('getRange and getRangeNow give the same bytes: a range, into a given buffer, short at the end, null when missing', async (t) => {
    const s = new LocalStorage(await tempDir(t));
    const body = randomBytes(100_000);
    await s.put('a/obj', body);
    for (const [offset, length] of [[0, 100_000], [10, 500], [99_990, 100], [100_000, 10], [0, 100_001]]) {
      const want = body.subarray(offset, offset + length);
      assert.deepEqual(await s.getRange('a/obj', offset, length), want, `getRange ${offset}+${length}`);
      assert.deepEqual(s.getRangeNow('a/obj', offset, length), want, `getRangeNow ${offset}+${length}`);
      const into = Buffer.alloc(length + 5);
      const got = s.getRangeNow('a/obj', offset, length, into)!;
      assert.deepEqual(got, want);
      assert.equal(got.buffer, into.buffer, 'read into the buffer given');
    }
    assert.equal(s.getRangeNow('a/missing', 0, 10), null);
    assert.equal(await s.getRange('a/missing', 0, 10), null);
    await s.close();
  });

  test('empty objects are objects', async (t) => {
    const s = new LocalStorage(await tempDir(t));
    await s.put('empty', Buffer.alloc(0));
    assert.deepEqual(await s.get('empty'), Buffer.alloc(0));
    assert.deepEqual(withoutTime(await s.head('empty')), { key: 'empty', size: 0 });
  });

  test('nested keys create directories; list is recursive, sorted and prefix-filtered', async (t) => {
    const root = await tempDir(t);
    const s = new LocalStorage(path.join(root, 'not', 'yet', 'there'));
    const keys = ['wal/000000010000000000000010', 'backups/b1/part-2', 'wal/000000010000000000000002', 'cluster.json', 'backups/b1/part-10', 'wal/00000002.history', 'wal/sub/deep/x'];
    for (const [i, k] of keys.entries()) await s.put(k, Buffer.alloc(i + 1, i));

    const all = await s.list('');
    assert.deepEqual(
      all.map((o) => o.key),
      [...keys].sort((a, b) => (a < b ? -1 : 1)),
    );
    for (const o of all) assert.equal(o.size, keys.indexOf(o.key) + 1);

    assert.deepEqual(
      (await s.list('wal/')).map((o) => o.key),
      ['wal/000000010000000000000002', 'wal/000000010000000000000010', 'wal/00000002.history', 'wal/sub/deep/x'],
    );
    assert.deepEqual(
      (await s.list('wal/0000000100')).map((o) => o.key),
      ['wal/000000010000000000000002', 'wal/000000010000000000000010'],
    );
    assert.deepEqual((await s.list('wal/s')).map((o) => o.key), ['wal/sub/deep/x']);
    assert.deepEqual((await s.list('backups/b1/part-1')).map((o) => o.key), ['backups/b1/part-10']);
    assert.deepEqual((await s.list('c')).map((o) => o.key), ['cluster.json']);
    assert.deepEqual(await s.list('nothing/here/'), []);
    assert.deepEqual(await s.list('wal/zzz'), []);
    assert.deepEqual(await s.get('wal/sub/deep/x'), Buffer.alloc(7, 6));
  });

  test('a directory is not an object', async (t) => {
    const s = new LocalStorage(await tempDir(t));
    await s.put('wal/x', Buffer.from('x'));
    assert.equal(await s.get('wal'), null);
    assert.equal(await s.head('wal'), null);
    await s.delete('wal');
    assert.deepEqual(await s.get('wal/x'), Buffer.from('x'));
  });

  test('bad keys are rejected and touch nothing', async (t) => {
    const base = await tempDir(t);
    const root = path.join(base, 'root');
    const s = new LocalStorage(root);
    await s.put('ok', Buffer.from('ok'));
    const before = await walkAll(base);

    const bad = ['', '/abs', '/etc/passwd', '../escape', 'a/../../escape', 'a//b', 'a/', 'a\0b', '.', 'a/./b', '..', 'a\\..\\b', '.x.tmp-1-abcd', 'wal/.seg.tmp-42-0f'];
    for (const key of bad) {
      await assert.rejects(s.put(key, Buffer.from('x')), isCode('STORAGE_IO', /invalid storage key/), `put ${JSON.stringify(key)}`);
      await assert.rejects(s.get(key), isCode('STORAGE_IO'), `get ${JSON.stringify(key)}`);
      await assert.rejects(s.head(key), isCode('STORAGE_IO'), `head ${JSON.stringify(key)}`);
      await assert.rejects(s.delete(key), isCode('STORAGE_IO'), `delete ${JSON.stringify(key)}`);
    }
    await assert.rejects(s.list('../'), isCode('STORAGE_IO'));
    await assert.rejects(s.list('a\0'), isCode('STORAGE_IO'));
    assert.deepEqual(await walkAll(base), before);
  });

  test('no temp files are left behind, after success or failure', async (t) => {
    const root = await tempDir(t);
    const s = new LocalStorage(root);
    for (let i = 0; i < 20; i++) await s.put(`wal/seg${i % 5}`, randomBytes(100 + i));
    await fs.mkdir(path.join(root, 'wal', 'adir'));
    await assert.rejects(s.put('wal/adir', Buffer.from('x')), isCode('STORAGE_IO', /wal\/adir: (EISDIR|ENOTEMPTY|EEXIST) /));
    await assert.rejects(s.put('wal/seg0/below', Buffer.from('x')), isCode('STORAGE_IO', /wal\/seg0: ENOTDIR /));

    const names = await walkAll(root);
    assert.deepEqual(names, ['wal', 'wal/adir', 'wal/seg0', 'wal/seg1', 'wal/seg2', 'wal/seg3', 'wal/seg4']);
  });

  test('list skips temp files of writers in progress', async (t) => {
    const root = await tempDir(t);
    const s = new LocalStorage(root);
    await s.put('wal/a', Buffer.from('a'));
    await fs.writeFile(path.join(root, 'wal', `.b.tmp-${process.pid}-00ff`), 'half');
    const listed = await s.list('');
    assert.deepEqual(listed.map((o) => ({ key: o.key, size: o.size })), [{ key: 'wal/a', size: 1 }]);
    assert.ok(listed[0].modified instanceof Date && Math.abs(listed[0].modified.getTime() - Date.now()) < 60000, 'with its modification time');
  });

  test('replace is atomic: readers see the old or the new object, never a mix', async (t) => {
    const s = new LocalStorage(await tempDir(t));
    const a = Buffer.alloc(2 << 20, 0xaa);
    const b = Buffer.alloc(1 << 20, 0xbb);
    await s.put('obj', a);
    let writing = true;
    const writer = (async () => {
      for (let i = 0; i < 30; i++) await s.put('obj', i % 2 === 0 ? b : a);
      writing = false;
    })();
    let reads = 0;
    while (writing) {
      const got = await s.get('obj');
      assert.ok(got !== null, 'object vanished during replace');
      assert.ok(got.equals(a) || got.equals(b), `torn read of ${got.length} bytes`);
      reads++;
    }
    await writer;
    assert.ok(reads > 0);
    assert.deepEqual(await s.get('obj'), a);
  });

  test('put replaces the inode (rename), it does not rewrite in place', async (t) => {
    const root = await tempDir(t);
    const s = new LocalStorage(root);
    await s.put('obj', Buffer.from('one'));
    const ino1 = (await fs.stat(path.join(root, 'obj'))).ino;
    await s.put('obj', Buffer.from('two'));
    assert.notEqual((await fs.stat(path.join(root, 'obj'))).ino, ino1);
    assert.equal((await s.get('obj'))?.toString(), 'two');
  });

  const EACCES_TEST = 'I/O errors name the path and the OS error code';
  // Root ignores permissions: as root (CI) the test runs again as the unprivileged server OS
  // user (postgres), where the locked directory really refuses.
  test(EACCES_TEST, { skip: process.getuid?.() === 0 && !unprivilegedUser() && 'root ignores permissions, and there is no postgres OS user to run it as' }, async (t) => {
    const user = unprivilegedUser();
    if (user) {
      runTestAs(user, __filename, EACCES_TEST);
      t.diagnostic(`ran as ${user.name} (uid ${user.uid}) in a child node --test`);
      return;
    }
    const root = await tempDir(t);
    const s = new LocalStorage(root);
    await s.put('locked/obj', Buffer.from('x'));
    await fs.chmod(path.join(root, 'locked'), 0o000);
    try {
      await assert.rejects(s.get('locked/obj'), (err: unknown) => {
        assert.ok(isWalvaultError(err, 'STORAGE_IO'));
        assert.match(err.message, /locked\/obj/);
        assert.match(err.message, /EACCES/);
        assert.ok(err.cause instanceof Error);
        return true;
      });
    } finally {
      // Here, not in t.after: after hooks run in the order they were added, and tempDir's
      // removal (added first) cannot look inside a directory of mode 000 unless we are root.
      await fs.chmod(path.join(root, 'locked'), 0o755);
    }
  });

  test('OS errors become STORAGE_IO naming the path and code, with the cause kept', async (t) => {
    const root = await tempDir(t);
    const s = new LocalStorage(root);
    const long = 'n'.repeat(300);
    for (const op of [() => s.get(long), () => s.head(long), () => s.put(long, Buffer.from('x'))]) {
      await assert.rejects(op(), (err: unknown) => {
        assert.ok(isWalvaultError(err, 'STORAGE_IO'), String(err));
        assert.ok(err.message.includes(path.join(root, long)) || err.message.includes(root), err.message);
        assert.match(err.message, /ENAMETOOLONG/);
        assert.equal((err.cause as NodeJS.ErrnoException).code, 'ENAMETOOLONG');
        return true;
      });
    }
    assert.deepEqual(await walkAll(root), []);
  });

  test('objects and the directories it creates are the owner\'s alone by default, whatever the umask', async (t) => {
    const root = path.join(await tempDir(t), 'archive');
    const old = process.umask(0);
    try {
      const storage = new LocalStorage(root);
      await storage.put('wal/000000010000000000000001', Buffer.from('x'));
      const spool = path.join(await tempDir(t), 'sealed');
      await fs.writeFile(spool, 'y', { mode: 0o644 });
      assert.equal(await storage.adoptFile('wal/000000010000000000000002', spool), 'adopted');
      for (const d of [root, path.join(root, 'wal')]) assert.equal((await fs.stat(d)).mode & 0o7777, 0o700, d);
      for (const f of ['000000010000000000000001', '000000010000000000000002']) assert.equal((await fs.stat(path.join(root, 'wal', f))).mode & 0o7777, 0o600, f);
    } finally {
      process.umask(old);
    }
  });

  test('fileMode 0640 under a setgid directory: objects, adopted files and new directories take its group', { skip: process.getuid?.() !== 0 && 'needs root to give a directory another group' }, async (t) => {
    const root = path.join(await tempDir(t), 'archive');
    await fs.mkdir(root);
    const group = 4242; // any group but root's
    await fs.chown(root, 0, group);
    await fs.chmod(root, 0o2750);
    const storage = new LocalStorage(root, { fileMode: 0o640 });
    await storage.put('wal/000000010000000000000001', Buffer.from('x'));
    const spool = path.join(await tempDir(t), 'sealed');
    await fs.writeFile(spool, 'y', { mode: 0o600 });
    assert.equal(await storage.adoptFile('wal/000000010000000000000002', spool), 'adopted');
    const wal = await fs.stat(path.join(root, 'wal'));
    assert.equal(wal.mode & 0o7777, 0o2750, 'a new directory keeps the setgid bit');
    assert.equal(wal.gid, group);
    for (const f of ['000000010000000000000001', '000000010000000000000002']) {
      const st = await fs.stat(path.join(root, 'wal', f));
      assert.equal(st.mode & 0o7777, 0o640, f);
      assert.equal(st.gid, group, f);
    }
    assert.deepEqual(await storage.accessWarnings(), []);
  });

  test('accessWarnings names an archive directory looser than the mode asks for', async (t) => {
    const root = path.join(await tempDir(t), 'archive');
    await fs.mkdir(path.join(root, 'wal'), { recursive: true });
    await fs.chmod(root, 0o700);
    await fs.chmod(path.join(root, 'wal'), 0o755);
    const warnings = await new LocalStorage(root).accessWarnings();
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], new RegExp(`^archive directory ${path.join(root, 'wal')} has mode 0755, looser than the 0700 .*every user can read`));
    assert.deepEqual(await new LocalStorage(root, { fileMode: 0o644 }).accessWarnings(), []);
  });

  test('description is a file URL of the absolute root', () => {
    const s = new LocalStorage('relative/dir');
    assert.equal(s.description, `file://${path.resolve('relative/dir')}`);
  });
});

describe('storageFromUrl', () => {
  test('file URLs and plain paths give local storage', () => {
    const cases: Array<[string, string]> = [
      ['file:///var/lib/walvault', '/var/lib/walvault'],
      ['file:///tmp/with%20space', '/tmp/with space'],
      [pathToFileURL('/srv/a b').href, '/srv/a b'],
      ['/abs/path', '/abs/path'],
      ['relative/archive', path.resolve('relative/archive')],
      ['./here', path.resolve('here')],
    ];
    for (const [url, root] of cases) {
      const s = storageFromUrl(url);
      assert.ok(s instanceof LocalStorage, url);
      assert.equal(s.root, root, url);
      assert.equal(s.description, `file://${root}`);
    }
  });

  test('s3 URLs: bucket and prefix; bad bucket names and prefixes refused', () => {
    const saved = [process.env.AWS_ENDPOINT_URL_S3, process.env.AWS_ENDPOINT_URL];
    delete process.env.AWS_ENDPOINT_URL_S3;
    delete process.env.AWS_ENDPOINT_URL;
    try {
      for (const [url, shown] of [
        ['s3://wal-archive/cluster1', 's3://wal-archive/cluster1/'],
        ['s3://wal-archive/a/b/', 's3://wal-archive/a/b/'],
        ['s3://wal-archive', 's3://wal-archive/'],
      ]) {
        const s = storageFromUrl(url);
        assert.equal(s.description, shown, url);
        void s.close();
      }
      const s = storageFromUrl('s3://wal-archive/p', { endpoint: 'http://127.0.0.1:9000' });
      assert.equal(s.description, 's3://wal-archive/p/ at http://127.0.0.1:9000');
      void s.close();
    } finally {
      if (saved[0] !== undefined) process.env.AWS_ENDPOINT_URL_S3 = saved[0];
      if (saved[1] !== undefined) process.env.AWS_ENDPOINT_URL = saved[1];
    }
    assert.throws(() => storageFromUrl('s3://Bad_Bucket/p'), isCode('CONFIG_INVALID', /"Bad_Bucket" is not a valid bucket name/));
    assert.throws(() => storageFromUrl('s3:///p'), isCode('CONFIG_INVALID', /not a valid bucket name/));
    assert.throws(() => storageFromUrl('s3://bucket/a/../b'), isCode('CONFIG_INVALID', /empty, "\." or "\.\." part/));
  });

  test('other forms are refused naming the URL and the accepted forms', () => {
    for (const url of ['http://example.com/x', 'gs://bucket/x', 'file://otherhost/x', '', '   ']) {
      assert.throws(() => storageFromUrl(url), (err: unknown) => {
        assert.ok(isWalvaultError(err, 'CONFIG_INVALID'), `${url}: ${String(err)}`);
        if (url.trim()) assert.ok(err.message.includes(url), err.message);
        assert.match(err.message, /file:\/\/\/absolute\/path/);
        return true;
      });
    }
  });

  test('credentials in a URL are not echoed', () => {
    assert.throws(() => storageFromUrl('s3://AKIAXXX:s3cr3t@bucket/p'), (err: unknown) => {
      assert.ok(isWalvaultError(err, 'CONFIG_INVALID'));
      assert.ok(!err.message.includes('s3cr3t'), err.message);
      assert.ok(!err.message.includes('AKIAXXX'), err.message);
      return true;
    });
  });
});

/** An object's info without its modification time (checked on its own: a recent Date). */
function withoutTime(info: { key: string; size: number; modified?: Date } | null): { key: string; size: number } | null {
  if (info === null) return null;
  assert.ok(info.modified instanceof Date && Math.abs(Date.now() - info.modified.getTime()) < 10 * 60_000, `${info.key}: a modification time`);
  return { key: info.key, size: info.size };
}
