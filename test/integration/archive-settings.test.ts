/**
 * Issue 17, item 5: the one-site settings are not forgotten between commands. The archive
 * records its codec and key when it is created; `backup push` and `wal-push` without them
 * use the archive's, a different codec is used with a warning, a different key is refused
 * and writes nothing.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createKeyPair } from '../../src/archive/encryption';
import { readEnvelopeHeader } from '../../src/archive/envelope';
import { snapshotTree } from '../helpers/errors-fixtures';
import { PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { pgConninfo, runWalvault, WalvaultProcess, writeConfig } from '../helpers/walvault';

describe('archive settings between commands (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let work = '';
  let receiver: WalvaultProcess | undefined;

  before(async () => {
    work = tmpDir('walvault-archive-settings-');
    cluster = await PgCluster.start({ walSegSizeMiB: 1 });
  });

  after(async () => {
    await receiver?.stop('SIGTERM', 30000);
    await cluster?.destroy();
    if (work) removeDir(work);
  });

  it('run --compression zstd --encryption-public-key, then backup push without them: the backup is stored with zstd, encrypted for that key', async () => {
    const archive = path.join(work, 'archive');
    const keys = path.join(work, 'run-keys');
    fs.mkdirSync(keys);
    const kid = await createKeyPair(path.join(keys, 'a.key'), path.join(keys, 'a.pub'));
    const site = ['--pg', pgConninfo(cluster), '--archive', archive, '--state', path.join(work, 'state')];
    receiver = WalvaultProcess.start(['run', ...site, '--compression', 'zstd', '--encryption-public-key', path.join(keys, 'a.pub'), '--backup-interval', '0']);
    await receiver.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    // A first run claims the archive once the first WAL arrives.
    const pins = path.join(work, 'state', 'archive-keys.json');
    await waitFor(async () => fs.existsSync(pins), { timeoutMs: 60000, what: 'the receiver to pin the key' });
    assert.equal(JSON.parse(fs.readFileSync(pins, 'utf8')).archives[`file://${archive}`].keyId, kid, 'the receiver pinned the key');

    const plain = await runWalvault(['backup', 'push', ...site, '--fast', '--wal-wait', '120'], {}, 180000);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stderr, /stores objects with zstd \(its setting since it was created\); so does this command/);
    assert.match(plain.stderr, new RegExp(`encrypts for public key ${kid}; so does this command \\(the key this site pinned`));
    const show = await runWalvault(['backup', 'show', plain.stdout.trim(), '--archive', archive]);
    assert.equal(show.code, 0, show.stderr);
    const meta = JSON.parse(show.stdout) as { archives: Array<{ compression: string | null; parts: Array<{ key: string }> }> };
    assert.ok(meta.archives.length > 0 && meta.archives.every((a) => a.compression === 'zstd'), show.stdout);
    for (const part of meta.archives.flatMap((a) => a.parts)) {
      assert.equal(readEnvelopeHeader(fs.readFileSync(path.join(archive, part.key)), part.key).encryption, 'aes-256-gcm', part.key);
    }

    // Naming another codec is obeyed, and the command says the archive has another.
    const lz4 = await runWalvault(['backup', 'push', ...site, '--fast', '--wal-wait', '120', '--compression', 'lz4'], {}, 180000);
    assert.equal(lz4.code, 0, lz4.stderr);
    assert.match(lz4.stderr, /was created storing objects with zstd, but this command was told lz4: new objects use lz4 as asked/);

    // A command with no state directory has no pin: it must name the key (cluster.json alone is not trusted).
    const bare = await runWalvault(['backup', 'push', '--pg', pgConninfo(cluster), '--archive', archive, '--state', path.join(work, 'state-fresh'), '--fast', '--no-wait'], {}, 60000);
    assert.notEqual(bare.code, 0);
    assert.match(bare.stderr, new RegExp(`encrypts for public key ${kid} .*names no key`));
    await receiver.stop('SIGTERM', 30000);
    receiver = undefined;
  });

  it('wal-push: without a key, or with another key, an encrypted archive refuses and nothing is written', async () => {
    const keys = path.join(work, 'keys');
    fs.mkdirSync(keys);
    const kidA = await createKeyPair(path.join(keys, 'a.key'), path.join(keys, 'a.pub'));
    const kidB = await createKeyPair(path.join(keys, 'b.key'), path.join(keys, 'b.pub'));
    const archive = path.join(work, 'archive-enc');
    // One config per key: writeConfig names its file after the site.
    const configFor = (pub: string): string => {
      const dir = path.join(work, `cfg-${pub}`);
      fs.mkdirSync(dir, { recursive: true });
      return writeConfig(dir, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state-enc'), encryption_public_key_file: path.join(keys, pub) } });
    };
    await cluster.query('CREATE TABLE IF NOT EXISTS switch_filler (i int)');
    for (let i = 0; i < 3; i++) {
      await cluster.query('INSERT INTO switch_filler SELECT generate_series(1, 1000)');
      await cluster.query('SELECT pg_switch_wal()');
    }
    // Only segments before the one being written: later names are recycled files holding old pages.
    const current = (await cluster.query(`SELECT pg_walfile_name(pg_current_wal_lsn()) AS name`))[0].name as string;
    const segments = fs.readdirSync(path.join(cluster.dataDir, 'pg_wal')).filter((n) => /^[0-9A-F]{24}$/.test(n) && n < current).sort();
    assert.ok(segments.length >= 3, `segments in pg_wal: ${segments.join(', ')}`);
    const seg = (i: number) => path.join(cluster.dataDir, 'pg_wal', segments[i]);

    const first = await runWalvault(['wal-push', '--config', configFor('a.pub'), seg(0)]);
    assert.equal(first.code, 0, first.stderr);

    const before = snapshotTree(archive);
    const other = await runWalvault(['wal-push', '--config', configFor('b.pub'), seg(1)]);
    assert.notEqual(other.code, 0);
    const lines = other.stderr.trim().split('\n');
    assert.equal(lines.length, 1, other.stderr);
    assert.match(lines[0], new RegExp(`encrypts for public key ${kidA} .* given key ${kidB} .*use a new archive for the new key`));
    assert.deepEqual(snapshotTree(archive), before, 'nothing written');

    // The same site without its key in the config: the key it pinned at its first write.
    const noKeyDir = path.join(work, 'cfg-nokey');
    fs.mkdirSync(noKeyDir);
    const noKey = writeConfig(noKeyDir, { main: { pg: pgConninfo(cluster), archive, state: path.join(work, 'state-enc') } });
    const pinnedPush = await runWalvault(['wal-push', '--config', noKey, seg(2)]);
    assert.equal(pinnedPush.code, 0, pinnedPush.stderr);
    assert.equal(readEnvelopeHeader(fs.readFileSync(path.join(archive, `wal/${segments[2]}`)), segments[2]).encryption, 'aes-256-gcm');
    const afterPinned = snapshotTree(archive);

    // No state directory (a bare --archive): refused rather than stored unencrypted, or encrypted for a key read from the store.
    const bare = await runWalvault(['wal-push', '--archive', archive, seg(1)]);
    assert.notEqual(bare.code, 0);
    assert.match(bare.stderr, new RegExp(`encrypts for public key ${kidA} .*names no key.*--encryption-public-key`));
    assert.deepEqual(snapshotTree(archive), afterPinned, 'nothing written');
    // The archive's own key: stored, encrypted.
    const same = await runWalvault(['wal-push', '--config', configFor('a.pub'), seg(1)]);
    assert.equal(same.code, 0, same.stderr);
    const key = `wal/${segments[1]}`;
    assert.equal(readEnvelopeHeader(fs.readFileSync(path.join(archive, key)), key).encryption, 'aes-256-gcm');
  });
});
