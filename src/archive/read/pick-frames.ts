/**
 * Some frames of a stored object, decoded, the others passed over: how a delta restore takes
 * the few blocks it needs out of a backup part without decompressing the rest.
 *
 * The object is in memory whole (a backup part: 4 MiB of plaintext at most, stored smaller).
 * The walk checks what it can without decoding every frame: the envelope header (its CRC),
 * every frame header against the room before the trailer, the last frame's final bit where
 * the trailer begins, the trailer's frame count and object length, and that the frames'
 * plaintext adds up to the header's size. Each frame it decodes is decrypted (authenticated:
 * AES-256-GCM binds it to its index, its final flag and the whole header, binding included)
 * and decompressed to exactly its header's length.
 *
 * What it does not check: the SHA-256 of the stored bytes and of the plaintext (both need
 * every byte). The caller proves what it uses another way (a delta restore checks each block
 * against the hash its backup's block index records) and uses nothing else.
 */
import { WalvaultError } from '../../errors';
import { CODEC_IDS, codecById, type Codec } from '../codecs';
import { decryptFrame, unwrapDataKey, type PrivateKey } from '../encryption';
import { readEnvelopeHeader, type EnvelopeHeader } from '../envelope';
import { FRAME_HEADER_LENGTH, FRAME_PLAINTEXT_MAX, readFrameHeader, readTrailer, TRAILER_LENGTH } from '../framed-body';

/** Plaintext bytes of one frame (or of an unframed body), and where they start in the object's plaintext. */
export interface PickedFrame {
  at: number;
  bytes: Buffer;
}

export interface PickOptions {
  label: string;
  privateKey?: PrivateKey;
  /** Whether the frame holding plaintext [start, end) is needed. */
  want: (start: number, end: number) => boolean;
  /** The caller's check of the header (its binding); for an encrypted object it runs once a frame has authenticated it. */
  trusted: (header: EnvelopeHeader) => void | Promise<void>;
}

function corrupt(label: string, what: string): WalvaultError {
  return new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${what}`, { fix: 'the object is damaged or truncated' });
}

export async function pickFrames(stored: Buffer, o: PickOptions): Promise<{ header: EnvelopeHeader; frames: PickedFrame[] }> {
  const { label } = o;
  const header = readEnvelopeHeader(stored, label);
  const headerBytes = stored.subarray(0, header.headerLength);
  if (!header.framed) {
    const body = stored.subarray(header.headerLength);
    if (body.length !== header.bodyLength || body.length !== header.plaintextSize) throw corrupt(label, `its body is ${body.length} bytes, its header says ${header.plaintextSize}`);
    await o.trusted(header);
    return { header, frames: header.plaintextSize > 0 && o.want(0, body.length) ? [{ at: 0, bytes: body }] : [] };
  }
  if (stored.length < header.headerLength + TRAILER_LENGTH) throw corrupt(label, 'it is shorter than its header and a trailer');
  const end = stored.length - TRAILER_LENGTH;
  const trailer = readTrailer(stored.subarray(end));
  if (typeof trailer === 'string') throw corrupt(label, trailer);
  if (trailer.objectLength !== stored.length) throw corrupt(label, `its trailer says ${trailer.objectLength} bytes, the object has ${stored.length}`);
  const encrypted = header.encryption !== 'none';
  const dataKey = encrypted ? unwrapDataKey(header.extension.enc, o.privateKey, label) : null;
  const codec = codecById(CODEC_IDS[header.codec])!;
  if (!encrypted) await o.trusted(header);
  let authenticated = !encrypted;
  const frames: PickedFrame[] = [];
  let at = header.headerLength;
  let plainAt = 0;
  let index = 0;
  for (;;) {
    if (at + FRAME_HEADER_LENGTH > end) throw corrupt(label, `frame ${index} runs into the trailer (no final frame)`);
    const frameHeader = stored.subarray(at, at + FRAME_HEADER_LENGTH);
    const f = readFrameHeader(frameHeader);
    const payloadEnd = at + FRAME_HEADER_LENGTH + f.payloadLength;
    if (f.plainLength > FRAME_PLAINTEXT_MAX || payloadEnd > end) throw corrupt(label, `frame ${index} claims ${f.payloadLength} payload bytes for ${f.plainLength} of plaintext, past the room before the trailer`);
    // An encrypted object's header is trusted only once a frame authenticated it: the first
    // one is decrypted whether it is needed or not.
    const wanted = o.want(plainAt, plainAt + f.plainLength);
    if (wanted || !authenticated) {
      let payload = stored.subarray(at + FRAME_HEADER_LENGTH, payloadEnd);
      if (dataKey) payload = decryptFrame(dataKey, index, f.final, [headerBytes, frameHeader], payload, label);
      if (!authenticated) {
        authenticated = true;
        await o.trusted(header);
      }
      if (wanted) frames.push({ at: plainAt, bytes: await decompressed(codec, payload, f.plainLength, index, label) });
    }
    plainAt += f.plainLength;
    at = payloadEnd;
    index++;
    if (f.final) break;
  }
  if (at !== end) throw corrupt(label, `its final frame ends ${end - at} bytes before the trailer`);
  if (trailer.frames !== index) throw corrupt(label, `its trailer counts ${trailer.frames} frames, the object has ${index}`);
  if (plainAt !== header.plaintextSize) throw corrupt(label, `its frames hold ${plainAt} bytes of plaintext, its header says ${header.plaintextSize}`);
  return { header, frames };
}

async function decompressed(codec: Codec, payload: Buffer, plainLength: number, index: number, label: string): Promise<Buffer> {
  let plain: Buffer;
  try {
    plain = await codec.decompress(payload, plainLength);
  } catch (err) {
    throw corrupt(label, `frame ${index} does not decompress with ${codec.name} (${(err as Error).message})`);
  }
  if (plain.length !== plainLength) throw corrupt(label, `frame ${index} decompressed to ${plain.length} bytes, its header says ${plainLength}`);
  return plain;
}
