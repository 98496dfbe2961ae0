/**
 * A framed body (layout: ../framed-body.ts) off the object's stream, one frame at a time:
 *
 *   [envelope header][frame 0: 8-byte header, payload]...[frame n: final bit set][48-byte trailer]
 *
 * The trailer sits in the object's last TRAILER_LENGTH bytes, and the announced size says
 * where that is before any frame is read, so every frame is checked against the room before
 * the trailer as it comes: a frame that claims more plaintext than the header allows, a
 * payload larger than any frame's, or one running into the trailer (truncation) is refused
 * before its payload is read or used. The last frame (final bit) must end exactly where the
 * trailer begins, its plaintext must complete the header's size, and the trailer must record
 * this many frames and this object length: it is read together with the last payload and
 * handed on with the last frame, so the stages after this one can give their verdict (the
 * stored checksum, ./stored-digest.ts) before the last frame's plaintext is released. An
 * object cut at a frame boundary has no frame marked final before the trailer's place (and,
 * encrypted, cannot fake one: the flag is part of the nonce).
 *
 * Frames are views (of the stored chunks, or of one reused buffer when a frame spans
 * chunks), valid until the next frame is asked for.
 */
import { WalvaultError } from '../../errors';
import type { EnvelopeHeader } from '../envelope';
import { FRAME_HEADER_LENGTH, FRAME_PLAINTEXT_MAX, readFrameHeader, readTrailer, TRAILER_LENGTH } from '../framed-body';
import type { ByteReader } from './byte-reader';

/**
 * The largest payload a frame may claim: a damaged length must not make the reader wait for
 * (or assemble) gigabytes. Every codec's worst case for FRAME_PLAINTEXT_MAX bytes, plus the
 * GCM tag, is well below it (snappy's bound, the loosest, is 32 + n + n/6).
 */
const FRAME_PAYLOAD_MAX = 2 * FRAME_PLAINTEXT_MAX;

export interface Trailer {
  frames: number;
  objectLength: number;
  /** SHA-256 of every stored byte before the trailer. */
  sha256: Buffer;
}

export interface Frame {
  index: number;
  final: boolean;
  /** Plaintext bytes the frame holds, as its header says. */
  plainLength: number;
  /** The frame's header bytes as stored (encryption authenticates them). */
  frameHeader: Buffer;
  /** The payload as stored. */
  stored: Buffer;
  /** The payload as the stages so far have left it (decrypted, say); `stored` as read. */
  payload: Buffer;
  /** On the final frame: the object's trailer, its length and frame count checked. */
  trailer?: Trailer;
}

export async function* readFrames(reader: ByteReader, header: EnvelopeHeader, label: string): AsyncGenerator<Frame> {
  const trailerAt = reader.size - TRAILER_LENGTH;
  // A frame header is used after its payload is read, which may refill the chunk it came from.
  const frameHeader = Buffer.alloc(FRAME_HEADER_LENGTH);
  let plaintext = 0;
  for (let index = 0; ; index++) {
    const at = reader.offset;
    if (trailerAt - at < FRAME_HEADER_LENGTH) {
      throw corrupt(
        label,
        index === 0
          ? `truncated: ${reader.size} bytes leave no room for a frame and the ${TRAILER_LENGTH}-byte trailer after the ${at}-byte header`
          : `truncated: frame ${index - 1} is not marked as the last, but no room for another frame is left before where the trailer must start (byte ${trailerAt} of ${reader.size})`,
      );
    }
    (await reader.read(FRAME_HEADER_LENGTH)).copy(frameHeader);
    const { payloadLength, plainLength, final } = readFrameHeader(frameHeader);
    if (plainLength > FRAME_PLAINTEXT_MAX || plaintext + plainLength > header.plaintextSize) {
      throw corrupt(label, `frame ${index} claims ${plainLength} bytes of plaintext, more than the header allows`);
    }
    if (payloadLength > FRAME_PAYLOAD_MAX) throw corrupt(label, `frame ${index} claims a ${payloadLength}-byte payload, more than any frame's (damaged)`);
    const room = trailerAt - reader.offset;
    if (payloadLength > room) throw corrupt(label, `truncated: frame ${index} needs ${payloadLength} bytes, ${room} remain before the trailer`);
    plaintext += plainLength;
    if (!final) {
      const payload = await reader.read(payloadLength);
      yield { index, final, plainLength, frameHeader, stored: payload, payload };
      continue;
    }
    if (payloadLength !== room) {
      throw corrupt(label, `its last frame (${index}) ends at byte ${reader.offset + payloadLength}, but its trailer must start at byte ${trailerAt}: ${room - payloadLength} bytes lie between (damaged)`);
    }
    if (plaintext !== header.plaintextSize) throw corrupt(label, `size mismatch: its frames hold ${plaintext} bytes of plaintext, the header says ${header.plaintextSize}`);
    const last = await reader.read(payloadLength + TRAILER_LENGTH);
    const trailer = readTrailer(last.subarray(payloadLength));
    if (typeof trailer === 'string') throw corrupt(label, trailer);
    if (trailer.objectLength !== reader.size) throw corrupt(label, `its trailer records ${trailer.objectLength} bytes, but it has ${reader.size} (truncated or damaged)`);
    if (trailer.frames !== index + 1) throw corrupt(label, `its trailer records ${trailer.frames} frames, but it has ${index + 1}`);
    const payload = last.subarray(0, payloadLength);
    yield { index, final, plainLength, frameHeader, stored: payload, payload, trailer };
    await reader.end();
    return;
  }
}

function corrupt(label: string, what: string): WalvaultError {
  return new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${what}`);
}
