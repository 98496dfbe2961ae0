/**
 * Start-up reconciliation after crashes at the awkward instants: between the spool rename and
 * the ledger, between archiving and recording the position, between archiving and deleting
 * the spool file.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import { Archive } from '../../src/archive/archive';
import { encodePlainHeader, sha256 } from '../../src/archive/envelope';
import { reconcile } from '../../src/daemon/resume';
import { Ledger } from '../../src/ledger/ledger';
import { LocalStorage } from '../../src/storage/local';
import { segmentFileName } from '../../src/wal/lsn';
import { buildSegment, FIXTURE_SEG_SIZE, FIXTURE_SYSID, fixtureCheckContext, sha256hex } from '../helpers/wal-fixtures';

const SITE = 'main';
const seg = BigInt(FIXTURE_SEG_SIZE);
const name = (n: bigint, tli = 1) => segmentFileName(tli, n, FIXTURE_SEG_SIZE);
/** A completed spool file: the envelope header for the WAL, then the WAL. */
const sealed = (data: Buffer) => Buffer.concat([encodePlainHeader(data.length, sha256(data)), data]);

describe('reconcile', () => {
  let dir: string;
  let spool: string;
  let ledger: Ledger;
  let archive: Archive;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-resume-'));
    spool = path.join(dir, 'spool');
    fs.mkdirSync(spool);
    ledger = Ledger.open(path.join(dir, 'ledger.db'));
    ledger.registerSite({ site: SITE, systemId: String(FIXTURE_SYSID), timeline: 1, walSegmentSize: FIXTURE_SEG_SIZE, serverVersionNum: 160000 });
    archive = new Archive(new LocalStorage(path.join(dir, 'archive')));
  });
  afterEach(() => {
    ledger.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const run = () =>
    reconcile({
      site: SITE,
      ledger,
      archives: [archive],
      spoolDir: spool,
      segSize: FIXTURE_SEG_SIZE,
      checkContext: fixtureCheckContext,
      log: pino({ level: 'silent' }),
    });

  function receiving(n: bigint) {
    ledger.upsertReceiving(SITE, { timeline: 1, segNo: n, name: name(n), startLsn: n * seg, size: FIXTURE_SEG_SIZE });
  }

  async function archived(n: bigint) {
    const data = buildSegment(n);
    receiving(n);
    ledger.markComplete(SITE, 1, n, sha256hex(data));
    await archive.putImmutable(Archive.walKey(name(n)), data);
    ledger.markArchived(SITE, 1, n, Archive.walKey(name(n)), sha256hex(data));
  }

  it('registers a segment the spool completed before the crash reached the ledger', async () => {
    ledger.advancePositions(SITE, { archived: 5n * seg });
    receiving(5n);
    const data = buildSegment(5n);
    fs.writeFileSync(path.join(spool, name(5n)), sealed(data));
    const r = await run();
    assert.equal(ledger.getSegment(SITE, 1, 5n)?.state, 'complete');
    assert.equal(ledger.getSegment(SITE, 1, 5n)?.sha256, sha256hex(data));
    assert.deepEqual(r.toUpload.map((u) => u.seg.name), [name(5n)]);
    assert.equal(r.resume?.lsn, 6n * seg, 'resumes after the complete segment');
    assert.equal(r.archivedThrough, 5n * seg, 'not archived yet');
  });

  it('sends a corrupt "complete" spool file back to be received again', async () => {
    receiving(5n);
    const data = buildSegment(5n);
    data.writeUInt16LE(0x1234, 8192 * 3); // a page with the wrong magic
    fs.writeFileSync(path.join(spool, name(5n)), sealed(data));
    const r = await run();
    assert.equal(ledger.getSegment(SITE, 1, 5n)?.state, 'receiving');
    assert.ok(fs.existsSync(path.join(spool, name(5n) + '.partial')));
    assert.ok(!fs.existsSync(path.join(spool, name(5n))));
    assert.equal(r.resume?.lsn, 5n * seg, 'receives the segment again from its start');
  });

  it('receives again a spool file whose WAL no longer matches its header, or that is unsealed', async () => {
    receiving(5n);
    receiving(6n);
    const five = sealed(buildSegment(5n));
    five[five.length - 100] ^= 0x01; // inside the last page's data: page headers still pass
    fs.writeFileSync(path.join(spool, name(5n)), five);
    fs.writeFileSync(path.join(spool, name(6n)), buildSegment(6n)); // no header room at all
    const r = await run();
    for (const n of [5n, 6n]) {
      assert.equal(ledger.getSegment(SITE, 1, n)?.state, 'receiving', `segment ${n}`);
      assert.ok(fs.existsSync(path.join(spool, name(n) + '.partial')), `segment ${n} back to .partial`);
    }
    assert.equal(r.resume?.lsn, 5n * seg);
  });

  it('drops, rather than reuses, a bad spool file that has another link (it may be an archived object)', async () => {
    receiving(5n);
    const data = sealed(buildSegment(5n));
    data[data.length - 100] ^= 0x01;
    const file = path.join(spool, name(5n));
    fs.writeFileSync(file, data);
    const other = path.join(dir, 'other-link');
    fs.linkSync(file, other);
    await run();
    assert.ok(!fs.existsSync(file) && !fs.existsSync(file + '.partial'), 'our name is gone, and not reused for receiving');
    assert.ok(fs.readFileSync(other).equals(data), 'the other link is untouched');
    assert.equal(ledger.getSegment(SITE, 1, 5n)?.state, 'receiving');
  });

  it('derives the archived position from archived rows when the crash came before it was stored', async () => {
    ledger.advancePositions(SITE, { archived: 5n * seg });
    await archived(5n);
    await archived(6n);
    await archived(8n); // 7 is missing: the position must stop at 7
    const r = await run();
    assert.equal(r.archivedThrough, 7n * seg);
  });

  it('deletes spool files of archived segments and the superseded partial object', async () => {
    ledger.advancePositions(SITE, { archived: 5n * seg });
    await archived(5n);
    fs.writeFileSync(path.join(spool, name(5n)), sealed(buildSegment(5n)));
    await archive.putPartial(Archive.walKey(name(5n)) + '.partial', buildSegment(5n).subarray(0, 100000));
    ledger.notePartial(SITE, { timeline: 1, segNo: 5n, name: name(5n), bytes: 100000, sha256: 'x'.repeat(64) });
    const r = await run();
    assert.ok(!fs.existsSync(path.join(spool, name(5n))));
    assert.equal(await archive.exists(Archive.walKey(name(5n)) + '.partial'), false);
    assert.deepEqual(ledger.partials(SITE), [], 'the removed partial is forgotten');
    assert.equal(r.resume?.lsn, 6n * seg);
  });

  it('removes every noted partial whose segment is archived whole, however far back, and keeps the others', async () => {
    // Seen under load: 5's job archived it whole and waited for 7's partial upload, which
    // landed; the kill came before 5's partial was deleted and before 7's upload was recorded
    // (it was noted before it started), while other uploads archived many later segments.
    ledger.advancePositions(SITE, { archived: 5n * seg });
    for (let n = 5n; n < 30n; n++) await archived(n);
    await archive.putPartial(Archive.walKey(name(5n)) + '.partial', buildSegment(5n).subarray(0, 100000));
    ledger.notePartial(SITE, { timeline: 1, segNo: 5n, name: name(5n), bytes: 100000, sha256: 'x'.repeat(64) });
    await archive.putPartial(Archive.walKey(name(7n)) + '.partial', buildSegment(7n).subarray(0, 50000));
    ledger.notePartial(SITE, { timeline: 1, segNo: 7n, name: name(7n), bytes: 50000, sha256: '' });
    // 30 is still being received: its partial is the archive's freshest copy of that WAL.
    receiving(30n);
    await archive.putPartial(Archive.walKey(name(30n)) + '.partial', buildSegment(30n).subarray(0, 8192));
    ledger.notePartial(SITE, { timeline: 1, segNo: 30n, name: name(30n), bytes: 8192, sha256: '' });
    await run();
    assert.equal(await archive.exists(Archive.walKey(name(5n)) + '.partial'), false);
    assert.equal(await archive.exists(Archive.walKey(name(7n)) + '.partial'), false);
    assert.equal(await archive.exists(Archive.walKey(name(30n)) + '.partial'), true);
    assert.deepEqual(ledger.partials(SITE).map((p) => p.segNo), [30n]);
    for (const n of [5n, 6n, 7n, 29n]) assert.equal(await archive.exists(Archive.walKey(name(n))), true, 'the whole segments stay');
  });

  it("keeps a timeline's final partial: it is the segment's archived object", async () => {
    ledger.advancePositions(SITE, { archived: 5n * seg });
    receiving(5n);
    const key = Archive.walKey(name(5n)) + '.partial';
    await archive.putPartial(key, buildSegment(5n).subarray(0, 8192));
    ledger.notePartial(SITE, { timeline: 1, segNo: 5n, name: name(5n), bytes: 8192, sha256: '' });
    ledger.markArchived(SITE, 1, 5n, key, 'y'.repeat(64));
    await run();
    assert.equal(await archive.exists(key), true);
    assert.deepEqual(ledger.partials(SITE), [], 'nothing left to remove later');
  });

  it('finds a completed segment lost from the spool in the archive, or receives it again', async () => {
    ledger.advancePositions(SITE, { archived: 5n * seg });
    for (const n of [5n, 6n]) {
      const data = buildSegment(n);
      receiving(n);
      ledger.markComplete(SITE, 1, n, sha256hex(data));
    }
    await archive.putImmutable(Archive.walKey(name(5n)), buildSegment(5n));
    const r = await run();
    assert.equal(ledger.getSegment(SITE, 1, 5n)?.state, 'archived');
    assert.equal(ledger.getSegment(SITE, 1, 6n)?.state, 'receiving');
    assert.equal(r.resume?.lsn, 6n * seg, 'the gap is received again');
  });

  it('resumes a timeline-ended segment (archived as .partial) at its start on the newer timeline', async () => {
    ledger.advancePositions(SITE, { archived: 5n * seg });
    receiving(5n);
    ledger.markArchived(SITE, 1, 5n, Archive.walKey(name(5n)) + '.partial', 'y'.repeat(64));
    ledger.upsertReceiving(SITE, { timeline: 2, segNo: 5n, name: name(5n, 2), startLsn: 5n * seg, size: FIXTURE_SEG_SIZE });
    const r = await run();
    assert.deepEqual(r.resume, { lsn: 5n * seg, tli: 2 });
    assert.equal(r.archivedThrough, 5n * seg, 'a partial does not count as a whole segment');
  });
});
