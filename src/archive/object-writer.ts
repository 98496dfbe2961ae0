/**
 * One object written and proven: the plain envelope header and the plaintext, or the framed
 * header, frames and trailer, put, then read back whole (./read-back.ts). An object that
 * fails its read-back is removed.
 */
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { WalvaultError } from '../errors';
import type { ObjectChunk, Storage } from '../storage/storage';
import type { BodySource } from './body-source';
import { bindingExtension } from './binding';
import { codecByName, type CodecName } from './codecs';
import { newDataKey, type PublicKey } from './encryption';
import { encodeFramedHeader, encodePlainHeader, hex32 } from './envelope';
import { encodeFrames, readTrailer } from './framed-body';
import { readBackProblem } from './read-back';
import type { DecodedObject } from './read/decode-object';

/** Frames of one in-memory object compressing at once (one per zstd worker is plenty). */
const FRAMES_AHEAD = 4;

/** What a writer needs of the archive it writes for. */
export interface WriteTarget {
  readonly storage: Storage;
  /** How messages name an object. */
  label(key: string): string;
  /** The system id new objects are bound to; null without cluster.json. */
  systemId(): Promise<string | null>;
  /** Archive.read: `key` decoded and verified as it arrives; null when there is none. */
  read<T>(key: string, consume: (object: DecodedObject) => Promise<T>): Promise<T | null>;
}

/** How one object is stored. */
export interface WriteFormat {
  codec: CodecName;
  /** The public key the object is encrypted for. */
  recipient?: PublicKey;
}

/** True when the body is stored as the plaintext itself (no codec, no encryption). */
export function storedPlain(format: WriteFormat): boolean {
  return format.codec === 'none' && !format.recipient;
}

export class ObjectWriter {
  constructor(private readonly target: WriteTarget) {}

  /**
   * Writes header + plaintext, then reads the object back: the header must be ours byte for
   * byte and the body must hash to `digest`, the checksum the plaintext had when it arrived.
   * One hash thus proves both that the write is good and that the source (a spool file, say)
   * still held what was received; the source is read only once. A framed object goes through
   * writeFramed, where `recheck` applies.
   */
  async write(key: string, source: BodySource, digest: Buffer, recheck: boolean | number, format: WriteFormat): Promise<void> {
    if (!storedPlain(format)) return this.writeFramed(key, source, digest, recheck, format);
    const header = encodePlainHeader(source.length, digest, bindingExtension(key, await this.target.systemId()));
    async function* body(): AsyncIterable<Buffer> {
      yield header;
      yield* source.windows();
    }
    await this.target.storage.put(key, body());
    await this.verifyOrRemove(key, header, source, digest);
  }

  /**
   * The framed pipeline: read -> hash -> compress -> encrypt -> put; then the stored object is
   * read back and must be those bytes exactly. Each byte is hashed once on the way out: the
   * plaintext against `digest` (unless `recheck` is off: the caller hashed exactly these
   * bytes; or, when `recheck` is the CRC32C the plaintext had as it arrived, against that, as
   * the read-back of a linked spool file is, at a small part of SHA-256's cost), and the stored
   * bytes for the trailer, which the read-back is then checked against. The plaintext is
   * checked before the trailer is produced, so a source that changed since it was received
   * aborts the write and leaves no object.
   */
  private async writeFramed(key: string, source: BodySource, digest: Buffer, recheck: boolean | number, format: WriteFormat): Promise<void> {
    const codec = codecByName(format.codec);
    const recipient = format.recipient;
    const wrapped = recipient ? newDataKey(recipient) : null;
    // The binding is in the header, which encryption authenticates with every frame.
    const extension = { ...bindingExtension(key, await this.target.systemId()), ...(wrapped ? { enc: wrapped.info } : {}) };
    const header = encodeFramedHeader(codec.name, wrapped ? 'aes-256-gcm' : 'none', source.length, digest, extension);
    let trailer: Buffer | null = null;
    async function* body(): AsyncIterable<ObjectChunk> {
      yield header;
      const plaintext = recheck === false ? source.windows() : checkedAgainst(source, recheck === true ? digest : recheck);
      // Windows of a buffer stay valid, so its frames may compress in parallel.
      const compressAhead = recheck ? 1 : FRAMES_AHEAD;
      for await (const pieces of encodeFrames(plaintext, source.length, header, { codec, dataKey: wrapped?.dataKey ?? null, compressAhead })) {
        // The last element is the trailer alone (a buffer of its own, kept for the read-back).
        trailer = pieces[0];
        yield pieces;
      }
    }
    await this.target.storage.put(key, body());
    const written = readTrailer(trailer ?? Buffer.alloc(0));
    if (typeof written === 'string') throw new WalvaultError('INTERNAL', `${this.target.label(key)}: the encoder ended without its trailer`);
    const problem = await readBackProblem(this.target.storage, key, { total: written.objectLength, tail: trailer!, sha256: written.sha256 });
    if (problem !== null) await this.removeAndFail(key, source, problem);
  }

