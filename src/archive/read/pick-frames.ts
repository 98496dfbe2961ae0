/**
 * Some frames of a stored object, decoded, the others passed over: how a delta restore takes
 * the few blocks it needs out of a backup part without decompressing the rest.
 *
 * The object is in memory whole (a backup part: 4 MiB of plaintext at most, stored smaller).
 * walkFrames checks what it can without decoding a frame: the envelope header (its CRC),
 * every frame header against the room before the trailer, the last frame's final bit where
 * the trailer begins, the trailer's frame count and object length, and that the frames'
 * plaintext adds up to the header's size. decodeFrame decrypts a frame (authenticated:
 * AES-256-GCM binds it to its index, its final flag and the whole header, binding included)
 * and decompresses it to exactly its header's length. The walk runs where the object is read;
 * the decoding may run on another thread (the restore's writer threads).
 *
 * What is not checked: the SHA-256 of the stored bytes and of the plaintext (both need every
 * byte). The caller proves what it uses another way (a delta restore checks each block
 * against the hash its backup's block index records) and uses nothing else.
 */
import { WalvaultError } from '../../errors';
import { CODEC_IDS, codecById, type CodecName } from '../codecs';
import { decryptFrame, unwrapDataKey, type PrivateKey } from '../encryption';
import { readEnvelopeHeader, type EnvelopeHeader } from '../envelope';
import { FRAME_HEADER_LENGTH, FRAME_PLAINTEXT_MAX, readFrameHeader, readTrailer, TRAILER_LENGTH } from '../framed-body';

/** Plaintext bytes of one frame (or of an unframed body), and where they start in the object's plaintext. */
export interface PickedFrame {
  at: number;
  bytes: Buffer;
}

/** Where one frame lies in the stored object (an unframed body: one frame, `index` -1). */
export interface FrameRef {
  index: number;
  final: boolean;
  /** Offset of its 8-byte header in the stored bytes. */
  headerAt: number;
  payloadEnd: number;
  plainAt: number;
  plainLength: number;
}

/** What decoding a frame needs besides the stored bytes. */
export interface FrameKeys {
  codec: CodecName;
  /** The object's data key when it is encrypted. */
  dataKey: Buffer | null;
  /** Bytes of the envelope header: the additional data of every frame. */
  headerLength: number;
  label: string;
}

