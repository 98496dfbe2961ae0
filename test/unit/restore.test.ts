/**
 * Pure pieces of restore: the tar reader (as PostgreSQL writes tars), the manifest
 * comparison, and the recovery settings with their quoting.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import * as path from 'node:path';
import { newChecksum, type ManifestChecksumAlgorithm } from '../../src/restore/manifest-checksum';
import { compareWithManifest, parseManifest } from '../../src/restore/manifest-files';

const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');
import { checkTarget, confLiteral, recoverySettings, shellWord } from '../../src/restore/recovery-settings';
import { TarReader, type TarEntry } from '../../src/util/tar-reader';

function header(name: string, type: '0' | '5' | '2', size: number, opts: { mode?: number; link?: string; prefix?: string } = {}): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'utf8');
  h.write((opts.mode ?? 0o600).toString(8).padStart(7, '0') + '\0', 100, 'ascii');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'ascii');
  h.write(type, 156, 'ascii');
  if (opts.link) h.write(opts.link, 157, 'utf8');
  h.write('ustar\0' + '00', 257, 'ascii');
  if (opts.prefix) h.write(opts.prefix, 345, 'utf8');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

function file(name: string, content: Buffer, prefix?: string): Buffer {
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header(name, '0', content.length, { prefix }), content, pad]);
}

function collect(): { entries: Array<TarEntry & { content: Buffer }>; sink: ConstructorParameters<typeof TarReader>[0] } {
  const entries: Array<TarEntry & { content: Buffer }> = [];
  let parts: Buffer[] = [];
  return {
    entries,
    sink: {
      entry: (e) => {
        parts = [];
        entries.push({ ...e, content: Buffer.alloc(0) });
      },
      data: (c) => {
        parts.push(Buffer.from(c));
      },
      entryEnd: () => {
        entries[entries.length - 1].content = Buffer.concat(parts);
      },
    },
  };
}

describe('tar reader', () => {
  const big = Buffer.alloc(70_000, 7);
  const tar = Buffer.concat([
    header('global', '5', 0, { mode: 0o700 }),
    file('global/pg_control', Buffer.from('control')),
    file('base/1/1259', big),
    header('pg_tblspc/16384', '2', 0, { link: '/srv/ts' }),
    file('1259_fsm', Buffer.from('x'), 'base/16384/a-very-long-directory-name-that-needs-the-prefix-field'),
    file('empty', Buffer.alloc(0)),
    Buffer.alloc(1024),
  ]);

  test('entries, contents and links come out whatever the chunking', async () => {
    for (const step of [1, 100, 511, 512, 4096, tar.length]) {
      const { entries, sink } = collect();
      const r = new TarReader(sink, 'test.tar');
      for (let at = 0; at < tar.length; at += step) await r.write(tar.subarray(at, at + step));
      r.finish();
      assert.deepEqual(
        entries.map((e) => [e.path, e.type, e.size]),
        [
          ['global', 'directory', 0],
          ['global/pg_control', 'file', 7],
          ['base/1/1259', 'file', 70_000],
          ['pg_tblspc/16384', 'symlink', 0],
          ['base/16384/a-very-long-directory-name-that-needs-the-prefix-field/1259_fsm', 'file', 1],
          ['empty', 'file', 0],
        ],
        `step ${step}`,
      );
      assert.ok(entries[2].content.equals(big));
      assert.equal(entries[3].linkTarget, '/srv/ts');
      assert.equal(entries[0].mode, 0o700);
    }
  });

  test('damage is refused: a bad header checksum, a truncated archive, a path leaving the directory', async () => {
    const flipped = Buffer.from(tar);
    flipped[520] ^= 0x01; // inside the second header's name
    await assert.rejects(new TarReader(collect().sink, 'x.tar').write(flipped), /x\.tar: tar header checksum mismatch/);
    const r = new TarReader(collect().sink, 'x.tar');
    await r.write(tar.subarray(0, 2000));
    assert.throws(() => r.finish(), /x\.tar: the tar archive is truncated/);
    for (const bad of ['../etc/passwd', '/etc/passwd', 'a/../../b']) {
      await assert.rejects(new TarReader(collect().sink, 'x.tar').write(file(bad, Buffer.from('x'))), /refusing tar entry/);
    }
  });
});

describe('manifest comparison', () => {
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  const manifest = Buffer.from(
    JSON.stringify({
      'PostgreSQL-Backup-Manifest-Version': 1,
      Files: [
        { Path: 'PG_VERSION', Size: 3, 'Checksum-Algorithm': 'SHA256', Checksum: sha('15\n') },
        { Path: 'pg_tblspc/16384/PG_15/x', Size: 1, 'Checksum-Algorithm': 'SHA256', Checksum: sha('y') },
      ],
    }),
  );
  test('names every missing, different and unlisted file', () => {
    const parsed = parseManifest(manifest, 'm');
    assert.equal(parsed.algorithm, 'SHA256');
    const ok = new Map([
      ['PG_VERSION', { size: 3, checksum: sha('15\n') }],
      ['pg_tblspc/16384/PG_15/x', { size: 1, checksum: sha('y') }],
    ]);
    assert.deepEqual(compareWithManifest(parsed, ok), []);
    const bad = new Map([
      ['PG_VERSION', { size: 3, checksum: sha('16\n') }],
      ['stray', { size: 1, checksum: sha('z') }],
    ]);
    assert.deepEqual(compareWithManifest(parsed, bad), [
      'PG_VERSION: SHA256 checksum differs from the manifest',
      'pg_tblspc/16384/PG_15/x: missing',
      'stray: not in the manifest',
    ]);
  });

  test('refuses a manifest it cannot check', () => {
    assert.throws(() => parseManifest(Buffer.from('{"Files": ['), 'm'), /m is not valid JSON/);
    const mixed = { Files: [{ Path: 'a', Size: 1, 'Checksum-Algorithm': 'SHA256', Checksum: sha('a') }, { Path: 'b', Size: 1, 'Checksum-Algorithm': 'CRC32C', Checksum: '00000000' }] };
    assert.throws(() => parseManifest(Buffer.from(JSON.stringify(mixed)), 'm'), /checksum algorithms SHA256, CRC32C/);
    const unknown = { Files: [{ Path: 'a', Size: 1, 'Checksum-Algorithm': 'MD5', Checksum: 'x' }] };
    assert.throws(() => parseManifest(Buffer.from(JSON.stringify(unknown)), 'm'), /MD5; expected one of/);
  });
});

describe('manifest checksums', () => {
  const digest = (alg: ManifestChecksumAlgorithm, ...pieces: string[]) => {
    const c = newChecksum(alg);
    for (const p of pieces) c.update(Buffer.from(p));
    return c.digest();
  };
  test('CRC32C: the check value, little-endian as PostgreSQL prints it, the same in pieces', () => {
    // CRC-32C of "123456789" is 0xE3069283 (RFC 3720); the server copies the uint32 as is.
    assert.equal(digest('CRC32C', '123456789'), '839206e3');
    assert.equal(digest('CRC32C', '1234', '', '56789'), '839206e3');
    assert.equal(digest('CRC32C'), '00000000');
  });
  test('SHA-2 digests; NONE checks nothing', () => {
    assert.equal(digest('SHA256', 'ab', 'c'), sha256Hex('abc'));
    assert.equal(digest('SHA512', 'abc'), createHash('sha512').update('abc').digest('hex'));
    assert.equal(digest('NONE', 'abc'), '');
  });
  test('reads shared memory views in place', () => {
    const sab = Buffer.from(new SharedArrayBuffer(16));
    sab.write('123456789', 3);
    const c = newChecksum('CRC32C');
    c.update(sab.subarray(3, 12));
    assert.equal(c.digest(), '839206e3');
  });
});

describe('recovery settings', () => {
  test('one target at most, each checked', () => {
    assert.throws(() => checkTarget({ lsn: '0/3000060', xid: '5' }), /more than one recovery target/);
    assert.throws(() => checkTarget({ lsn: 'zz' }), /not an LSN/);
    assert.throws(() => checkTarget({ xid: '-1' }), /not a transaction id/);
    assert.throws(() => checkTarget({ time: 'yesterday-ish' }), /not a time/);
    assert.throws(() => checkTarget({ action: 'pause' }), /without a target/);
    assert.doesNotThrow(() => checkTarget({ time: '2026-12-01 15:04:05+00', action: 'pause', timeline: 'latest' }));
  });

  test('quoted for postgresql.auto.conf and for the shell that runs restore_command', () => {
    assert.equal(confLiteral("it's a\\b"), "'it''s a\\\\b'");
    assert.equal(shellWord('/usr/bin/node', 'x'), '/usr/bin/node');
    assert.equal(shellWord('/opt/my dir/walvault', 'x'), '"/opt/my dir/walvault"');
    assert.throws(() => shellWord('/tmp/$HOME', 'the path'), /the path "\/tmp\/\$HOME" contains a character/);
    assert.throws(() => shellWord('/tmp/50%', 'x'), /contains a character/);
    const text = recoverySettings({ restoreCommand: '/usr/bin/node /w/bin/walvault wal-fetch --archive /a %f %p', target: { name: "before 'drop'", action: 'promote' } });
    assert.match(text, /^restore_command = '\/usr\/bin\/node \/w\/bin\/walvault wal-fetch --archive \/a %f %p'$/m);
    assert.match(text, /^recovery_target_name = 'before ''drop'''$/m);
    assert.match(text, /^recovery_target_action = 'promote'$/m);
  });

  test("settings a backup brings (a standby's primary_conninfo and slot, commands, a delay, other targets) are replaced", () => {
    const text = recoverySettings({ restoreCommand: 'x %f %p', target: { lsn: '0/3000060' } });
    for (const line of [
      "recovery_target_lsn = '0/3000060'",
      "recovery_target_time = ''",
      "recovery_target_xid = ''",
      "recovery_target_name = ''",
      "recovery_target = ''",
      "recovery_target_timeline = 'latest'",
      "primary_conninfo = ''",
      "primary_slot_name = ''",
      "recovery_end_command = ''",
      "archive_cleanup_command = ''",
      "recovery_min_apply_delay = '0'",
    ]) {
      assert.ok(text.split('\n').includes(line), `${line} in:\n${text}`);
    }
    assert.ok(text.split('\n').includes("recovery_target_action = 'pause'"), "with a target and no action: pause, PostgreSQL's default, written so the backup's own cannot decide");
    // After it, PostgreSQL would refuse even an empty setting of another target kind.
    const lines = text.split('\n');
    const last = Math.max(...['recovery_target_time', 'recovery_target_lsn', 'recovery_target_xid', 'recovery_target_name', 'recovery_target '].map((k) => lines.findIndex((l) => l.startsWith(k))));
    assert.equal(lines[last], "recovery_target_lsn = '0/3000060'", 'the chosen target is the last target setting');
    const standby = recoverySettings({ restoreCommand: 'x %f %p', target: {}, primaryConninfo: 'host=db1 user=r' });
    assert.ok(standby.split('\n').includes("primary_conninfo = 'host=db1 user=r'"));
    assert.ok(!/archive_mode/.test(standby), 'archive_mode is left alone unless asked');
    assert.ok(!/recovery_target_action/.test(standby), 'no action without a target');
    assert.ok(recoverySettings({ restoreCommand: 'x', target: {}, archiveOff: true }).split('\n').includes("archive_mode = 'off'"));
  });
});

describe('restore_command names the archive as the server can find it', () => {
  test('a relative archive path becomes absolute (the server runs it in the data directory); URLs are kept', async () => {
    const { restoreCommand } = await import('../../src/cli/restore');
    const rel = restoreCommand({ archive: 'some/archive', prefetch: '0' } as Parameters<typeof restoreCommand>[0], undefined);
    assert.ok(rel.includes(`--archive ${path.resolve('some/archive')} `), rel);
    const url = restoreCommand({ archive: 's3://bucket/prefix', prefetch: '0' } as Parameters<typeof restoreCommand>[0], undefined);
    assert.ok(url.includes('--archive s3://bucket/prefix '), url);
    const file = restoreCommand({ archive: 'file:///srv/archive', prefetch: '0' } as Parameters<typeof restoreCommand>[0], undefined);
    assert.ok(file.includes('--archive file:///srv/archive '), file);
  });
});
