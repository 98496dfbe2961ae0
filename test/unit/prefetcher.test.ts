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
import { Archive } from '../../src/archive/archive';
import { isWalvaultError } from '../../src/errors';
import { fetchWalFile } from '../../src/restore/fetch-wal-file';
import { runPrefetcher } from '../../src/restore/prefetch';
import { LocalStorage } from '../../src/storage/local';
import { segmentFileName } from '../../src/wal/lsn';
import { buildSegment, FIXTURE_SEG_SIZE, FIXTURE_SYSID } from '../helpers/wal-fixtures';

test('a misplaced segment is never renamed into the prefetch directory; the prefetcher stops there', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-prefetcher-'));
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-prefetcher-archive-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const name = (n: number) => segmentFileName(1, BigInt(n), FIXTURE_SEG_SIZE);
  const cluster = { systemId: FIXTURE_SYSID.toString(), pgVersionNum: 160000, walSegmentSize: FIXTURE_SEG_SIZE };
  // The archive: 0x12's name holds 0x10's segment (whole and valid on its own bytes).
  const archive = new Archive(new LocalStorage(root));
  await archive.ensureCluster(cluster);
  for (const [n, held] of [[0x11, 0x11n], [0x12, 0x10n], [0x13, 0x13n]] as const) await archive.putImmutable(Archive.walKey(name(n)), buildSegment(held));
  const seen = new Set<string>();
  const watcher = fs.watch(dir, (_event, file) => {
    if (file) seen.add(String(file));
  });
  t.after(() => watcher.close());
  const placed: string[] = [];
  await assert.rejects(
    runPrefetcher({
      dir,
      count: 3,
      start: name(0x10),
      segSize: FIXTURE_SEG_SIZE,
      idleExitMs: 60000,
      fetch: async (n, file) => {
        // What is in the directory now, at each fetch: never the misplaced one.
        placed.push(...fs.readdirSync(dir));
        return fetchWalFile(archive, n, file, { cluster: async () => cluster });
      },
    }),
    (err: unknown) => isWalvaultError(err, 'ARCHIVE_MISPLACED') && err.message.includes(`wal/${name(0x12)} in `) && err.message.includes(`holds the WAL of ${name(0x10)}`),
  );
  await new Promise((r) => setTimeout(r, 100)); // let the last inotify events arrive
  assert.ok(seen.has(name(0x11)), `the good segment before it was placed (events: ${[...seen].join(', ')})`);
  // It streams into a temporary name (which the shell's `mv` of %f never takes) and is never renamed to its own.
  assert.ok(![...seen, ...placed].includes(name(0x12)), `the misplaced segment never appeared under its name (events: ${[...seen].join(', ')})`);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes(name(0x12))), [], 'nor is its temporary file left behind');
  assert.deepEqual(fs.readdirSync(dir).filter((f) => /^[0-9A-F]{24}$/.test(f)), [], 'what it had placed is removed as it stops');
});
