/**
 * Issue 17, item 5: an archive records its codec and key when it is created; a later command
 * that names neither uses them, one that names another codec is told so, one that names
 * another key is refused before it writes.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Archive, type ArchiveOptions } from '../../src/archive/archive';
import type { ClusterInfo } from '../../src/archive/cluster-marker';
import { CLUSTER_KEY } from '../../src/archive/layout';
import { claimArchive, parseRecordedSettings, type SettingsNote } from '../../src/archive/archive-settings';
import { KEY_PIN_FILE } from '../../src/archive/key-pin';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../../src/archive/encryption';
import { readEnvelopeHeader } from '../../src/archive/envelope';
import { isWalvaultError } from '../../src/errors';
import { LocalStorage } from '../../src/storage/local';

type T = { after(fn: () => Promise<void>): void };

async function tempDir(t: T, name: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `walvault-${name}-`));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function keyPair(dir: string, name: string) {
  const kid = await createKeyPair(path.join(dir, `${name}.key`), path.join(dir, `${name}.pub`));
  return { kid, publicKey: loadPublicKey(path.join(dir, `${name}.pub`)), privateKey: loadPrivateKey(path.join(dir, `${name}.key`)) };
}

const CLUSTER: ClusterInfo = { systemId: '7312345678901234567', pgVersionNum: 150018, walSegmentSize: 16 * 1024 * 1024 };
const SEGMENT = Buffer.alloc(256 * 1024, 'walvault settings test 0123456789 ');

/** Opens the archive with a command's options, claims it, and collects what it was told. */
async function claim(root: string, options: ArchiveOptions, stateDir?: string): Promise<{ archive: Archive; notes: Array<Pick<SettingsNote, 'level' | 'msg'>> }> {
  const archive = new Archive(new LocalStorage(root), options);
  const notes: Array<Pick<SettingsNote, 'level' | 'msg'>> = [];
  await claimArchive(archive, CLUSTER, { info: (_f, msg) => notes.push({ level: 'info', msg }), warn: (_f, msg) => notes.push({ level: 'warn', msg }) }, stateDir);
  return { archive, notes };
}

async function storedHeader(root: string, key: string) {
  return readEnvelopeHeader(await fs.readFile(path.join(root, key)), key);
}

