/**
 * A thread of the restore's writer pool (./file-writers.ts): writes small files whole,
 * hashes large ones, writes pieces at their offsets, and for the chain patcher opens, places
 * (writes and CRCs stretches) and closes files, and for a delta restore reads existing files
 * and checksums them. It acknowledges each piece in the order it
 * got them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { crc32c } from '@node-rs/crc32';
import { xxh64 } from '@node-rs/xxhash';
import { decodeFrame, decodeFrameNow, plainSlice, type FrameKeys, type PickedFrame } from '../archive/read/pick-frames';
import { DIGEST_READ_SIZE, FLUSH_EVERY, PATCH_PAGE, WRITER_ROLE, type FromWorker, type ToWorker } from './file-writer-messages';
import { newChecksum, type IncrementalChecksum, type ManifestChecksumAlgorithm } from './manifest-checksum';

/** A file open on this thread, flushed every FLUSH_EVERY bytes written. */
interface Flushed {
  fd: number;
  path: string;
  unflushed: number;
  /** Runs when the flush in progress ends; null when none is. */
  flushing: Array<() => void> | null;
}

interface OpenFile extends Flushed {
  hash: IncrementalChecksum;
  size: number;
}

if (!isMainThread && parentPort && (workerData as { role?: string } | null)?.role === WRITER_ROLE) {
  /** From the pool's first message ('setup'). */
  let algorithm: ManifestChecksumAlgorithm = 'CRC32C';
  const port = parentPort;
  /** Small files this worker writes whole. */
  const open = new Map<number, OpenFile>();
  /** Files opened here for positional writes (openAt), by id. */
  const placed = new Map<number, Flushed>();
  /** Large files this worker hashes. */
  const hashes = new Map<number, IncrementalChecksum>();
  const failedIds = new Set<number>();
  /** The one buffer a digestFile reads through, and a patch pwrite compares in: a thread's memory stays at this, whatever the file's size. */
  let readBuffer: Buffer | null = null;
  const report = (id: number, file: string, err: unknown, reading = false) => {
    failedIds.add(id);
    const e = err as NodeJS.ErrnoException;
    port.postMessage({ op: 'error', id, path: file, message: e.message, code: e.code, reading } satisfies FromWorker);
  };
  const ack = (bytes: number, crcs?: number[]) => port.postMessage({ op: 'ack', bytes, crcs } satisfies FromWorker);
  const writeAll = (fd: number, bytes: Uint8Array, position: number | null) => {
    let at = 0;
    while (at < bytes.byteLength) at += fs.writeSync(fd, bytes, at, bytes.byteLength - at, position === null ? null : position + at);
  };
  /** Reads what `fd` holds where `bytes` go and writes only the pages that differ; returns the bytes written. */
  const patch = (fd: number, bytes: Uint8Array, position: number): number => {
    if (!readBuffer || readBuffer.length < bytes.byteLength) readBuffer = Buffer.allocUnsafe(Math.max(DIGEST_READ_SIZE, bytes.byteLength));
    let have = 0;
    for (let n; have < bytes.byteLength && (n = fs.readSync(fd, readBuffer, have, bytes.byteLength - have, position + have)) > 0; ) have += n;
    const want = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let written = 0;
    for (let at = 0; at < want.length; at += PATCH_PAGE) {
      const end = Math.min(at + PATCH_PAGE, want.length);
      if (end <= have && want.compare(readBuffer, at, end, at, end) === 0) continue;
      writeAll(fd, want.subarray(at, end), position + at);
      written += end - at;
    }
    return written;
  };
  // fdatasync on the thread pool; this thread goes on writing.
  const flush = (id: number, f: Flushed, then?: () => void) => {
    if (f.flushing) {
      if (then) f.flushing.push(then);
      return;
    }
    f.flushing = then ? [then] : [];
    f.unflushed = 0;
    fs.fdatasync(f.fd, (err) => {
      if (err) report(id, f.path, err);
      const waiting = f.flushing ?? [];
      f.flushing = null;
      for (const w of waiting) w();
    });
  };
  port.on('message', (m: ToWorker) => {
    switch (m.op) {
      case 'setup': {
        algorithm = m.algorithm;
        return;
      }
      case 'abort': {
        for (const f of open.values()) fs.close(f.fd, () => undefined);
        for (const f of placed.values()) fs.close(f.fd, () => undefined);
        open.clear();
        placed.clear();
        port.postMessage({ op: 'aborted' } satisfies FromWorker);
        return;
      }
      case 'open': {
        try {
          open.set(m.id, { fd: fs.openSync(m.path, 'wx', m.mode), path: m.path, hash: newChecksum(algorithm), size: 0, unflushed: 0, flushing: null });
        } catch (err) {
          report(m.id, m.path, err);
        }
        return;
      }
      case 'data': {
        const f = open.get(m.id);
        if (f && !failedIds.has(m.id)) {
          try {
            f.hash.update(m.bytes);
            writeAll(f.fd, m.bytes, null);
            f.size += m.bytes.byteLength;
            f.unflushed += m.bytes.byteLength;
            if (f.unflushed >= FLUSH_EVERY && !f.flushing) flush(m.id, f);
          } catch (err) {
            report(m.id, f.path, err);
          }
        }
        ack(m.bytes.byteLength);
        return;
      }
      case 'close': {
        // The fsync runs on the thread pool while this thread goes on with the next files.
        const f = open.get(m.id);
        if (!f) return;
        open.delete(m.id);
        const checksum = f.hash.digest();
        const finish = () =>
          fs.fsync(f.fd, (syncErr) => {
            fs.close(f.fd, (closeErr) => {
              const err = syncErr ?? closeErr;
              if (err) report(m.id, f.path, err);
              else if (!failedIds.has(m.id)) port.postMessage({ op: 'closed', id: m.id, size: f.size, checksum } satisfies FromWorker);
            });
          });
        if (f.flushing) f.flushing.push(finish);
        else finish();
        return;
      }
      case 'openAt': {
        let fd: number | null = null;
        try {
          fd = fs.openSync(m.path, m.flags, m.mode);
          if (m.size !== null) fs.ftruncateSync(fd, m.size);
          placed.set(m.file, { fd, path: m.path, unflushed: 0, flushing: null });
        } catch (err) {
          if (fd !== null) fs.closeSync(fd);
          report(m.file, m.path, err);
        }
        return;
      }
      case 'closeAt': {
        const f = placed.get(m.file);
        placed.delete(m.file);
        // Its open failed, and said so: the pool has failed already.
        if (f === undefined) return port.postMessage({ op: 'answered', id: m.id, value: 0 } satisfies FromWorker);
        // On the thread pool, after any flush of it: this thread goes on writing.
        const close = (syncErr: Error | null) =>
          fs.close(f.fd, (closeErr) => {
            const err = syncErr ?? closeErr;
            if (err) report(m.id, m.path, err);
            else port.postMessage({ op: 'answered', id: m.id, value: 0 } satisfies FromWorker);
          });
        const finish = () => (m.sync ? fs.fsync(f.fd, close) : close(null));
        if (f.flushing) f.flushing.push(finish);
        else finish();
        return;
      }
      case 'patchPart': {
        patchPart(m).then(
          (pieces) => port.postMessage({ op: 'patched', id: m.id, pieces } satisfies FromWorker, pieces.map((p) => p.bytes.buffer as ArrayBuffer)),
          (err: Error & { code?: string }) => {
            failedIds.add(m.id);
            port.postMessage({ op: 'error', id: m.id, path: (err as { path?: string }).path ?? m.keys.label, message: err.message, code: err.code, corrupt: err.code === 'ARCHIVE_CORRUPT' || err.code === 'ARCHIVE_AUTH_FAILED' } satisfies FromWorker);
          },
        );
        return;
      }
      case 'digestFiles': {
        const facts: Array<{ size: number; checksum: string; blocks?: Uint8Array }> = [];
        const transfer: ArrayBuffer[] = [];
        for (const file of m.paths) {
          let fd: number | null = null;
          try {
            fd = openNoAtime(file);
            readBuffer ??= Buffer.allocUnsafe(DIGEST_READ_SIZE);
            if (m.blockSize) {
              // Made durable together at the end (../util/sync-filesystem.ts), not with an fsync each.
              const { size, blocks } = blockHashes(fd, readBuffer, m.blockSize, m.range ?? [0, Number.MAX_SAFE_INTEGER]);
              facts.push({ size, checksum: '', blocks });
              transfer.push(blocks.buffer as ArrayBuffer);
              continue;
            }
            const hash = newChecksum(algorithm);
            let size = 0;
            for (let n; (n = fs.readSync(fd, readBuffer, 0, readBuffer.length, null)) > 0; size += n) hash.update(readBuffer.subarray(0, n));
            // A file kept is as durable as one written (cheap when nothing of it is unflushed).
            fs.fsyncSync(fd);
            facts.push({ size, checksum: hash.digest() });
          } catch (err) {
            report(m.id, file, err, true);
            return;
          } finally {
            if (fd !== null) fs.closeSync(fd);
          }
        }
        port.postMessage({ op: 'digestedFiles', id: m.id, facts } satisfies FromWorker, transfer);
        return;
      }
      case 'hash': {
        let h = hashes.get(m.id);
        if (!h) hashes.set(m.id, (h = newChecksum(algorithm)));
        h.update(m.bytes);
        ack(m.bytes.byteLength);
        return;
      }
      case 'digest': {
        const h = hashes.get(m.id) ?? newChecksum(algorithm);
        hashes.delete(m.id);
        port.postMessage({ op: 'digested', id: m.id, checksum: h.digest() } satisfies FromWorker);
        return;
      }
      case 'pwrite': {
        let written = m.bytes.byteLength;
        try {
          if (m.patch) written = patch(m.fd, m.bytes, m.position);
          else writeAll(m.fd, m.bytes, m.position);
        } catch (err) {
          report(m.id, m.path, err);
        }
        if (m.patch) port.postMessage({ op: 'ack', bytes: m.bytes.byteLength, written } satisfies FromWorker);
        else ack(m.bytes.byteLength);
        return;
      }
      case 'place': {
        const crcs: number[] = [];
        const f = placed.get(m.file);
        try {
          for (const s of m.stretches) {
            const view = Buffer.from(m.bytes.buffer, m.bytes.byteOffset + s.from, s.to - s.from);
            // No file: its open failed and was reported; the pool fails every piece.
            if (s.at !== null && f !== undefined) {
              writeAll(f.fd, view, s.at);
              f.unflushed += view.byteLength;
            }
            if (m.crc) crcs.push(crc32c(view) >>> 0);
          }
          if (f && f.unflushed >= FLUSH_EVERY && !f.flushing) flush(m.file, f);
        } catch (err) {
          report(m.file, m.path, err);
        }
        ack(m.bytes.byteLength, crcs);
        return;
      }
    }
  });
}

