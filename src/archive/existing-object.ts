/**
 * What a key holds before an immutable write, judged from the envelope header (it carries
 * the plaintext's size and checksum) and the object's length alone.
 */
import { isWalvaultError, WalvaultError } from '../errors';
import type { Storage } from '../storage/storage';
import { readEnvelopeHeader } from './envelope';
import { readTrailer, TRAILER_LENGTH } from './framed-body';

/** Enough to hold any envelope header (its extension is capped at 64 KiB). */
const MAX_HEADER_READ = 64 * 1024 + 128;

/**
 * What `key` holds now, reading only the header (it carries the checksum) and the length
 * (against the header or the trailer): 'absent'; 'same' (this plaintext size and
 * checksum); 'damaged' (not a whole walvault object: a write torn by a store that is not
 * atomic, such as s3rver killed mid-PUT; we never leave one ourselves, since every write is
 * verified and removed when it fails, so it holds nothing anyone relies on and is
 * replaced); or a refusal when it is a whole object with other content.
 */
export async function existingObject(storage: Storage, key: string, label: string, plaintextLength: number, ours: Buffer): Promise<'absent' | 'same' | 'damaged'> {
  const existing = await storage.head(key);
  if (existing === null) return 'absent';
  // Never a range past what the store says it holds: s3rver answers a range of an empty
  // object (a PUT it tore at its start) with a length of 1 and no body, so that read would
  // fail on every attempt and the object would never be replaced.
  const head = existing.size === 0 ? Buffer.alloc(0) : await storage.getRange(key, 0, Math.min(MAX_HEADER_READ, existing.size));
  let theirs: ReturnType<typeof readEnvelopeHeader>;
  try {
    theirs = readEnvelopeHeader(head ?? Buffer.alloc(0), label);
  } catch (err) {
    if (isWalvaultError(err, 'ARCHIVE_CORRUPT')) return 'damaged';
    throw err;
  }
  const problem = theirs.framed ? await framedLengthProblem(storage, key, existing.size) : existing.size === theirs.headerLength + theirs.bodyLength! ? null : `its header says ${theirs.headerLength + theirs.bodyLength!}`;
  if (problem !== null) return 'damaged';
  if (theirs.plaintextSize === plaintextLength && theirs.sha256.equals(ours)) return 'same';
  throw new WalvaultError(
    'ARCHIVE_CONFLICT',
    `${label} already exists with different content (stored: ${theirs.plaintextSize} bytes, sha256 ${theirs.sha256.toString('hex')}; ` +
      `new: ${plaintextLength} bytes, sha256 ${ours.toString('hex')})`, { fix: `refusing to overwrite an archived object` },
  );
}

async function framedLengthProblem(storage: Storage, key: string, size: number): Promise<string | null> {
  const tail = size >= TRAILER_LENGTH ? await storage.getRange(key, size - TRAILER_LENGTH, TRAILER_LENGTH) : null;
  const trailer = readTrailer(tail ?? Buffer.alloc(0));
  if (typeof trailer === 'string') return trailer;
  return trailer.objectLength === size ? null : `its trailer says ${trailer.objectLength}`;
}
