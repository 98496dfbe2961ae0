/**
 * The prefetcher never places a segment that is not the one its name says (issue 14, item 1):
 * restore's restore_command `mv`s what it finds in the prefetch directory without Node, so
 * the check must come before the rename.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isWalvaultError } from '../../src/errors';
import { runPrefetcher } from '../../src/restore/prefetch';
import { segmentFileName } from '../../src/wal/lsn';
import { checkWalIdentity } from '../../src/wal/wal-identity';
import { buildSegment, FIXTURE_SEG_SIZE, FIXTURE_SYSID } from '../helpers/wal-fixtures';

test('a misplaced segment is never renamed into the prefetch directory; the prefetcher stops there', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-prefetcher-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const name = (n: number) => segmentFileName(1, BigInt(n), FIXTURE_SEG_SIZE);
  // The archive: 0x12's name holds 0x10's segment.
  const archive = new Map<string, Buffer>([
    [name(0x11), buildSegment(0x11n)],
    [name(0x12), buildSegment(0x10n)],
    [name(0x13), buildSegment(0x13n)],
  ]);
  const seen = new Set<string>();
  const watcher = fs.watch(dir, (_event, file) => {
    if (file) seen.add(String(file));
  });
  t.after(() => watcher.close());
  const placed: string[] = [];
  const cluster = { systemId: FIXTURE_SYSID.toString(), walSegmentSize: FIXTURE_SEG_SIZE };
  await assert.rejects(
    runPrefetcher({
      dir,
      count: 3,
      start: name(0x10),
      segSize: FIXTURE_SEG_SIZE,
      idleExitMs: 60000,
      get: async (n) => {
        // What is in the directory now, at each fetch: never the misplaced one.
        placed.push(...fs.readdirSync(dir));
        return archive.get(n) ?? null;
      },
      check: (n, data) => checkWalIdentity(n, data, cluster, `wal/${n}`),
    }),
    (err: unknown) => isWalvaultError(err, 'ARCHIVE_MISPLACED') && err.message.includes(`wal/${name(0x12)} holds the WAL of ${name(0x10)}`),
  );
  await new Promise((r) => setTimeout(r, 100)); // let the last inotify events arrive
  assert.ok(seen.has(name(0x11)), `the good segment before it was placed (events: ${[...seen].join(', ')})`);
  assert.ok(![...seen, ...placed].some((f) => f.includes(name(0x12))), `the misplaced segment never appeared, not even as a temporary file (events: ${[...seen].join(', ')})`);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => /^[0-9A-F]{24}$/.test(f)), [], 'what it had placed is removed as it stops');
});
