/**
 * The envelope header off the front of an object's stream (layout: ../envelope.ts): its
 * fixed part first, whose extension length says how much more to take, then the rest, and
 * all of it checked (magic, version, CRC-32, flags, codec, encryption) before a body byte
 * is read. Returns the header's bytes too: a framed body's stored checksum covers them and
 * encryption authenticates them with every frame.
 */
import { envelopeHeaderLength, HEADER_FIXED_LENGTH, readEnvelopeHeader, type EnvelopeHeader } from '../envelope';
import type { ByteReader } from './byte-reader';

export async function readHeader(reader: ByteReader, label: string): Promise<{ header: EnvelopeHeader; bytes: Buffer }> {
  // An object shorter than the fixed part is refused by the parser, naming what it is.
  const fixed = Buffer.from(await reader.read(Math.min(reader.remaining, HEADER_FIXED_LENGTH)));
  const length = envelopeHeaderLength(fixed, label);
  const rest = await reader.read(Math.min(reader.remaining, length - fixed.length));
  const bytes = Buffer.concat([fixed, rest]);
  return { header: readEnvelopeHeader(bytes, label), bytes };
}
