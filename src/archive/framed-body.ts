/**
 * The framed body: how a compressed and/or encrypted object body is laid out, so it can be
 * written and read a frame at a time, without knowing its stored size in advance.
 *
 * Layout after the envelope header (integers unsigned, big-endian):
 *
 *   frame (repeated):
 *     0   4  payload length p
 *     4   4  plaintext length of this frame (at most FRAME_PLAINTEXT_MAX), bit 31 set on the
 *            last frame
 *     8   p  payload: the frame's plaintext compressed by the codec, then encrypted (GCM
 *            ciphertext followed by its 16-byte tag) when the object is encrypted
 *   trailer (48 bytes):
 *     0   4  magic "WVND" (57 56 4E 44)
 *     4   4  number of frames
 *     8   8  length of the whole object, header and trailer included
 *     16  32 SHA-256 of every byte before the trailer (header and frames)
 *
 * The last-frame bit makes truncation at a frame boundary detectable (and, when encrypted,
 * authenticated: the flag is part of the nonce). The trailer's checksum catches a changed byte
 * that would still decode to the same plaintext (a compressor's back-reference into a run of
 * zeros, say), so any alteration of a stored object is found; its length lets a reader check
 * an object's size from its last bytes without reading the rest.
 *
 * Reading frames as they arrive, with every check above: ./read/frame-reader.ts.
 */
import { createHash } from 'node:crypto';
import { WalvaultError } from '../errors';
import type { Codec, CompressedFrame } from './codecs';
import { encryptFramePieces, GCM_TAG_LENGTH } from './encryption';

export const FRAME_PLAINTEXT_MAX = 1 << 20;
export const FRAME_HEADER_LENGTH = 8;
export const TRAILER_LENGTH = 48;
const FINAL_BIT = 0x80000000;
const TRAILER_MAGIC = Buffer.from('WVND', 'ascii');

export interface FrameStages {
  codec: Codec;
  /** The object's data key when it is encrypted. */
  dataKey: Buffer | null;
  /**
   * How many frames may compress at once. Above 1 only for sources whose windows stay valid
   * after the next is read (an in-memory buffer); a reused window buffer needs 1.
   */
  compressAhead?: number;
}

/**
 * One frame as the pieces that make it, in order: the frame header, then the payload as the
 * codec and the cipher produced it (compressed bytes, or ciphertext and tag). The pieces are
 * handed on as they are, never joined into one buffer.
 */
export type FramePieces = readonly Buffer[];

/**
 * Frames of the plaintext in `windows` (exactly `length` bytes, each window at most
 * FRAME_PLAINTEXT_MAX), then the trailer, alone, as the last element. `header` is the envelope
 * header that precedes them: encryption authenticates it, and the trailer counts it.
 *
 * Each element is valid only until the next is requested (a compressed frame's buffer is
 * pooled and then reused): a consumer that keeps bytes longer copies them. The stored bytes
 * are hashed once, here, for the trailer; the plaintext is not hashed here at all.
 */
