/**
 * Pure pieces of base backups: the command text per version, backup_label parsing and
 * sniffing from a tar stream, backup names, the retention policy, and cutting a stream into
 * parts (against a real local-directory archive).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Archive } from '../../src/archive/archive';
import { BackupLabelSniffer, parseBackupLabel } from '../../src/backup/backup-label';
import { backupNameFor, checkBackupName, type BackupMetadata } from '../../src/backup/catalog';
import { PartUploader } from '../../src/backup/part-uploader';
import { keptByPolicy } from '../../src/backup/retention';
import { nextScheduledBackup } from '../../src/backup/schedule';
import { baseBackupCommand } from '../../src/postgres/base-backup-stream';
import { LocalStorage } from '../../src/storage/local';
import { formatLsn } from '../../src/wal/lsn';

const LABEL = [
  'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)',
  'CHECKPOINT LOCATION: 0/2000060',
  'BACKUP METHOD: streamed',
  'BACKUP FROM: primary',
  'START TIME: 2026-12-01 10:00:00 UTC',
  "LABEL: walvault it's mine",
  'START TIMELINE: 1',
  '',
].join('\n');

/** A ustar header for a regular file (the sniffer reads only name and size). */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'utf8');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'ascii');
  h.write('0', 156, 'ascii');
  h.write('ustar\0', 257, 'ascii');
  return h;
}

function tarOf(name: string, content: Buffer): Buffer {
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([tarHeader(name, content.length), content, pad]);
}

