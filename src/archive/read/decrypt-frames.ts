/**
 * Decrypts each frame of an encrypted object (AES-256-GCM with the object's data key, see
 * ../encryption.ts): the nonce is the frame's index and final flag, the additional data the
 * envelope header and the frame's header, so a frame that was altered, moved, dropped,
 * replayed from another object, or marked final where it was not, fails authentication
 * (ARCHIVE_AUTH_FAILED) before any of its plaintext is passed on. Runs before the stored
 * checksum's verdict (./stored-digest.ts), so damage to an encrypted object is reported by
 * authentication, the stronger statement.
 */
import { decryptFrame } from '../encryption';
import type { Frame } from './frame-reader';

export async function* decryptFrames(frames: AsyncIterable<Frame>, dataKey: Buffer, headerBytes: Buffer, label: string): AsyncGenerator<Frame> {
  for await (const f of frames) {
    yield { ...f, payload: decryptFrame(dataKey, f.index, f.final, [headerBytes, f.frameHeader], f.stored, label) };
  }
}
