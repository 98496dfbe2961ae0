/**
 * The chain patcher rebuilds a file, streamed member by member, to exactly the bytes the
 * reconstruction plan of ./incremental-file.test.ts says, whatever the chunking; and refuses
 * a source that does not match its manifest, or a member missing the file.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { BLOCK_SIZE, ChainPatcher, type ChainMember } from '../../src/restore/chain-patcher';
import { buildIncrementalFile, expandRuns, parseIncrementalHeader, planReconstruction } from '../../src/restore/incremental-file';
import { FileWriterPool } from '../../src/restore/file-writers';
import { newChecksum } from '../../src/restore/manifest-checksum';
import type { SlabRing } from '../../src/restore/slab-ring';

const ring = { retain: () => undefined, release: () => undefined } as unknown as SlabRing;
// The restore's writer threads write what the patcher places.
const writers = new FileWriterPool('CRC32C', 2);
after(() => writers.destroy());

function image(tag: number): Buffer {
  const b = Buffer.alloc(BLOCK_SIZE);
  for (let i = 0; i < BLOCK_SIZE; i += 4) b.writeUInt32LE((tag << 16) | (i & 0xffff), i);
  return b;
}

function crc(bytes: Buffer): string {
  const c = newChecksum('CRC32C');
  c.update(bytes);
  return c.digest();
}

/** Feeds `bytes` in pieces of `chunk` bytes, each a view of its own "slab" of shared memory. */
async function feed(sink: { data(c: Buffer, slab: Buffer): Promise<void> | void }, bytes: Buffer, chunk: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += chunk) {
    const piece = bytes.subarray(at, at + chunk);
    const slab = Buffer.from(new SharedArrayBuffer(piece.length));
    piece.copy(slab);
    await sink.data(slab, slab);
  }
}

// The chain, oldest first: F holds 10 whole blocks; I1 says the file was cut to 4 blocks and
// changed block 1; I2 (newest) says it is 8 blocks long again, with blocks 4 and 5 written.
const full = Buffer.concat(Array.from({ length: 10 }, (_, b) => image(0x100 + b)));
const i1 = buildIncrementalFile({ truncationBlockLength: 4, blocks: [{ blockNo: 1, image: image(0x201) }] }, BLOCK_SIZE);
const i2 = buildIncrementalFile({ truncationBlockLength: 8, blocks: [{ blockNo: 4, image: image(0x304) }, { blockNo: 5, image: image(0x305) }] }, BLOCK_SIZE);
const REL = 'base/5/16384';
const INC = 'base/5/INCREMENTAL.16384';

function members(overrides: { i1?: string; full?: string } = {}): ChainMember[] {
  return [
    { name: 'I1', manifest: { algorithm: 'CRC32C', files: [{ path: INC, size: i1.length, checksum: overrides.i1 ?? crc(i1) }] } },
    { name: 'F', manifest: { algorithm: 'CRC32C', files: [{ path: REL, size: full.length, checksum: overrides.full ?? crc(full) }] } },
  ];
}

async function rebuild(dir: string, chunk: number, chain: ChainMember[], skipFull = false): Promise<Buffer> {
  const target = path.join(dir, `out-${chunk}`);
  const patcher = new ChainPatcher(ring, writers, chain);
  patcher.beginNewest('I2', INC, target, 0o600, i2.length, 'CRC32C');
  await feed(patcher, i2, chunk);
  let newest: unknown = null;
  await patcher.endNewest((facts) => (newest = facts));
  for (const [i, m] of chain.entries()) {
    const sink = patcher.memberSink(m, '');
    if (!(skipFull && m.name === 'F')) {
      const isFull = m.name === 'F';
      await sink.entry({ path: isFull ? REL : INC, type: 'file', mode: 0o600, size: isFull ? full.length : i1.length, linkTarget: '' });
      await feed({ data: (c) => sink.data(c) }, isFull ? full : i1, chunk);
      await sink.entryEnd();
    }
    await patcher.endMember(m.name, i === chain.length - 1);
  }
  const facts = await patcher.finish('CRC32C');
  assert.deepEqual(newest, { size: i2.length, checksum: crc(i2) });
  const out = fs.readFileSync(target);
  assert.deepEqual(facts.get(REL), { size: out.length, checksum: crc(out) });
  return out;
}

/** The plan's answer, block by block. */
function planned(): Buffer {
  const plan = planReconstruction(
    REL,
    [
      { backup: 'I2', kind: 'incremental', header: parseIncrementalHeader(i2, BLOCK_SIZE) },
      { backup: 'I1', kind: 'incremental', header: parseIncrementalHeader(i1, BLOCK_SIZE) },
      { backup: 'F', kind: 'full', length: full.length },
    ],
    BLOCK_SIZE,
  );
  assert.equal(plan.kind, 'reconstruct');
  if (plan.kind !== 'reconstruct') throw new Error('unreachable');
  const sources: Record<string, Buffer> = { I2: i2, I1: i1, F: full };
  const headers: Record<string, number> = { I2: parseIncrementalHeader(i2, BLOCK_SIZE).headerSize, I1: parseIncrementalHeader(i1, BLOCK_SIZE).headerSize };
  return Buffer.concat(
    expandRuns(plan.runs).map((s) => {
      if (s.source === 'zero') return Buffer.alloc(BLOCK_SIZE);
      const at = s.source === 'incremental' ? headers[s.backup] + s.index * BLOCK_SIZE : s.block * BLOCK_SIZE;
      return sources[s.backup].subarray(at, at + BLOCK_SIZE);
    }),
  );
}

describe('rebuilding a file from an incremental chain', () => {
  test('gives the planned bytes, whatever the chunking: newest blocks, nothing from before a truncation, zeros for the rest', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-chain-'));
    try {
      const want = planned();
      // Spelled out: blocks 0, 2, 3 from F; 1 from I1; 4, 5 from I2; 6, 7 zero (F's were cut away by I1).
      assert.deepEqual(want, Buffer.concat([image(0x100), image(0x201), image(0x102), image(0x103), image(0x304), image(0x305), Buffer.alloc(2 * BLOCK_SIZE)]));
      for (const chunk of [BLOCK_SIZE, 3000, 1 << 20, 12]) assert.ok((await rebuild(dir, chunk, members())).equals(want), `chunks of ${chunk} bytes`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('refuses a source that does not match its own manifest', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-chain-'));
    try {
      await assert.rejects(rebuild(dir, 4096, members({ full: '00000000' })), /base\/5\/16384 of backup F does not match that backup's manifest/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('refuses a chain whose member lacks the file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-chain-'));
    try {
      await assert.rejects(rebuild(dir, 4096, members(), true), /backup F of the chain does not hold it: the chain is broken/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