/**
 * The XXH64 (u64 big-endian) of every `blockSize` bytes of the file's range [from, to)
 * (block-aligned), the last block possibly shorter: what a backup's block index records of
 * each block to compare it with (../util/block-hash.ts). Reads fill `buf` whole (a multiple of the block size) so no
 * block is split between reads.
 *
 * A delta reads the whole data directory through here, some 130,000 blocks a GiB: each hash
 * goes into a native-endian u64 slot as it comes (one conversion of the BigInt), the whole
 * list turned big-endian once at the end, and the blocks are hashed through views of `buf`
 * made once, not one new view a block.
 */
function blockHashes(fd: number, buf: Buffer, blockSize: number, [from, to]: [number, number]): { size: number; blocks: Uint8Array } {
  const usable = buf.length - (buf.length % blockSize);
  const views = blockViews(buf, blockSize);
  // Not Buffer.alloc: a small one may be a slice of the shared pool, and this buffer is transferred.
  let slots = new BigUint64Array(Math.ceil(Math.max(0, Math.min(to, fs.fstatSync(fd).size) - from) / blockSize));
  let size = 0;
  let block = 0;
  for (;;) {
    const want = Math.min(usable, to - from - size);
    let have = 0;
    for (let n; have < want && (n = fs.readSync(fd, buf, have, want - have, from + size + have)) > 0; ) have += n;
    if (have === 0) break;
    for (let at = 0, v = 0; at < have; at += blockSize, v++, block++) {
      // The file grew while it was read: room for more.
      if (block >= slots.length) {
        const more = new BigUint64Array(2 * slots.length + 1);
        more.set(slots);
        slots = more;
      }
      slots[block] = xxh64(at + blockSize <= have ? views[v] : buf.subarray(at, have));
    }
    size += have;
    if (have < want) break;
  }
  const blocks = Buffer.from(slots.buffer, 0, 8 * block);
  if (os.endianness() === 'LE') blocks.swap64();
  return { size, blocks };
}

