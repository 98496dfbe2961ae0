/**
 * A site's uploads to two local archives, one of them failing (its wal/ path blocked by a
 * file) until the test clears it: what the site reports as archived (every archive by
 * default, or the quorum's), when a spool file goes, and when the ledger calls a segment
 * archived. Real archives on disk, a real ledger.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import { Archive } from '../../src/archive/archive';
import { encodePlainHeader, sha256 } from '../../src/archive/envelope';
import { SiteUploads } from '../../src/daemon/site-uploads';
import { StateWrites } from '../../src/daemon/state-writes';
import { Ledger } from '../../src/ledger/ledger';
import { LocalStorage } from '../../src/storage/local';
import { segmentFileName } from '../../src/wal/lsn';
import { buildSegment, FIXTURE_SEG_SIZE, FIXTURE_SYSID } from '../helpers/wal-fixtures';
import { waitFor } from '../helpers/wait-for';

const SITE = 'main';
const SEG = BigInt(FIXTURE_SEG_SIZE);
const FIRST = 3n;

describe('uploads to several archives', () => {
  let dir: string;
  let spool: string;
  let ledger: Ledger;
  let good: Archive;
  let down: Archive;
  let blocker: string;
  let uploads: SiteUploads | null = null;
  const advanced: bigint[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-site-uploads-'));
    spool = path.join(dir, 'spool');
    fs.mkdirSync(spool);
    ledger = Ledger.open(path.join(dir, 'ledger.db'));
    ledger.registerSite({ site: SITE, systemId: String(FIXTURE_SYSID), timeline: 1, walSegmentSize: FIXTURE_SEG_SIZE, serverVersionNum: 160000 });
    good = new Archive(new LocalStorage(path.join(dir, 'good')));
    fs.mkdirSync(path.join(dir, 'down'));
    // A file where the archive's wal/ directory goes: every segment put fails until it is removed.
    blocker = path.join(dir, 'down', 'wal');
    fs.writeFileSync(blocker, 'not a directory');
    down = new Archive(new LocalStorage(path.join(dir, 'down')));
    advanced.length = 0;
  });
  afterEach(() => {
    uploads?.stop();
    uploads = null;
    ledger.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function start(quorum: number): SiteUploads {
    const log = pino({ level: 'silent' });
    uploads = new SiteUploads({
      site: SITE,
      archives: [good, down],
      quorum,
      ledger,
      writes: new StateWrites(dir, log, new AbortController().signal),
      spoolDir: spool,
      segSize: FIXTURE_SEG_SIZE,
      concurrency: 2,
      log,
      stallMs: 60_000,
      initialArchived: FIRST * SEG,
      onAdvance: (lsn) => advanced.push(lsn),
    });
    return uploads;
  }

  /** Three complete segments in the spool and the ledger, handed to the uploads. */
  function completeThree(u: SiteUploads): string[] {
    const names: string[] = [];
    for (let n = FIRST; n < FIRST + 3n; n++) {
      const name = segmentFileName(1, n, FIXTURE_SEG_SIZE);
      const data = buildSegment(n);
      const digest = sha256(data);
      fs.writeFileSync(path.join(spool, name), Buffer.concat([encodePlainHeader(data.length, digest), data]));
      ledger.upsertReceiving(SITE, { timeline: 1, segNo: n, name, startLsn: n * SEG, size: FIXTURE_SEG_SIZE });
      ledger.markComplete(SITE, 1, n, digest.toString('hex'));
      u.enqueue({ tli: 1, segNo: n, name, startLsn: n * SEG }, digest.toString('hex'));
      names.push(name);
    }
    return names;
  }

  const inGood = (name: string) => fs.existsSync(path.join(dir, 'good', 'wal', name));
  const spooled = () => fs.readdirSync(spool).sort();
  const archivedRows = () => ledger.segmentsInState(SITE, 'archived').map((r) => r.name);
  const end = (FIRST + 3n) * SEG;

  it('by default reports only what every archive holds, and keeps the spool until the lagging one catches up', async () => {
    const u = start(2);
    const names = completeThree(u);
    await waitFor(() => names.every(inGood) && u.lanes[1].uploader.stats.failures >= 3, { timeoutMs: 20000, what: 'the good archive to hold all three, the other to fail' });
    assert.equal(u.lanes[0].uploader.archivedLsn, end, 'the good archive holds them');
    assert.equal(u.archivedLsn, FIRST * SEG, 'the site reports nothing new: the other archive lacks them');
    assert.deepEqual(advanced, []);
    assert.deepEqual(spooled(), names, 'the spool keeps every segment');
    assert.deepEqual(archivedRows(), [], 'the ledger calls none archived');
    assert.ok(u.failingForMs !== null, 'storage is failing');
    assert.deepEqual(u.lagging(end).map((l) => l.description), [down.storage.description], 'the lagging archive is named');

    fs.rmSync(blocker);
    await waitFor(() => u.archivedLsn === end, { timeoutMs: 30000, what: 'the failing archive to catch up' });
    await u.idle();
    // As the recovered archive catches up (several uploads at once), the site follows it.
    assert.equal(advanced[advanced.length - 1], end, 'the site position reached the end once both held everything');
    assert.ok(advanced.every((lsn, i) => lsn > FIRST * SEG && (i === 0 || lsn > advanced[i - 1])), `forward only: ${advanced.join(', ')}`);
    assert.deepEqual(spooled(), [], 'and the spool let go');
    assert.deepEqual(archivedRows(), names);
    assert.equal(u.stats.archivedSegments, 3);
    for (const name of names) assert.ok(fs.existsSync(path.join(dir, 'down', 'wal', name)), `${name} in the recovered archive`);
  });

  it('with a quorum of one reports what one archive holds, and still keeps the spool for the other', async () => {
    const u = start(1);
    const names = completeThree(u);
    await waitFor(() => u.archivedLsn === end, { timeoutMs: 20000, what: 'the site position to follow the good archive' });
    assert.equal(u.lanes[1].uploader.archivedLsn, FIRST * SEG, 'the other archive holds nothing new');
    assert.equal(u.lowestLsn, FIRST * SEG, 'the spool holds WAL from the lowest archive on');
    assert.deepEqual(spooled(), names, 'the spool keeps what the other archive lacks');
    assert.deepEqual(archivedRows(), [], 'not archived everywhere: the ledger waits');

    fs.rmSync(blocker);
    await waitFor(() => spooled().length === 0, { timeoutMs: 30000, what: 'the lagging archive to catch up from the spool' });
    await u.idle();
    assert.equal(u.lowestLsn, end);
    assert.deepEqual(archivedRows(), names);
  });
});
