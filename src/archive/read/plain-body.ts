/**
 * The body of an unframed object (no codec, no encryption: metadata, and WAL as the spool
 * seals it): the plaintext itself, exactly the header's body size, which must also be the
 * plaintext size. Both are checked against the object's announced size before a body byte
 * passes, so a truncated or extended object is named as such; the plaintext's checksum is
 * the next stage's (./plaintext-digest.ts).
 *
 * Passes the body on as the store delivers it (views, valid until the next is asked for).
 */
import { WalvaultError } from '../../errors';
import type { EnvelopeHeader } from '../envelope';
import type { ByteReader } from './byte-reader';

export async function* plainBody(reader: ByteReader, header: EnvelopeHeader, label: string): AsyncGenerator<Buffer> {
  const bodyLength = header.bodyLength ?? 0;
  const expected = header.headerLength + bodyLength;
  if (reader.size < expected) throw corrupt(label, `truncated: ${reader.size} bytes, the header promises ${expected}`);
  if (reader.size > expected) throw corrupt(label, `${reader.size - expected} unexpected bytes after the body (${expected} expected)`);
  if (bodyLength !== header.plaintextSize) throw corrupt(label, `size mismatch: the body is ${bodyLength} bytes, the header says ${header.plaintextSize}`);
  while (reader.remaining > 0) yield await reader.readSome(reader.remaining);
  await reader.end();
}

function corrupt(label: string, what: string): WalvaultError {
  return new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${what}`);
}