/** Views of each whole block of `buf`, made once per buffer and block size. */
let views: { of: Buffer; blockSize: number; list: Buffer[] } | null = null;
function blockViews(buf: Buffer, blockSize: number): Buffer[] {
  if (views?.of !== buf || views.blockSize !== blockSize) {
    const list: Buffer[] = [];
    for (let at = 0; at + blockSize <= buf.length; at += blockSize) list.push(buf.subarray(at, at + blockSize));
    views = { of: buf, blockSize, list };
  }
  return views.list;
}

/**
 * Opens a file to read it without updating its access time where the OS allows (the file's
 * owner, or root): a read that changes atime dirties the inode, and the fsync that follows
 * (a kept file is made durable) then commits a journal transaction for every file checked.
 */
function openNoAtime(file: string): number {
  const noAtime = fs.constants.O_NOATIME;
  if (noAtime !== undefined) {
    try {
      return fs.openSync(file, fs.constants.O_RDONLY | noAtime);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    }
  }
  return fs.openSync(file, 'r');
}

/** patchPart's decoded frames (a part's at most: pieces returned are copies). */
let decodeBuffer = Buffer.alloc(0);
let decodeBusy = false;

/**
 * Decodes the frames a part's blocks lie in, checks each block against its hashes, and writes
 * it; returns the pieces of blocks that span parts (copies), for the pool to assemble.
 */
