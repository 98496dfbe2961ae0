/**
 * The stored checksum of a framed object: SHA-256 of every stored byte before the trailer
 * (envelope header, then each frame's header and payload as stored), compared with what the
 * trailer records when the final frame (which carries the trailer) arrives, before that frame
 * is passed on. It catches a changed byte that would still decode to the same plaintext, and
 * it is the one check an encrypted object gets without its private key (`walvault verify`).
 */
import { WalvaultError } from '../../errors';
import type { Frame } from './frame-reader';
import type { HasherFactory } from './hashers';

export async function* checkStoredDigest(frames: AsyncIterable<Frame>, headerBytes: Buffer, newHasher: HasherFactory, label: string): AsyncGenerator<Frame> {
  const hasher = newHasher();
  try {
    await hasher.update(headerBytes);
    for await (const f of frames) {
      await hasher.update(f.frameHeader);
      await hasher.update(f.stored);
      if (f.trailer) {
        const stored = await hasher.digest();
        if (!stored.equals(f.trailer.sha256)) {
          throw new WalvaultError(
            'ARCHIVE_CORRUPT',
            `${label}: its bytes have sha256 ${stored.toString('hex')}, but its trailer records ${f.trailer.sha256.toString('hex')}: the object was altered or damaged in storage`,
          );
        }
      }
      yield f;
    }
  } finally {
    hasher.dispose();
  }
}
