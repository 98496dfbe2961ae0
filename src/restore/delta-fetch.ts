/**
 * The fetching half of a delta restore by blocks (./delta-blocks.ts): the blocks of each
 * file that differ from the backup, taken out of the backup's parts and written in place.
 *
 * A block's bytes lie at the file's content offset in its tar (the block index says where)
 * plus the block's offset in the file; the parts' plaintext sizes (the metadata) say which
 * part holds them, and only the frames of that part that hold needed bytes are decoded
 * (../archive/read/pick-frames.ts). A block may span frames, and parts: it is assembled
 * before it is checked. Every block is checked against the index's CRC-32C and CRC-32
 * before it is written; a part's header must be the part the metadata records there.
 * Parts are read PARTS_AT_ONCE at a time; a file is opened at its first write, and cut to
 * its size, fsynced and closed at its last.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { crc32, crc32c } from '@node-rs/crc32';
import type { Logger } from 'pino';
import type { Archive } from '../archive/archive';
import type { IndexMember as BlockIndexMember } from '../backup/block-index';
import type { BackupArchive } from '../backup/catalog';
import { WalvaultError } from '../errors';
import { Progress } from '../observe/progress';
import { runPool } from '../util/run-pool';

const PARTS_AT_ONCE = 4;

/** What to fetch of one file. */
export interface FileRuns {
  file: string;
  mode: number;
  /** Which tar of the backup holds it. */
  tar: number;
  member: BlockIndexMember;
  /** Blocks [from, to) to fetch, in order. */
  runs: Array<[number, number]>;
  /** Bytes there now; null when the file is not there (it is created). */
  existingSize: number | null;
}

/** One run of one file in its tar's byte space. */
interface Need {
  f: FileRuns;
  from: number;
  to: number;
  start: number;
  end: number;
}

/** An open file and the blocks still to come into it. */
interface Target {
  f: FileRuns;
  handle: Promise<FileHandle> | null;
  left: number;
}

interface Picked {
  at: number;
  bytes: Buffer;
}

/** Bytes [start, end) of the part's plaintext from its decoded frames (in order): a view when one frame holds them. */
function slice(frames: readonly Picked[], start: number, end: number, label: string): Buffer {
  let i = frames.findIndex((p) => p.at <= start && start < p.at + p.bytes.length);
  const first = frames[i];
  if (first && end <= first.at + first.bytes.length) return first.bytes.subarray(start - first.at, end - first.at);
  const out = Buffer.allocUnsafe(end - start);
  for (let at = start; at < end; i++) {
    const p = frames[i];
    if (!p || at < p.at || at >= p.at + p.bytes.length) throw new WalvaultError('INTERNAL', `${label}: the frames decoded do not hold byte ${at}`);
    at += p.bytes.copy(out, at - start, at - p.at, Math.min(p.bytes.length, end - p.at));
  }
  return out;
}

/** Writes `bytes` whole at `position`. */
async function writeAt(h: FileHandle, bytes: Buffer, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) done += (await h.write(bytes, done, bytes.length - done, position + done)).bytesWritten;
}