describe('archive settings', () => {
  test('the creating command records codec and key; a command naming neither uses the codec and is refused without the key', async (t) => {
    const root = await tempDir(t, 'settings');
    const keys = await keyPair(root, 'a');
    const first = await claim(root, { codec: 'zstd', recipient: keys.publicKey });
    assert.deepEqual(first.notes, []);
    const marker = JSON.parse((await first.archive.get(CLUSTER_KEY))!.toString('utf8'));
    assert.equal(marker.settings.compression, 'zstd');
    assert.equal(marker.settings.encryption.keyId, keys.kid);
    assert.match(marker.settings.encryption.publicKey, /^-----BEGIN PUBLIC KEY-----/);

    // Without the key: refused, naming the key (never taken from the unauthenticated cluster.json).
    await assert.rejects(
      claim(root, { codec: 'none', codecChosen: false }),
      (err: unknown) => isWalvaultError(err, 'ARCHIVE_KEY_REQUIRED') && err.message.includes(keys.kid) && err.message.includes('--encryption-public-key'),
    );
    // Like `backup push` without --compression, with the key, on a local archive (default: none).
    const later = await claim(root, { codec: 'none', codecChosen: false, recipient: keys.publicKey });
    assert.equal(later.archive.codec, 'zstd');
    assert.equal(later.notes.length, 1);
    assert.match(later.notes[0].msg, /stores objects with zstd \(its setting since it was created\); so does this command/);
    await later.archive.putImmutable('wal/000000010000000000000001', SEGMENT);
    const h = await storedHeader(root, 'wal/000000010000000000000001');
    assert.equal(h.codec, 'zstd');
    assert.equal(h.encryption, 'aes-256-gcm');
    // Readable with the archive's private key, and only the plaintext comes back.
    const back = await new Archive(new LocalStorage(root), { privateKey: keys.privateKey }).get('wal/000000010000000000000001');
    assert.ok(back!.equals(SEGMENT));
  });

  test("a site that wrote with the archive's key pins it; its later commands naming no key use it", async (t) => {
    const root = await tempDir(t, 'settings');
    const state = path.join(await tempDir(t, 'state'), 'site');
    const keys = await keyPair(root, 'a');
    const first = await claim(root, { codec: 'zstd', recipient: keys.publicKey }, state);
    assert.ok(first.notes.some((n) => n.level === 'info' && n.msg.includes(`pinned public key ${keys.kid}`)), JSON.stringify(first.notes));
    const pinFile = path.join(state, KEY_PIN_FILE);
    assert.equal((await fs.stat(pinFile)).mode & 0o777, 0o600);
    assert.equal((await fs.stat(state)).mode & 0o777, 0o700);

    // Same site, no key named: encrypted for the pinned key.
    const later = await claim(root, { codec: 'none', codecChosen: false }, state);
    assert.equal(later.archive.recipient?.keyId, keys.kid);
    assert.ok(later.notes.some((n) => n.msg.includes('the key this site pinned when it first wrote there')), JSON.stringify(later.notes));
    await later.archive.putImmutable('wal/000000010000000000000004', SEGMENT);
    assert.equal((await storedHeader(root, 'wal/000000010000000000000004')).encryption, 'aes-256-gcm');
    const back = await new Archive(new LocalStorage(root), { privateKey: keys.privateKey }).get('wal/000000010000000000000004');
    assert.ok(back!.equals(SEGMENT));

    // Another state directory (or none) never wrote there with the key: refused.
    const otherState = path.join(await tempDir(t, 'state'), 'other');
    await assert.rejects(claim(root, { codec: 'none', codecChosen: false }, otherState), (err: unknown) => isWalvaultError(err, 'ARCHIVE_KEY_REQUIRED'));
    await assert.rejects(claim(root, { codec: 'none', codecChosen: false }), (err: unknown) => isWalvaultError(err, 'ARCHIVE_KEY_REQUIRED'));
    await assert.rejects(fs.stat(otherState), { code: 'ENOENT' });
  });

  test('cluster.json rewritten to name another key: a site that pinned the first refuses, and writes nothing', async (t) => {
    const root = await tempDir(t, 'settings');
    const state = path.join(await tempDir(t, 'state'), 'site');
    const a = await keyPair(root, 'a');
    const b = await keyPair(root, 'b');
    await claim(root, { codec: 'none', recipient: a.publicKey }, state);
    // Whoever can write the store puts their key in cluster.json (written as walvault would).
    const forgedRoot = await tempDir(t, 'forged');
    await new Archive(new LocalStorage(forgedRoot), { codec: 'none', recipient: b.publicKey }).ensureCluster(CLUSTER);
    await fs.copyFile(path.join(forgedRoot, CLUSTER_KEY), path.join(root, CLUSTER_KEY));
    const pinBefore = await fs.readFile(path.join(state, KEY_PIN_FILE));
    const listing = async () => (await fs.readdir(root)).sort();
    const before = await listing();
    await assert.rejects(
      claim(root, { codec: 'none', codecChosen: false }, state),
      (err: unknown) => isWalvaultError(err, 'ARCHIVE_KEY_CHANGED') && err.message.includes(a.kid) && err.message.includes(b.kid) && err.message.includes('--encryption-public-key'),
    );
    // Naming the pinned key says the same, not that the operator gave a wrong key.
    await assert.rejects(
      claim(root, { codec: 'none', codecChosen: false, recipient: a.publicKey }, state),
      (err: unknown) => isWalvaultError(err, 'ARCHIVE_KEY_CHANGED') && /cluster\.json changed since/.test(err.message),
    );
    assert.deepEqual(await listing(), before);
    assert.ok((await fs.readFile(path.join(state, KEY_PIN_FILE))).equals(pinBefore), 'the pin is kept');
    // The operator who did change the key names it: used, and pinned from then on.
    const named = await claim(root, { codec: 'none', codecChosen: false, recipient: b.publicKey }, state);
    assert.equal(named.archive.recipient?.keyId, b.kid);
    assert.equal((await claim(root, { codec: 'none', codecChosen: false }, state)).archive.recipient?.keyId, b.kid);
  });

  test('a damaged pin file is named, not guessed', async (t) => {
    const root = await tempDir(t, 'settings');
    const state = await tempDir(t, 'state');
    const a = await keyPair(root, 'a');
    await claim(root, { codec: 'none', recipient: a.publicKey }, state);
    await fs.writeFile(path.join(state, KEY_PIN_FILE), '{"version": 1, "archives": {"x": {}}}');
    await assert.rejects(claim(root, { codec: 'none', codecChosen: false }, state), (err: unknown) => isWalvaultError(err, 'STATE_CORRUPT') && err.message.includes(KEY_PIN_FILE));
  });

  test('a command naming another codec gets it, and is told the archive has another', async (t) => {
    const root = await tempDir(t, 'settings');
    await claim(root, { codec: 'zstd' });
    const lz4 = await claim(root, { codec: 'lz4', codecChosen: true });
    assert.equal(lz4.notes.length, 1);
    assert.equal(lz4.notes[0].level, 'warn');
    assert.match(lz4.notes[0].msg, /was created storing objects with zstd, but this command was told lz4: new objects use lz4 as asked/);
    await lz4.archive.putImmutable('wal/000000010000000000000002', SEGMENT);
    assert.equal((await storedHeader(root, 'wal/000000010000000000000002')).codec, 'lz4');
  });

  test('a command naming another key is refused before it writes anything', async (t) => {
    const root = await tempDir(t, 'settings');
    const a = await keyPair(root, 'a');
    const b = await keyPair(root, 'b');
    await claim(root, { codec: 'none', recipient: a.publicKey });
    const before = await fs.readFile(path.join(root, CLUSTER_KEY));
    await assert.rejects(
      claim(root, { codec: 'none', recipient: b.publicKey }),
      (err: unknown) => isWalvaultError(err, 'ARCHIVE_KEY_MISMATCH') && err.message.includes(a.kid) && err.message.includes(b.kid) && /use a new archive for the new key/.test(err.message),
    );
    assert.ok((await fs.readFile(path.join(root, CLUSTER_KEY))).equals(before));
    assert.deepEqual(await fs.readdir(root).then((l) => l.filter((n) => n !== 'a.key' && n !== 'a.pub' && n !== 'b.key' && n !== 'b.pub')), [CLUSTER_KEY]);
  });

  test('a key for an archive created without encryption is used, with a warning', async (t) => {
    const root = await tempDir(t, 'settings');
    const a = await keyPair(root, 'a');
    await claim(root, { codec: 'none' });
    const enc = await claim(root, { codec: 'none', codecChosen: false, recipient: a.publicKey });
    assert.equal(enc.notes.length, 1);
    assert.match(enc.notes[0].msg, /created without encryption, but this command encrypts for key .* commands that do not name the key keep storing unencrypted objects/);
    await enc.archive.putImmutable('wal/000000010000000000000003', SEGMENT);
    assert.equal((await storedHeader(root, 'wal/000000010000000000000003')).encryption, 'aes-256-gcm');
  });

  test('an archive from before the record: every command keeps its own settings', async (t) => {
    const root = await tempDir(t, 'settings');
    const old = { systemId: CLUSTER.systemId, pgVersionNum: CLUSTER.pgVersionNum, walSegmentSize: CLUSTER.walSegmentSize, createdAt: '2026-01-01T00:00:00.000Z' };
    // Written as an older walvault did: through the plain envelope, no settings member.
    const { encodeEnvelope } = await import('../../src/archive/envelope');
    const { bindingExtension } = await import('../../src/archive/binding');
    await new LocalStorage(root).put(CLUSTER_KEY, encodeEnvelope(Buffer.from(JSON.stringify(old)), bindingExtension(CLUSTER_KEY, null)));
    const later = await claim(root, { codec: 'gzip', codecChosen: false });
    assert.deepEqual(later.notes, []);
    assert.equal(later.archive.codec, 'gzip');
  });

  test('damaged settings in cluster.json are named, not guessed', () => {
    assert.equal(parseRecordedSettings(undefined, 'x'), undefined);
    for (const bad of [null, 'zstd', { compression: 'brotli', encryption: null }, { compression: 'zstd' }, { compression: 'zstd', encryption: { keyId: 1 } }]) {
      assert.throws(() => parseRecordedSettings(bad, 'cluster.json in /a'), (err: unknown) => isWalvaultError(err, 'ARCHIVE_CORRUPT') && err.message.startsWith('cluster.json in /a: settings'));
    }
    assert.deepEqual(parseRecordedSettings({ compression: 'lz4', encryption: null }, 'x'), { compression: 'lz4', encryption: null });
  });
});