describe('BASE_BACKUP command text', () => {
  test('parenthesised options from PostgreSQL 15', () => {
    const sql = baseBackupCommand(15, { label: "it's", fastCheckpoint: true, maxRateKiB: 1024 });
    assert.match(sql, /^BASE_BACKUP \( /);
    assert.match(sql, /LABEL 'it''s'/);
    assert.match(sql, /CHECKPOINT 'fast'/);
    assert.match(sql, /MANIFEST 'yes'/);
    assert.match(sql, /MAX_RATE 1024/);
    assert.match(sql, /WAIT false/);
    assert.doesNotMatch(sql, /\bWAL\b(?!_)/, 'WAL is never requested');
    assert.match(baseBackupCommand(18, { label: 'x', fastCheckpoint: false }), /CHECKPOINT 'spread'/);
  });

  test('keywords before 15', () => {
    const sql = baseBackupCommand(13, { label: 'x', fastCheckpoint: true });
    assert.match(sql, /^BASE_BACKUP LABEL 'x' PROGRESS FAST NOWAIT MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'$/);
    assert.doesNotMatch(baseBackupCommand(14, { label: 'x', fastCheckpoint: false }), /FAST/);
  });

  test('refuses what the server would refuse', () => {
    assert.throws(() => baseBackupCommand(12, { label: 'x', fastCheckpoint: true }), /PostgreSQL 13 or later/);
    assert.throws(() => baseBackupCommand(15, { label: 'x', fastCheckpoint: true, maxRateKiB: 10 }), /out of range/);
    assert.throws(() => baseBackupCommand(15, { label: 'x', fastCheckpoint: true, maxRateKiB: 2_000_000 }), /out of range/);
  });
});

describe('backup_label', () => {
  test('parses the fields a backup needs', () => {
    const l = parseBackupLabel(LABEL);
    assert.equal(formatLsn(l.startLsn), '0/2000028');
    assert.equal(l.startSegment, '000000010000000000000002');
    assert.equal(formatLsn(l.checkpointLsn), '0/2000060');
    assert.equal(l.label, "walvault it's mine");
    assert.equal(l.startTimeline, 1);
    assert.throws(() => parseBackupLabel('LABEL: x\n'), /START WAL LOCATION/);
  });

  test('is found at the start of base.tar whatever the chunking', () => {
    const tar = Buffer.concat([tarOf('backup_label', Buffer.from(LABEL)), tarOf('PG_VERSION', Buffer.from('15\n'))]);
    for (const step of [1, 7, 511, 512, 513, tar.length]) {
      const s = new BackupLabelSniffer();
      for (let at = 0; at < tar.length; at += step) s.feed(tar.subarray(at, at + step));
      assert.equal(s.error, null, `step ${step}`);
      assert.equal(s.text, LABEL, `step ${step}`);
    }
  });

  test('a tar that does not start with it is an error', () => {
    const s = new BackupLabelSniffer();
    s.feed(tarOf('PG_VERSION', Buffer.from('15\n')));
    assert.match(String(s.error), /does not begin with backup_label/);
  });
});

describe('backup names', () => {
  test('are the UTC start time and nothing else gets through', () => {
    assert.equal(backupNameFor(new Date('2026-12-01T15:04:05.678Z')), '20261201T150405Z');
    checkBackupName('20261201T150405Z');
    checkBackupName('20261201T150405Z-2');
    for (const bad of ['../x', '20261201T150405Z/../../', 'LATEST', '']) assert.throws(() => checkBackupName(bad), /not a backup name/);
  });
});

describe('retention policy', () => {
  const day = 86_400_000;
  const now = new Date('2026-12-10T00:00:00Z');
  const meta = (name: string, stop: number, daysAgo: number): BackupMetadata =>
    ({ name, stopLsn: formatLsn(BigInt(stop) << 24n), stoppedAt: new Date(now.getTime() - daysAgo * day).toISOString() }) as BackupMetadata;
  // Names deliberately out of order: ordering must come from the stop LSN.
  const backups = [meta('d', 4, 1), meta('a', 1, 9), meta('c', 3, 3), meta('b', 2, 6)];

  test('keeps the newest N by stop position', () => {
    assert.deepEqual([...keptByPolicy(backups, 2, 0, now)].sort(), ['c', 'd']);
    assert.deepEqual([...keptByPolicy(backups, 10, 0, now)].sort(), ['a', 'b', 'c', 'd']);
  });

  test('a recovery window keeps the backups inside it and the newest one before it', () => {
    // 5 days: c (3 days) and d (1 day) inside; b (6 days) is where recovery to day -5 starts.
    assert.deepEqual([...keptByPolicy(backups, 1, 5, now)].sort(), ['b', 'c', 'd']);
  });

  // F1 <- i1 <- i2, then F2 <- i3: the policy counts full backups, each keeping its incrementals.
  const inc = (name: string, stop: number, daysAgo: number, chain: string[]): BackupMetadata => ({ ...meta(name, stop, daysAgo), kind: 'incremental', parent: chain[chain.length - 1], chain });
  const chains = [meta('F1', 1, 9), inc('i1', 2, 8, ['F1']), inc('i2', 3, 7, ['F1', 'i1']), meta('F2', 4, 3), inc('i3', 5, 2, ['F2'])];

  test('counts full backups, each kept with the incrementals taken on it', () => {
    assert.deepEqual([...keptByPolicy(chains, 1, 0, now)].sort(), ['F2', 'i3']);
    assert.deepEqual([...keptByPolicy(chains, 2, 0, now)].sort(), ['F1', 'F2', 'i1', 'i2', 'i3']);
  });

  test('a window that reaches into a chain keeps the whole chain up to there', () => {
    // 7.5 days: i2 (7 days) is inside, and restoring it needs F1 and i1.
    assert.deepEqual([...keptByPolicy(chains, 1, 7.5, now)].sort(), ['F1', 'F2', 'i1', 'i2', 'i3']);
  });
});

describe('backup schedule', () => {
  const hour = 3_600_000;
  const now = Date.parse('2026-12-10T00:00:00Z');
  const at = (name: string, hoursAgo: number, chain?: string[]): BackupMetadata =>
    ({ name, stoppedAt: new Date(now - hoursAgo * hour).toISOString(), ...(chain ? { kind: 'incremental', parent: chain[chain.length - 1], chain } : { kind: 'full' }) }) as BackupMetadata;
  const settings = { backupIntervalHours: 24, fullBackupIntervalDays: 7, maxIncrementalChain: 2 };

  test('nothing is due inside the interval, or with the schedule off', () => {
    assert.deepEqual(nextScheduledBackup([at('F', 23)], now, settings), { due: false });
    assert.deepEqual(nextScheduledBackup([], now, { ...settings, backupIntervalHours: 0 }), { due: false });
  });

  test('the first backup, and one after an old full backup, are full', () => {
    assert.equal(kindOf(nextScheduledBackup([], now, settings)), 'full');
    assert.equal(kindOf(nextScheduledBackup([at('F', 7 * 24)], now, settings)), 'full');
  });

  test('between full backups an incremental, until the chain is at its cap', () => {
    assert.equal(kindOf(nextScheduledBackup([at('F', 48)], now, settings)), 'incremental');
    assert.equal(kindOf(nextScheduledBackup([at('F', 72), at('i1', 48, ['F'])], now, settings)), 'incremental');
    const capped = nextScheduledBackup([at('F', 96), at('i1', 72, ['F']), at('i2', 48, ['F', 'i1'])], now, settings);
    assert.equal(kindOf(capped), 'full');
    assert.match((capped as { why: string }).why, /i2 ends a chain of 2 incremental backups/);
    assert.equal(kindOf(nextScheduledBackup([at('F', 48)], now, { ...settings, maxIncrementalChain: 0 })), 'full');
  });
});

function kindOf(d: ReturnType<typeof nextScheduledBackup>): string | null {
  return d.due ? d.kind : null;
}

describe('cutting a stream into parts', () => {
  // Part buffers are shared memory (read in place by compression workers): every codec must take them.
  for (const codec of ['none', 'zstd', 'lz4', 'snappy', 'gzip'] as const)
  test(`parts of the set size, in order, that join back to the stream (${codec})`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-parts-'));
    const archive = new Archive(new LocalStorage(dir), { codec });
    try {
      const data = createHash('sha256').update('seed').digest();
      const stream = Buffer.concat(Array.from({ length: 2000 }, (_, i) => createHash('sha256').update(data).update(String(i)).digest()));
      const up = new PartUploader({ archive, partSize: 25_000, inFlight: 1 });
      up.begin('backups/x/', 'base.tar');
      // Odd chunk sizes, and the caller reuses its buffer at once, as the socket does.
      const chunk = Buffer.alloc(3001);
      for (let at = 0; at < stream.length; at += 3001) {
        const n = Math.min(3001, stream.length - at);
        stream.copy(chunk, 0, at, at + n);
        await up.write(chunk.subarray(0, n));
        chunk.fill(0xee);
      }
      up.end();
      up.begin('backups/x/', '16384.tar');
      up.end();
      const parts = await up.finish();
      const base = parts.get('base.tar')!;
      assert.equal(base.length, Math.ceil(stream.length / 25_000));
      assert.ok(base.slice(0, -1).every((p) => p.size === 25_000));
      const joined = Buffer.concat(await Promise.all(base.map(async (p) => (await archive.get(p.key))!)));
      assert.ok(joined.equals(stream), 'the parts join back to the stream');
      for (const p of base) {
        const body = (await archive.get(p.key))!;
        assert.equal(createHash('sha256').update(body).digest('hex'), p.sha256, `${p.key}: the recorded SHA-256 is of its bytes`);
      }
      const empty = parts.get('16384.tar')!;
      assert.equal(empty.length, 1, 'an empty archive is still one (empty) part');
      assert.equal(empty[0].size, 0);
    } finally {
      await archive.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('progress', () => {
  test('a terminal gets one rewritten line with rate and time left; a log gets periodic records', () => {
    const { Progress, formatBytes, formatDuration } = require('../../src/observe/progress') as typeof import('../../src/observe/progress');
    let now = 0;
    const written: string[] = [];
    const tty = { isTTY: true, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    const logged: Array<Record<string, unknown>> = [];
    const log = { info: (o: Record<string, unknown>) => logged.push(o) } as never;
    const p = new Progress({ what: 'backup x', log, out: tty, now: () => now });
    p.setTotal(1200 * 1024 * 1024);
    // A minute of checkpoint before the first bytes: neither a rate nor a time left yet.
    now = 60_000;
    p.update(100 * 1024 * 1024);
    assert.equal(written[0], '\rbackup x: 100.0 MiB of ~1.2 GiB\x1b[K');
    assert.equal(p.snapshot().secondsLeft, null);
    // One second of flow gives a rate, still no estimate.
    now = 61_000;
    p.update(200 * 1024 * 1024);
    assert.equal(written[1], '\rbackup x: 200.0 MiB of ~1.2 GiB at 100.0 MiB/s\x1b[K');
    // Five seconds of flow: the rate counts from the first bytes, not from the start.
    now = 65_000;
    p.update(600 * 1024 * 1024);
    p.finish();
    assert.equal(written[2], '\rbackup x: 600.0 MiB of ~1.2 GiB at 100.0 MiB/s, 6 s left\x1b[K');
    assert.equal(written[written.length - 1], '\n');
    assert.equal(logged.length, 0, 'a terminal is not also logged to');

    const pipe = { isTTY: false, write: () => assert.fail('no drawing off a terminal') } as unknown as NodeJS.WriteStream;
    now = 0;
    const q = new Progress({ what: 'backup y', log, out: pipe, now: () => now, logIntervalMs: 10000 });
    q.setTotal(null);
    for (now = 0; now <= 25000; now += 5000) q.update(now * 1024);
    assert.equal(logged.length, 2, 'one record per interval');
    assert.equal(logged[1].bytesTotal, null);
    assert.equal(logged[1].secondsLeft, null, 'no time left without a total');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatDuration(3725), '1 h 2 min');
  });

  test('a detail (a delta restore\'s files kept) follows the bytes on the line and in the log record', () => {
    const { Progress } = require('../../src/observe/progress') as typeof import('../../src/observe/progress');
    let now = 0;
    let kept = 0;
    const written: string[] = [];
    const tty = { isTTY: true, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    const logged: Array<Record<string, unknown>> = [];
    const log = { info: (o: Record<string, unknown>) => logged.push(o) } as never;
    const p = new Progress({ what: 'restore x', log, out: tty, now: () => now, detail: () => `${kept} files kept` });
    kept = 3;
    now = 1000;
    p.update(1024);
    assert.equal(written[0], '\rrestore x: 1.0 KiB; 3 files kept\x1b[K');
    const pipe = { isTTY: false, write: () => assert.fail('no drawing off a terminal') } as unknown as NodeJS.WriteStream;
    const q = new Progress({ what: 'restore y', log, out: pipe, now: () => now, logIntervalMs: 1000, detail: () => `${kept} files kept` });
    now = 3000;
    q.update(2048);
    assert.equal(logged[0].detail, '3 files kept');
  });
});