export async function* encodeFrames(windows: AsyncIterable<Buffer>, length: number, header: Buffer, stages: FrameStages): AsyncIterable<FramePieces> {
  let at = 0;
  let index = 0;
  let objectLength = header.length;
  const hash = createHash('sha256').update(header);
  /** The compressed frame last handed on: its buffer is released when the next is asked for. */
  let handedOn: CompressedFrame | null = null;
  const frame = async (plainLength: number, final: boolean, compressing: Promise<CompressedFrame>): Promise<FramePieces> => {
    const compressed = await compressing;
    const frameHeader = Buffer.alloc(FRAME_HEADER_LENGTH);
    const payloadLength = compressed.bytes.length + (stages.dataKey ? GCM_TAG_LENGTH : 0);
    frameHeader.writeUInt32BE(payloadLength, 0);
    frameHeader.writeUInt32BE((plainLength | (final ? FINAL_BIT : 0)) >>> 0, 4);
    let pieces: Buffer[];
    if (stages.dataKey) {
      try {
        pieces = [frameHeader, ...encryptFramePieces(stages.dataKey, index, final, [header, frameHeader], compressed.bytes)];
      } finally {
        compressed.release();
      }
    } else {
      pieces = [frameHeader, compressed.bytes];
      handedOn = compressed;
    }
    index++;
    for (const p of pieces) {
      hash.update(p);
      objectLength += p.length;
    }
    return pieces;
  };
  // Compression may run ahead (workers in parallel); encryption and hashing stay in frame
  // order, since the nonce and the trailer depend on it.
  const ahead = Math.max(1, stages.compressAhead ?? 1);
  const queue: Array<{ plainLength: number; final: boolean; compressed: Promise<CompressedFrame> }> = [];
  const nextFrame = async (): Promise<FramePieces> => {
    const next = queue.shift()!;
    return frame(next.plainLength, next.final, next.compressed);
  };
  const release = () => {
    (handedOn as CompressedFrame | null)?.release();
    handedOn = null;
  };
  // Small frames (a backup part's) that may compress ahead go to the codec a frame's worth at
  // a time (compressBatch: one message for all of them); up to two such batches are in flight.
  const batching = ahead > 1 && stages.codec.compressBatch !== undefined;
  let batch: Array<{ w: Buffer; final: boolean }> = [];
  let batchBytes = 0;
  let lastBatch = 0;
  const flush = () => {
    if (batch.length === 0) return;
    const windowsOf = batch.map((b) => b.w);
    const outs = (batch.length > 1 ? stages.codec.compressBatch?.(windowsOf) : null) ?? windowsOf.map((w) => stages.codec.compressFrame(w));
    batch.forEach((b, i) => {
      // A rejection is awaited in order below; until then it must not count as unhandled.
      outs[i].catch(() => undefined);
      queue.push({ plainLength: b.w.length, final: b.final, compressed: outs[i] });
    });
    lastBatch = batch.length;
    batch = [];
    batchBytes = 0;
  };
  try {
    for await (const w of windows) {
      if (w.length === 0) continue;
      if (w.length > FRAME_PLAINTEXT_MAX) throw new WalvaultError('INTERNAL', `a ${w.length}-byte window is larger than a frame`);
      if (at + w.length > length) throw new WalvaultError('INTERNAL', `the body source gave more than its ${length} bytes`);
      at += w.length;
      batch.push({ w, final: at === length });
      batchBytes += w.length;
      if (!batching || batchBytes >= FRAME_PLAINTEXT_MAX || at === length) flush();
      while (queue.length > Math.max(batching ? lastBatch : 0, ahead - 1)) {
        yield await nextFrame();
        release();
      }
    }
    flush();
    while (queue.length > 0) {
      yield await nextFrame();
      release();
    }
    if (at !== length) throw new WalvaultError('INTERNAL', `the body source ended at ${at} bytes, expected ${length}`);
    if (length === 0) {
      yield await frame(0, true, stages.codec.compressFrame(Buffer.alloc(0)));
      release();
    }
    const trailer = Buffer.alloc(TRAILER_LENGTH);
    TRAILER_MAGIC.copy(trailer, 0);
    trailer.writeUInt32BE(index, 4);
    trailer.writeBigUInt64BE(BigInt(objectLength + TRAILER_LENGTH), 8);
    hash.digest().copy(trailer, 16);
    yield [trailer];
  } finally {
    // Stopped early (a failed put) or failed: every pooled buffer goes back once its worker is done.
    release();
    for (const q of queue.splice(0)) q.compressed.then((c) => c.release(), () => undefined);
  }
}

/** What the trailer records, or why `tail` (the object's last TRAILER_LENGTH bytes) is not a trailer. */
export function readTrailer(tail: Buffer): { frames: number; objectLength: number; sha256: Buffer } | string {
  if (tail.length !== TRAILER_LENGTH || !tail.subarray(0, 4).equals(TRAILER_MAGIC)) return 'it does not end with a walvault trailer (truncated or damaged)';
  return { frames: tail.readUInt32BE(4), objectLength: Number(tail.readBigUInt64BE(8)), sha256: Buffer.from(tail.subarray(16, 48)) };
}

/** What a frame's FRAME_HEADER_LENGTH header bytes say (see the layout above). Reading frames: ./read/frame-reader.ts. */
export function readFrameHeader(bytes: Buffer, at = 0): { payloadLength: number; plainLength: number; final: boolean } {
  const field = bytes.readUInt32BE(at + 4);
  return { payloadLength: bytes.readUInt32BE(at), plainLength: (field & ~FINAL_BIT) >>> 0, final: (field & FINAL_BIT) !== 0 };
}