export async function fetchBlocks(o: {
  archive: Archive;
  tars: ReadonlyArray<{ tar: BackupArchive; blockSize: number }>;
  files: ReadonlyMap<string, FileRuns>;
  log: Logger;
  progressOut?: NodeJS.WriteStream;
  what: string;
}): Promise<{ blocks: number; bytes: number; patchedBytes: number }> {
  const targets = new Map<FileRuns, Target>();
  const needs: Need[][] = o.tars.map(() => []);
  let total = 0;
  for (const f of o.files.values()) {
    const bs = o.tars[f.tar].blockSize;
    let blocks = 0;
    for (const [from, to] of f.runs) {
      const start = f.member.offset + from * bs;
      const end = f.member.offset + Math.min(f.member.size, to * bs);
      needs[f.tar].push({ f, from, to, start, end });
      blocks += to - from;
      total += end - start;
    }
    targets.set(f, { f, handle: null, left: blocks });
  }
  const stats = { blocks: 0, bytes: 0, patchedBytes: 0 };
  const progress = new Progress({ what: `delta fetch from ${o.what}`, log: o.log, out: o.progressOut });
  progress.setTotal(total);

  const open = (t: Target): Promise<FileHandle> => (t.handle ??= t.f.existingSize === null ? fsp.open(t.f.file, 'wx', t.f.mode) : fsp.open(t.f.file, 'r+'));
  const close = async (t: Target): Promise<void> => {
    const h = await open(t);
    try {
      await h.truncate(t.f.member.size);
      await h.sync();
    } finally {
      await h.close();
    }
  };
  /** Blocks spanning two parts, as far as they have come. */
  const pending = new Map<string, { buf: Buffer; filled: number }>();

  const part = async (tarIndex: number, p: BackupArchive['parts'][number], partStart: number, partNeeds: Need[]): Promise<void> => {
    const bs = o.tars[tarIndex].blockSize;
    const partEnd = partStart + p.size;
    const wanted = (s: number, e: number) => partNeeds.some((n) => n.start < partStart + e && partStart + s < n.end);
    const picked = await o.archive.pickFrames(p.key, wanted);
    if (!picked) throw new WalvaultError('ARCHIVE_CORRUPT', `${p.key} in ${o.archive.storage.description} is missing`, { fix: `restore another backup` });
    if (picked.header.plaintextSize !== p.size || picked.header.sha256.toString('hex') !== p.sha256) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${p.key} in ${o.archive.storage.description} is not the part the backup's metadata records there (its size or SHA-256 differs)`, { fix: `the backup cannot be restored as it is` });
    }
    const writes: Array<{ t: Target; position: number; bytes: Buffer }> = [];
    for (const n of partNeeds) {
      const first = Math.max(n.from, Math.floor((partStart - n.f.member.offset) / bs));
      for (let b = first; b < n.to; b++) {
        const bStart = n.f.member.offset + b * bs;
        const bEnd = n.f.member.offset + Math.min(n.f.member.size, (b + 1) * bs);
        if (bStart >= partEnd) break;
        const from = Math.max(bStart, partStart);
        const to = Math.min(bEnd, partEnd);
        if (from >= to) continue;
        let block = slice(picked.frames, from - partStart, to - partStart, p.key);
        if (from !== bStart || to !== bEnd) {
          const key = `${n.f.file}#${b}`;
          let pend = pending.get(key);
          if (!pend) pending.set(key, (pend = { buf: Buffer.alloc(bEnd - bStart), filled: 0 }));
          pend.filled += block.copy(pend.buf, from - bStart);
          if (pend.filled < pend.buf.length) continue;
          pending.delete(key);
          block = pend.buf;
        }
        const hashes = n.f.member.hashes;
        if ((crc32c(block) >>> 0) !== hashes.readUInt32BE(8 * b) || (crc32(block) >>> 0) !== hashes.readUInt32BE(8 * b + 4)) {
          throw new WalvaultError('ARCHIVE_CORRUPT', `block ${b} of ${n.f.file} as ${p.key} holds it does not match the backup's block index`, { fix: `restore without --delta, or another backup` });
        }
        writes.push({ t: targets.get(n.f)!, position: b * bs, bytes: block });
      }
    }
    // Consecutive blocks of a file go in one write.
    for (let i = 0; i < writes.length; ) {
      const w = writes[i];
      const group = [w.bytes];
      let j = i + 1;
      let next = w.position + w.bytes.length;
      while (j < writes.length && writes[j].t === w.t && writes[j].position === next) {
        group.push(writes[j].bytes);
        next += writes[j].bytes.length;
        j++;
      }
      const length = next - w.position;
      await writeAt(await open(w.t), group.length === 1 ? group[0] : Buffer.concat(group), w.position);
      stats.blocks += j - i;
      stats.bytes += length;
      if (w.t.f.existingSize !== null) stats.patchedBytes += length;
      progress.update(stats.bytes);
      w.t.left -= j - i;
      if (w.t.left === 0) await close(w.t);
      i = j;
    }
  };

  const jobs: Array<() => Promise<void>> = [];
  o.tars.forEach(({ tar }, tarIndex) => {
    const list = needs[tarIndex].sort((a, b) => a.start - b.start);
    let partStart = 0;
    let k = 0;
    for (const p of tar.parts) {
      const partEnd = partStart + p.size;
      while (k < list.length && list[k].end <= partStart) k++;
      const here: Need[] = [];
      for (let j = k; j < list.length && list[j].start < partEnd; j++) here.push(list[j]);
      const start = partStart;
      if (here.length > 0) jobs.push(() => part(tarIndex, p, start, here));
      partStart = partEnd;
    }
  });
  try {
    await runPool(jobs, PARTS_AT_ONCE, (job) => job());
    // Files with nothing to fetch: created empty, or cut to the backup's size.
    for (const t of targets.values()) {
      if (t.left === 0 && t.handle === null && (t.f.existingSize === null || t.f.existingSize !== t.f.member.size)) await close(t);
      else if (t.left > 0) throw new WalvaultError('INTERNAL', `${t.f.file}: ${t.left} blocks were not fetched`);
    }
  } catch (err) {
    for (const t of targets.values()) if (t.handle) await (await t.handle.catch(() => null))?.close().catch(() => undefined);
    throw err;
  } finally {
    progress.finish();
  }
  return stats;
}
