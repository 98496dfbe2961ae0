/**
 * The object envelope: every stored object is a small header followed by the body, so any
 * object can be decoded and checked with nothing but its own bytes (no side metadata, no
 * extended attributes).
 *
 * Byte layout (all integers unsigned, big-endian):
 *
 *   offset   size  field
 *   0        4     magic "WVLT" (57 56 4C 54)
 *   4        1     format version = 1
 *   5        1     codec id (see CODEC_IDS)
 *   6        1     encryption id (see ENCRYPTION_IDS)
 *   7        1     flags: bit 0 = FRAMED (body is frames, see ./framed-body.ts); others 0
 *   8        8     plaintext size in bytes
 *   16       32    SHA-256 of the plaintext
 *   48       8     body size in bytes (what follows the header); 0 when FRAMED: a framed
 *                   body's length is in its trailer, so it can be written as it is produced
 *   56       4     extension length n
 *   60       n     extension: UTF-8 JSON object; n = 0 means {}. Entries: "bind" (the key
 *                   and cluster the object belongs to, ./binding.ts), "enc" (the wrapped data
 *                   key, ./encryption.ts)
 *   60+n     4     CRC-32 (as zlib/gzip) of bytes [0, 60+n)
 *   64+n     ...   body: the plaintext as is (codec none, no encryption), or FRAMED:
 *                   plaintext -> compressed by the codec -> encrypted, frame by frame
 *
 * The header CRC catches damage to the header itself (including the extension, which the
 * plaintext checksum cannot cover); the body size catches truncation before any decoder
 * runs; the plaintext SHA-256 is the object's identity, compared across re-uploads.
 * Version 1 with no compression, no encryption and no extension has a 64-byte header and the
 * plaintext as body, so a sealed spool file is already a stored object.
 *
 * Reading an object checks all of this as its bytes arrive: ./read/decode-object.ts.
 */
import { createHash, webcrypto } from 'node:crypto';
import { crc32 } from '@node-rs/crc32';
import { WalvaultError } from '../errors';
import { CODEC_IDS, type CodecName } from './codecs';
import { ENCRYPTION_IDS, type EncryptionName } from './encryption';

export { CODEC_IDS, ENCRYPTION_IDS };
export type { CodecName, EncryptionName };

const MAGIC = Buffer.from('WVLT', 'ascii');
const ENVELOPE_VERSION = 1;
const FIXED_LENGTH = 60;
const CRC_LENGTH = 4;
/** Header length of an object with no compression, no encryption and no extension. */
export const PLAIN_HEADER_LENGTH = FIXED_LENGTH + CRC_LENGTH;
/** Far above anything we will store there; keeps a damaged length from allocating gigabytes. */
const MAX_EXTENSION_LENGTH = 64 * 1024;

const FLAG_FRAMED = 0x01;

export interface EnvelopeHeader {
  version: number;
  codec: CodecName;
  encryption: EncryptionName;
  plaintextSize: number;
  sha256: Buffer;
  /** Bytes from the start of the object to the first body byte. */
  headerLength: number;
  /** Bytes of body after the header (headerLength + bodyLength is the whole object); null when framed. */
  bodyLength: number | null;
  /** The body is frames (compressed and/or encrypted), its length in its trailer. */
  framed: boolean;
  extension: Record<string, unknown>;
}

export function sha256(buf: Buffer): Buffer {
  return createHash('sha256').update(buf).digest();
}

/**
 * SHA-256 computed on libuv's thread pool (WebCrypto jobs run there), so hashing whole
 * segments does not stall the event loop that reads the replication socket.
 */
export async function sha256Async(buf: Buffer): Promise<Buffer> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', buf));
}