async function patchPart(m: Extract<ToWorker, { op: 'patchPart' }>): Promise<Array<{ key: string; bytes: Uint8Array }>> {
  const stored = Buffer.from(m.stored.buffer, m.stored.byteOffset, m.stored.byteLength);
  const keys = { ...m.keys, dataKey: m.keys.dataKey ? Buffer.from(m.keys.dataKey) : null };
  // One buffer for the part's decoded frames, kept for the next part: memory fresh for every
  // part costs a page fault a page (dear in a VM), more than decoding into it.
  // Decoding may await (codecs other than zstd), and another part may start meanwhile: it
  // then decodes into a buffer of its own.
  const need = m.frames.reduce((sum, f) => sum + f.plainLength, 0);
  const reuse = !decodeBusy;
  if (reuse && decodeBuffer.length < need) decodeBuffer = Buffer.allocUnsafe(need);
  const out = reuse ? decodeBuffer : Buffer.allocUnsafe(need);
  decodeBusy ||= reuse;
  try {
    return await decodeAndWrite(m, stored, keys, out);
  } finally {
    if (reuse) decodeBusy = false;
  }
}

async function decodeAndWrite(m: Extract<ToWorker, { op: 'patchPart' }>, stored: Buffer, keys: FrameKeys, out: Buffer): Promise<Array<{ key: string; bytes: Uint8Array }>> {
  const decoded: PickedFrame[] = [];
  let at = 0;
  for (const ref of m.frames) {
    const into = out.subarray(at, at + ref.plainLength);
    decoded.push({ at: ref.plainAt, bytes: decodeFrameNow(stored, ref, keys, into) ?? (await decodeFrame(stored, ref, keys, into)) });
    at += ref.plainLength;
  }
  const pieces: Array<{ key: string; bytes: Uint8Array }> = [];
  let fd: number | null = null;
  let open = '';
  try {
    for (const w of m.writes) {
      const bytes = plainSlice(decoded, w.start, w.end, m.keys.label);
      if (!w.hashes) {
        pieces.push({ key: w.piece!, bytes: new Uint8Array(bytes) });
        continue;
      }
      if (crc32c(bytes) >>> 0 !== w.hashes[0] || BigInt.asUintN(64, xxh64(bytes)) !== w.hashes[1]) {
        throw Object.assign(new Error(`the block at ${w.position} of ${w.path}, as ${m.keys.label} holds it, does not match the backup's block index`), { code: 'ARCHIVE_CORRUPT', path: w.path });
      }
      if (fd === null || open !== w.path) {
        if (fd !== null) fs.closeSync(fd);
        fd = null;
        fd = fs.openSync(w.path, 'r+');
        open = w.path;
      }
      const into = fd;
      for (let at = 0; at < bytes.length; ) at += fs.writeSync(into, bytes, at, bytes.length - at, w.position + at);
    }
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
  return pieces;
}