function corrupt(label: string, what: string): WalvaultError {
  return new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${what}`, { fix: 'the object is damaged or truncated' });
}

/** The object's header and frames, their layout checked (nothing decoded). */
export function walkFrames(stored: Buffer, label: string): { header: EnvelopeHeader; frames: FrameRef[] } {
  const header = readEnvelopeHeader(stored, label);
  if (!header.framed) {
    const length = stored.length - header.headerLength;
    if (length !== header.bodyLength || length !== header.plaintextSize) throw corrupt(label, `its body is ${length} bytes, its header says ${header.plaintextSize}`);
    return { header, frames: [{ index: -1, final: true, headerAt: header.headerLength, payloadEnd: stored.length, plainAt: 0, plainLength: length }] };
  }
  if (stored.length < header.headerLength + TRAILER_LENGTH) throw corrupt(label, 'it is shorter than its header and a trailer');
  const end = stored.length - TRAILER_LENGTH;
  const trailer = readTrailer(stored.subarray(end));
  if (typeof trailer === 'string') throw corrupt(label, trailer);
  if (trailer.objectLength !== stored.length) throw corrupt(label, `its trailer says ${trailer.objectLength} bytes, the object has ${stored.length}`);
  const frames: FrameRef[] = [];
  let at = header.headerLength;
  let plainAt = 0;
  for (let index = 0; ; index++) {
    if (at + FRAME_HEADER_LENGTH > end) throw corrupt(label, `frame ${index} runs into the trailer (no final frame)`);
    const f = readFrameHeader(stored, at);
    const payloadEnd = at + FRAME_HEADER_LENGTH + f.payloadLength;
    if (f.plainLength > FRAME_PLAINTEXT_MAX || payloadEnd > end) throw corrupt(label, `frame ${index} claims ${f.payloadLength} payload bytes for ${f.plainLength} of plaintext, past the room before the trailer`);
    frames.push({ index, final: f.final, headerAt: at, payloadEnd, plainAt, plainLength: f.plainLength });
    plainAt += f.plainLength;
    at = payloadEnd;
    if (f.final) break;
  }
  if (at !== end) throw corrupt(label, `its final frame ends ${end - at} bytes before the trailer`);
  if (trailer.frames !== frames.length) throw corrupt(label, `its trailer counts ${trailer.frames} frames, the object has ${frames.length}`);
  if (plainAt !== header.plaintextSize) throw corrupt(label, `its frames hold ${plainAt} bytes of plaintext, its header says ${header.plaintextSize}`);
  return { header, frames };
}

/** One frame's plaintext: decrypted when the object is encrypted, decompressed (zstd: into `into`, the frame's length, when given). */
export async function decodeFrame(stored: Buffer, ref: FrameRef, k: FrameKeys, into?: Buffer): Promise<Buffer> {
  const now = decodeFrameNow(stored, ref, k, into);
  if (now) return now;
  const payload = framePayload(stored, ref, k);
  let plain: Buffer;
  try {
    plain = await codecById(CODEC_IDS[k.codec])!.decompress(payload, ref.plainLength);
  } catch (err) {
    throw undecodable(ref, k, err);
  }
  return ofItsLength(plain, ref, k);
}

/**
 * decodeFrame at once, when the codec decodes on this thread without waiting (zstd, and an
 * unframed body): a delta restore decodes thousands of frames, and a promise each costs more
 * than the bookkeeping. Null for the other codecs: decodeFrame then.
 */
export function decodeFrameNow(stored: Buffer, ref: FrameRef, k: FrameKeys, into?: Buffer): Buffer | null {
  if (ref.index < 0) return stored.subarray(ref.headerAt, ref.payloadEnd);
  if (k.codec !== 'zstd') return null;
  const payload = framePayload(stored, ref, k);
  let plain: Buffer;
  try {
    plain = zstdFrame(payload, into ?? Buffer.allocUnsafe(ref.plainLength));
  } catch (err) {
    throw undecodable(ref, k, err);
  }
  return ofItsLength(plain, ref, k);
}

/** A frame's payload, decrypted (and authenticated) when the object is encrypted. */
function framePayload(stored: Buffer, ref: FrameRef, k: FrameKeys): Buffer {
  const payload = stored.subarray(ref.headerAt + FRAME_HEADER_LENGTH, ref.payloadEnd);
  return k.dataKey ? decryptFrame(k.dataKey, ref.index, ref.final, [stored.subarray(0, k.headerLength), stored.subarray(ref.headerAt, ref.headerAt + FRAME_HEADER_LENGTH)], payload, k.label) : payload;
}

function undecodable(ref: FrameRef, k: FrameKeys, err: unknown): WalvaultError {
  return corrupt(k.label, `frame ${ref.index} does not decompress with ${k.codec} (${(err as Error).message})`);
}

function ofItsLength(plain: Buffer, ref: FrameRef, k: FrameKeys): Buffer {
  if (plain.length !== ref.plainLength) throw corrupt(k.label, `frame ${ref.index} decompressed to ${plain.length} bytes, its header says ${ref.plainLength}`);
  return plain;
}

let dctx: import('zstd-napi/binding').DCtx | null = null;

/**
 * One zstd frame into a buffer of its promised length, through this thread's one context: a
 * delta restore decodes thousands of 32 KiB frames, and the library's decompress() sets
 * parameters and reads the frame's header again on each. A frame whose content is longer
 * fails ("destination buffer too small").
 */
function zstdFrame(payload: Buffer, out: Buffer): Buffer {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  dctx ??= new (require('zstd-napi/binding') as typeof import('zstd-napi/binding')).DCtx();
  return out.subarray(0, dctx.decompress(out, payload));
}

/** The data key of an object whose header `walkFrames` read (null when it is not encrypted). */
export function frameKeys(header: EnvelopeHeader, privateKey: PrivateKey | undefined, label: string): FrameKeys {
  return { codec: header.codec, dataKey: header.encryption !== 'none' ? unwrapDataKey(header.extension.enc, privateKey, label) : null, headerLength: header.headerLength, label };
}

/** Bytes [start, end) of the plaintext from decoded frames (in order): a view when one frame holds them. */
export function plainSlice(frames: readonly PickedFrame[], start: number, end: number, label: string): Buffer {
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