function corrupt(label: string, what: string): WalvaultError {
  return new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${what}`);
}

function nameOfId(ids: Readonly<Record<string, number>>, id: number): string {
  return Object.keys(ids).find((k) => ids[k] === id) ?? `unknown id ${id}`;
}

/** Wraps a plaintext with no compression and no encryption (small metadata objects). */
export function encodeEnvelope(plaintext: Buffer, extension: Record<string, unknown> = {}): Buffer {
  const header = encodePlainHeader(plaintext.length, sha256(plaintext), extension);
  return Buffer.concat([header, plaintext], header.length + plaintext.length);
}

/**
 * The header of an object whose body is the plaintext as is (no codec, no encryption), for
 * writers that stream the body after it.
 */
export function encodePlainHeader(plaintextSize: number, digest: Buffer, extension: Record<string, unknown> = {}): Buffer {
  return encodeHeader(CODEC_IDS.none, ENCRYPTION_IDS.none, 0, plaintextSize, digest, plaintextSize, extension);
}

/** The header of a framed object (./framed-body.ts): the frames and trailer follow it. */
export function encodeFramedHeader(codec: CodecName, encryption: EncryptionName, plaintextSize: number, digest: Buffer, extension: Record<string, unknown> = {}): Buffer {
  return encodeHeader(CODEC_IDS[codec], ENCRYPTION_IDS[encryption], FLAG_FRAMED, plaintextSize, digest, 0, extension);
}

function encodeHeader(
  codecId: number,
  encryptionId: number,
  flags: number,
  plaintextSize: number,
  digest: Buffer,
  bodyLength: number,
  extension: Record<string, unknown>,
): Buffer {
  const ext = Object.keys(extension).length === 0 ? Buffer.alloc(0) : Buffer.from(JSON.stringify(extension), 'utf8');
  if (ext.length > MAX_EXTENSION_LENGTH) {
    throw new WalvaultError('INTERNAL', `envelope extension is ${ext.length} bytes, more than ${MAX_EXTENSION_LENGTH}`);
  }
  const header = Buffer.alloc(FIXED_LENGTH + ext.length + CRC_LENGTH);
  MAGIC.copy(header, 0);
  header.writeUInt8(ENVELOPE_VERSION, 4);
  header.writeUInt8(codecId, 5);
  header.writeUInt8(encryptionId, 6);
  header.writeUInt8(flags, 7);
  header.writeBigUInt64BE(BigInt(plaintextSize), 8);
  digest.copy(header, 16);
  header.writeBigUInt64BE(BigInt(bodyLength), 48);
  header.writeUInt32BE(ext.length, 56);
  ext.copy(header, FIXED_LENGTH);
  const crcAt = FIXED_LENGTH + ext.length;
  header.writeUInt32BE(crc32(header.subarray(0, crcAt)), crcAt);
  return header;
}

/**
 * Parses and checks the header only, so it works on a prefix of the object as well as on
 * the whole object; it says nothing about whether the body is intact.
 */
export function readEnvelopeHeader(buf: Buffer, label: string): EnvelopeHeader {
  return parseHeader(buf, label).header;
}

/** Bytes before the extension: a reader takes these first, then the rest of the header. */
export const HEADER_FIXED_LENGTH = FIXED_LENGTH;

/**
 * The length of the whole header, from its first HEADER_FIXED_LENGTH bytes (or what there
 * is of them: fewer throw as readEnvelopeHeader does, naming what is wrong).
 */
export function envelopeHeaderLength(fixed: Buffer, label: string): number {
  return FIXED_LENGTH + checkFixedPart(fixed, label) + CRC_LENGTH;
}

/** Magic, version and extension length: what can be checked before the rest is read. Returns the extension length. */
function checkFixedPart(buf: Buffer, label: string): number {
  if (buf.length < MAGIC.length || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    const what = buf.length < MAGIC.length ? `only ${buf.length} bytes long` : 'bad magic';
    throw corrupt(label, `not a walvault archive object (${what}; expected it to start with "WVLT")`);
  }
  if (buf.length < FIXED_LENGTH) throw corrupt(label, `truncated header (${buf.length} bytes, need at least ${FIXED_LENGTH + CRC_LENGTH})`);
  const version = buf.readUInt8(4);
  if (version !== ENVELOPE_VERSION) {
    throw corrupt(label, `envelope format version ${version}, but this walvault reads only version ${ENVELOPE_VERSION} (written by a newer walvault, or damaged)`);
  }
  const extLength = buf.readUInt32BE(56);
  if (extLength > MAX_EXTENSION_LENGTH) throw corrupt(label, `header extension length ${extLength} is implausible (damaged header)`);
  return extLength;
}

function parseHeader(buf: Buffer, label: string): { header: EnvelopeHeader } {
  const extLength = checkFixedPart(buf, label);
  const version = buf.readUInt8(4);
  const crcAt = FIXED_LENGTH + extLength;
  const headerLength = crcAt + CRC_LENGTH;
  if (buf.length < headerLength) throw corrupt(label, `truncated header (${buf.length} bytes, header needs ${headerLength})`);
  const storedCrc = buf.readUInt32BE(crcAt);
  const actualCrc = crc32(buf.subarray(0, crcAt));
  if (storedCrc !== actualCrc) {
    throw corrupt(label, `header checksum mismatch (stored crc32 ${hex32(storedCrc)}, computed ${hex32(actualCrc)}): the header is damaged`);
  }

  // From here the header is what the writer wrote; failures mean an unknown writer, not damage.
  const flags = buf.readUInt8(7);
  if ((flags & ~FLAG_FRAMED) !== 0) throw corrupt(label, `header flags 0x${flags.toString(16)} are not defined in format version ${version}`);
  const framed = (flags & FLAG_FRAMED) !== 0;
  const codecName = nameOfId(CODEC_IDS, buf.readUInt8(5));
  const encryptionName = nameOfId(ENCRYPTION_IDS, buf.readUInt8(6));
  if (!(codecName in CODEC_IDS)) throw corrupt(label, `body uses codec "${codecName}", which this walvault cannot decode`);
  if (!(encryptionName in ENCRYPTION_IDS)) throw corrupt(label, `body uses encryption "${encryptionName}", which this walvault cannot decode`);
  if (!framed && (codecName !== 'none' || encryptionName !== 'none')) throw corrupt(label, 'a compressed or encrypted body must be framed (damaged header)');
  const plaintextSize = readSize(buf, 8, label, 'plaintext size');
  const bodyLength = readSize(buf, 48, label, 'body size');
  const header: EnvelopeHeader = {
    version,
    codec: codecName as CodecName,
    encryption: encryptionName as EncryptionName,
    plaintextSize,
    sha256: Buffer.from(buf.subarray(16, 48)),
    headerLength,
    bodyLength: framed ? null : bodyLength,
    framed,
    extension: parseExtension(buf.subarray(FIXED_LENGTH, crcAt), label),
  };
  return { header };
}

function readSize(buf: Buffer, offset: number, label: string, what: string): number {
  const value = buf.readBigUInt64BE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(label, `${what} ${value} is implausible`);
  return Number(value);
}

function parseExtension(bytes: Buffer, label: string): Record<string, unknown> {
  if (bytes.length === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw corrupt(label, `header extension is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw corrupt(label, 'header extension is not a JSON object');
  }
  return value as Record<string, unknown>;
}

export function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}