  /** The read-back of a plain object: its header byte for byte, its body against `digest` (or `bodyCrc32c`). */
  async verifyOrRemove(key: string, header: Buffer, source: BodySource, digest: Buffer, bodyCrc32c?: number): Promise<void> {
    const problem = await readBackProblem(this.target.storage, key, { total: header.length + source.length, head: header, sha256: digest, crc32c: bodyCrc32c });
    if (problem === null) return;
    // Another writer of the same segment (wal-push as archive_command beside the receiver)
    // may have put its own object, with another header, between our write and our read-back.
    // One that decodes, every check passing, to exactly our plaintext stands, and so does
    // its writer's read-back: removing it would fail that writer for nothing.
    if (await this.holdsPlaintext(key, source.length, digest).catch(() => false)) return;
    await this.removeAndFail(key, source, problem);
  }

  /** Whether `key` decodes, verified, to a plaintext of `length` bytes hashing to `digest`. */
  private async holdsPlaintext(key: string, length: number, digest: Buffer): Promise<boolean> {
    const same = await this.target.read(key, async (object) => {
      if (object.header.plaintextSize !== length || !object.header.sha256.equals(digest) || !object.plaintextChecked) return false;
      for await (const _ of object.chunks) {
        /* every check runs as the chunks go by */
      }
      return true;
    });
    return same === true;
  }

  private async removeAndFail(key: string, source: BodySource, problem: string): Promise<never> {
    // Remove what is there, so a retry writes afresh instead of finding an object whose
    // header claims the right checksum over a damaged body.
    await this.target.storage.delete(key).catch(() => undefined);
    throw new WalvaultError(
      'ARCHIVE_CORRUPT',
      `${this.target.label(key)}: written from ${source.origin}, but ${problem} (removed, so a retry writes it afresh`, { fix: `check the disk ${source.origin} is on, and that no other process writes to this archive)` },
    );
  }
}

/**
 * Passes the source's windows through, hashing them; at the end the plaintext must hash to
 * what was received (its SHA-256 `digest`, or its CRC32C), or the stream fails before
 * anything can complete.
 */
async function* checkedAgainst(source: BodySource, expected: Buffer | number): AsyncIterable<Buffer> {
  const hash = typeof expected === 'number' ? null : createHash('sha256');
  let crc = 0;
  for await (const w of source.windows()) {
    if (hash) hash.update(w);
    else crc = crc32c(w, crc);
    yield w;
  }
  const [kind, actual, want] = hash ? ['sha256', hash.digest('hex'), (expected as Buffer).toString('hex')] : ['CRC32C', hex32(crc >>> 0), hex32((expected as number) >>> 0)];
  if (actual !== want) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${source.origin} changed since it was received: its content has ${kind} ${actual}, not ${want}`, { fix: `check the disk it is on` });
  }
}
