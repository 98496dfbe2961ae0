/**
 * Reading an archive object: its stored chunks through a chain of stages, one job each,
 * into verified plaintext, frame by frame as the bytes arrive, so memory stays at a chunk
 * and a few frames whatever the object's size:
 *
 *   unframed:  bytes -> header -> plain body ---------------------------------> plaintext check
 *   framed:    bytes -> header -> frames -> [decrypt] -> stored digest -> decompress -> plaintext check
 *   encrypted, no private key (verify): bytes -> header -> frames -> stored digest
 *
 *   ./byte-reader.ts        exact pieces off the chunks; the announced size
 *   ./read-header.ts        the envelope header: CRC, version, codec, encryption
 *   ./plain-body.ts         an unframed body: its size against the header and the object
 *   ./frame-reader.ts       frames and trailer: layout, sizes, truncation, frame count
 *   ./decrypt-frames.ts     AES-256-GCM per frame (index and final flag in the nonce)
 *   ./stored-digest.ts      SHA-256 of the stored bytes against the trailer
 *   ./decompress-frames.ts  the codec, per frame
 *   ./plaintext-digest.ts   size and SHA-256 of the plaintext against the header
 *
 * What the caller gets holds exactly the promises a whole-object decode made: the chunk that
 * completes the plaintext is released only after the trailer, the stored and the plaintext
 * checksums passed, and the iteration ends without an error only when the object also ended
 * where its layout says. Consumers commit (rename into place, call good) only after that.
 *
 * The header is trusted (and `trusted`, the caller's check of what the object says it is,
 * runs) before the caller sees it: at once for an unencrypted object, whose header has only
 * its CRC; after the first frame authenticated for an encrypted one, whose header is the
 * additional data of every frame (so that first frame is read ahead).
 */
import { WalvaultError } from '../../errors';
import { CODEC_IDS, codecById } from '../codecs';
import { unwrapDataKey, type PrivateKey } from '../encryption';
import type { EnvelopeHeader } from '../envelope';
import { ByteReader } from './byte-reader';
import { decompressFrames } from './decompress-frames';
import { decryptFrames } from './decrypt-frames';
import { readFrames, type Frame } from './frame-reader';
import { inThreadSha256, type HasherFactory } from './hashers';
import { plainBody } from './plain-body';
import { checkPlaintext } from './plaintext-digest';
import { readHeader } from './read-header';
import { checkStoredDigest } from './stored-digest';

export interface DecodeOptions {
  /** Names the object in messages. */
  label: string;
  privateKey?: PrivateKey;
  /**
   * Without `privateKey`, check an encrypted object by its stored bytes only (header, frame
   * layout, trailer and its SHA-256): `chunks` then yields nothing. Otherwise such an object
   * is refused (ARCHIVE_KEY_REQUIRED).
   */
  storedOnlyWithoutKey?: boolean;
  /** Where SHA-256 runs (./hashers.ts); on this thread by default. */
  hasher?: HasherFactory;
  /** The caller's check of the header once it is trusted (an object's binding); throws to refuse. */
  trusted?: (header: EnvelopeHeader) => void | Promise<void>;
}

export interface DecodedObject {
  readonly header: EnvelopeHeader;
  /** Bytes the object takes in storage. */
  readonly storedSize: number;
  /** False when only the stored bytes are checked (encrypted, no private key). */
  readonly plaintextChecked: boolean;
  /**
   * The plaintext in order, each chunk valid until the next is asked for; iterate it once.
   * Ends without an error only when every check passed.
   */
  readonly chunks: AsyncIterable<Buffer>;
  /** Whether `chunks` ran to its end, every check passed. */
  readonly verified: boolean;
  /** Releases the source (a request, a file), however far it was read; safe to call again. */
  close(): Promise<void>;
}

/** Decodes the object whose stored bytes `source` yields (`size` of them, as its store announced). */
export async function decodeObject(source: AsyncIterable<Buffer>, size: number, o: DecodeOptions): Promise<DecodedObject> {
  const { label } = o;
  const reader = new ByteReader(source, size, label);
  try {
    const { header, bytes } = await readHeader(reader, label);
    const hasher = o.hasher ?? inThreadSha256;
    const encrypted = header.encryption !== 'none';
    const storedOnly = encrypted && !o.privateKey && o.storedOnlyWithoutKey === true;
    let plaintext: AsyncIterable<Buffer>;
    if (!header.framed) {
      plaintext = checkPlaintext(plainBody(reader, header, label), header, hasher, label);
    } else if (storedOnly) {
      plaintext = drained(checkStoredDigest(readFrames(reader, header, label), bytes, hasher, label));
    } else {
      // Before any frame is read: a missing or wrong key is named as such, not as damage.
      const dataKey = encrypted ? unwrapDataKey(header.extension.enc, o.privateKey, label) : null;
      const codec = codecById(CODEC_IDS[header.codec])!;
      let frames: AsyncIterable<Frame> = readFrames(reader, header, label);
      if (dataKey) frames = decryptFrames(frames, dataKey, bytes, label);
      frames = checkStoredDigest(frames, bytes, hasher, label);
      plaintext = checkPlaintext(decompressFrames(frames, codec, label), header, hasher, label);
    }
    const state = { verified: false };
    const it = plaintext[Symbol.asyncIterator]();
    let first: IteratorResult<Buffer> | null = null;
    if (encrypted && !storedOnly) {
      // The first frame authenticates the header, binding included.
      first = await it.next();
    }
    await o.trusted?.(header);
    return {
      header,
      storedSize: size,
      plaintextChecked: !storedOnly,
      chunks: verifiedChunks(it, first, state),
      get verified() {
        return state.verified;
      },
      close: async () => {
        await it.return?.();
        await reader.close();
      },
    };
  } catch (err) {
    await reader.close().catch(() => undefined);
    throw err;
  }
}

async function* verifiedChunks(it: AsyncIterator<Buffer>, first: IteratorResult<Buffer> | null, state: { verified: boolean }): AsyncGenerator<Buffer> {
  for (let next = first ?? (await it.next()); !next.done; next = await it.next()) yield next.value;
  state.verified = true;
}

async function* drained(frames: AsyncIterable<Frame>): AsyncGenerator<Buffer> {
  for await (const f of frames) void f;
}

/** The whole verified plaintext in one buffer: for objects a reader needs whole and that are small (metadata). */
export async function collectPlaintext(decoded: DecodedObject): Promise<Buffer> {
  const out = Buffer.allocUnsafe(decoded.header.plaintextSize);
  let at = 0;
  for await (const chunk of decoded.chunks) {
    // The plaintext check refuses more than the header's size before it gets here.
    at += chunk.copy(out, at);
  }
  if (!decoded.verified || at !== out.length) throw new WalvaultError('INTERNAL', `decoded ${at} of ${out.length} bytes`);
  return out;
}

/**
 * Decodes an object already in memory (a lease read whole, tests): the same stages over one
 * chunk. The plaintext is a copy.
 */
export async function decodeEnvelope(buf: Buffer, label: string, privateKey?: PrivateKey): Promise<{ header: EnvelopeHeader; plaintext: Buffer }> {
  async function* one(): AsyncGenerator<Buffer> {
    yield buf;
  }
  const decoded = await decodeObject(one(), buf.length, { label, privateKey });
  try {
    return { header: decoded.header, plaintext: await collectPlaintext(decoded) };
  } finally {
    await decoded.close();
  }
}
