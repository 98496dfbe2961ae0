/**
 * The archive on top of a Storage: the layout under the site's prefix and the rules the
 * backends do not know about.
 *
 *   cluster.json                 which database system this archive belongs to
 *   wal/<segment>                finished segments (immutable)
 *   wal/<segment>.partial        newest partial of the segment being received (replaced)
 *   wal/<TLI>.history            timeline history files (immutable)
 *
 * Every object, cluster.json included, is wrapped in the envelope (./envelope.ts), and every
 * write is read back and verified before it counts as archived. Objects written through
 * put* carry their key and the cluster's system identifier in the envelope (./binding.ts);
 * every read refuses one that names another key or cluster (ARCHIVE_MISPLACED). Sealed
 * spool files adopted as plain WAL objects keep the fixed 64-byte header: their page headers
 * bind them (../wal/wal-identity.ts).
 *
 * Concurrency: the Storage interface has no create-if-absent, so two writers racing on the
 * same new key can both believe they won. One archive prefix is meant to have one writer
 * (one site); the read-back checks narrow, but do not close, that window.
 */
import { parseRecordedSettings, reconcileSettings, recordSettings, type RecordedSettings, type SettingsNote } from './archive-settings';
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { isWalvaultError, WalvaultError } from '../errors';
import { isValidSegmentSize } from '../wal/lsn';
import type { ObjectChunk, Storage } from '../storage/storage';
import { bufferSource, digestOf, fileSource, windowPool, type BodySource } from './body-source';
import { bindingExtension, bindingOf, checkBinding } from './binding';
import { codecByName, type CodecName } from './codecs';
import { newDataKey, type PrivateKey, type PublicKey } from './encryption';
import { encodeEnvelope, encodeFramedHeader, encodePlainHeader, hex32, readEnvelopeHeader, sha256Async, type EnvelopeHeader } from './envelope';
import { encodeFrames, readTrailer, TRAILER_LENGTH } from './framed-body';
import { collectPlaintext, decodeObject, type DecodedObject } from './read/decode-object';
import type { HasherFactory } from './read/hashers';

/**
 * How this archive writes and reads bodies. Metadata (cluster.json) is always plain: the
 * backup host must read it without the private key.
 */
export interface ArchiveOptions {
  /** Compression for WAL and backup objects; default none. */
  codec?: CodecName;
  /**
   * Whether the command was told the codec (default true); false: `codec` is only the site's
   * default, and the archive's recorded codec replaces it (./archive-settings.ts).
   */
  codecChosen?: boolean;
  /** Encrypt object bodies for this public key. */
  recipient?: PublicKey;
  /** Decrypts encrypted objects on read. */
  privateKey?: PrivateKey;
}

export interface ClusterInfo {
  /** Decimal uint64, as IDENTIFY_SYSTEM prints it. */
  systemId: string;
  pgVersionNum: number;
  walSegmentSize: number;
  createdAt?: string;
  /** How the archive stores objects, as recorded at its creation (./archive-settings.ts). */
  settings?: RecordedSettings;
}

export interface ReadOptions {
  /** Where SHA-256 runs (./read/hashers.ts): on this thread by default. */
  hasher?: HasherFactory;
  /** An encrypted object read without the private key is checked by its stored bytes only. */
  storedOnlyWithoutKey?: boolean;
}

/** Takes a verified plaintext as it arrives; end() gives its own verdict (throws) once the object's passed. */
export interface PlaintextSink {
  write(chunk: Buffer): void;
  end(): void;
}

/** 'repaired': the key held a damaged object (a torn write), which was replaced. */
export type PutResult = 'stored' | 'unchanged' | 'repaired';

export const CLUSTER_KEY = 'cluster.json';
/** Frames of one in-memory object compressing at once (one per zstd worker is plenty). */
const FRAMES_AHEAD = 4;
const WAL_PREFIX = 'wal/';
/** Enough to hold any envelope header (its extension is capped at 64 KiB). */
const MAX_HEADER_READ = 64 * 1024 + 128;
const UINT64_MAX = (1n << 64n) - 1n;

export class Archive {
  readonly storage: Storage;
  /** Settled once the archive's recorded settings are adopted (adoptRecordedSettings). */
  private readonly options: ArchiveOptions;
  /** cluster.json once read (shared with asPlain()): the system id objects are bound to. */
  private readonly known: { cluster?: ClusterInfo };

  constructor(storage: Storage, options: ArchiveOptions = {}, known: { cluster?: ClusterInfo } = {}) {
    this.storage = storage;
    this.options = { ...options };
    this.known = known;
  }

  /** True when bodies are stored as the plaintext itself (no codec, no encryption). */
  private get plain(): boolean {
    return (this.options.codec ?? 'none') === 'none' && !this.options.recipient;
  }

  /** The public key new objects are encrypted for; undefined: stored unencrypted. */
  get recipient(): PublicKey | undefined {
    return this.options.recipient;
  }

  /** The codec new objects are stored with. */
  get codec(): CodecName {
    return this.options.codec ?? 'none';
  }

  /**
   * Takes on what the archive recorded at its creation for what this command was not told,
   * and refuses a key other than the archive's; the notes say what changed. Call it before
   * writing anything but cluster.json (claimArchive in ./archive-settings.ts does).
   */
  adoptRecordedSettings(cluster: ClusterInfo, pinned: Parameters<typeof reconcileSettings>[3] = null): SettingsNote[] {
    if (!cluster.settings) return [];
    const asked = { codec: this.codec, codecChosen: this.options.codecChosen ?? true, recipient: this.options.recipient };
    const settled = reconcileSettings(cluster.settings, asked, this.storage.description, pinned);
    this.options.codec = settled.codec;
    this.options.recipient = settled.recipient;
    return settled.notes;
  }

  /**
   * The same storage, writing plain objects (no codec, no encryption): for what any holder
   * of the archive must read without a private key (the backup catalog). Do not close it
   * separately; it shares this archive's storage.
   */
  asPlain(): Archive {
    // Always a new one: this archive's codec and key may still change (adoptRecordedSettings).
    return new Archive(this.storage, { privateKey: this.options.privateKey }, this.known);
  }

  static walKey(name: string): string {
    if (name === '' || name.includes('/')) {
      throw new WalvaultError('WAL_BAD_NAME', `"${name}" is not a WAL file name (expected a bare name such as 000000010000000000000003)`);
    }
    return WAL_PREFIX + name;
  }

  /** How messages name an object: its key and where the archive is. */
  label(key: string): string {
    return `${key} in ${this.storage.description}`;
  }

  async readCluster(): Promise<ClusterInfo | null> {
    const plaintext = await this.get(CLUSTER_KEY);
    if (plaintext === null) return null;
    const info = parseClusterInfo(plaintext, this.label(CLUSTER_KEY));
    this.known.cluster = info;
    return info;
  }

  /** cluster.json, read once (it never changes once written); null while there is none. */
  async cluster(): Promise<ClusterInfo | null> {
    return this.known.cluster ?? this.readCluster();
  }

  /** The system id writes bind objects to and reads compare bindings with; null without cluster.json. */
  private async systemId(): Promise<string | null> {
    return (await this.cluster())?.systemId ?? null;
  }

  /** Refuses an object whose envelope names another key or another cluster (see ./binding.ts). */
  private async checkBound(header: EnvelopeHeader, key: string, label: string): Promise<void> {
    const binding = bindingOf(header.extension, label);
    if (binding === null) return;
    const systemId = binding.sys !== undefined && key !== CLUSTER_KEY ? await this.systemId() : null;
    checkBinding(binding, key, systemId, label);
  }

  /**
   * Claims the archive for this cluster, or proves it is already ours. Refuses, without
   * writing anything, an archive that belongs to another database system.
   */
  async ensureCluster(info: ClusterInfo): Promise<ClusterInfo> {
    checkClusterInfo(info);
    const existing = await this.readCluster();
    if (existing !== null) {
      this.assertSameCluster(existing, info);
      return existing;
    }

    const marker: ClusterInfo = {
      systemId: info.systemId,
      pgVersionNum: info.pgVersionNum,
      walSegmentSize: info.walSegmentSize,
      createdAt: info.createdAt ?? new Date().toISOString(),
      settings: recordSettings(this.options),
    };
    await this.storage.put(CLUSTER_KEY, encodeEnvelope(Buffer.from(JSON.stringify(marker, null, 2) + '\n', 'utf8'), bindingExtension(CLUSTER_KEY, null)));
    // If another cluster's process created the marker at the same moment, one of us reads
    // back the other's marker here and stops.
    const stored = await this.readCluster();
    if (stored === null) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${this.label(CLUSTER_KEY)}: written, but missing when read back`);
    }
    this.assertSameCluster(stored, info);
    return stored;
  }

  private assertSameCluster(stored: ClusterInfo, ours: ClusterInfo): void {
    const desc = this.storage.description;
    if (stored.systemId !== ours.systemId) {
      throw new WalvaultError(
        'ARCHIVE_OTHER_CLUSTER',
        `archive ${desc} belongs to database system ${stored.systemId}, but the server is ${ours.systemId}: use a separate archive for each cluster`,
      );
    }
    if (stored.walSegmentSize !== ours.walSegmentSize) {
      // wal_segment_size is fixed at initdb, so this is not the cluster that made the archive.
      throw new WalvaultError(
        'ARCHIVE_OTHER_CLUSTER',
        `archive ${desc} was created for database system ${stored.systemId} with wal_segment_size ${stored.walSegmentSize} bytes, ` +
          `but the server reports ${ours.walSegmentSize} bytes: this is not the same cluster; use a separate archive for each cluster`,
      );
    }
  }

  /**
   * Stores an object that must never change (a finished segment, a history file). An
   * identical object already stored is a no-op; a different one is a refusal.
   * `knownSha256` is the checksum the plaintext had when it arrived: the write then also
   * proves the plaintext (a spool file, say) still has it.
   */
  async putImmutable(key: string, plaintext: Buffer | BodySource, knownSha256?: Buffer): Promise<PutResult> {
    const source = Buffer.isBuffer(plaintext) ? bufferSource(plaintext) : plaintext;
    const ours = knownSha256 ?? (Buffer.isBuffer(plaintext) ? await sha256Async(plaintext) : await digestOf(source));
    const existing = await this.alreadyStored(key, source.length, ours);
    if (existing === 'same') return 'unchanged';
    // A buffer hashed just now, which the caller holds unchanged until this settles, needs no
    // second pass over its plaintext; a known checksum, or a source read again, must be proven.
    const recheck = knownSha256 !== undefined || !Buffer.isBuffer(plaintext);
    await this.writeVerified(key, source, ours, recheck);
    return existing === 'damaged' ? 'repaired' : 'stored';
  }

  /**
   * Stores, as an immutable object, a buffer the caller owns and leaves untouched until this
   * settles (a backup part), with `sha256` the digest of exactly these bytes, computed by the
   * caller as it filled the buffer: the write does not hash the plaintext a second time, and
   * compresses its frames in parallel.
   */
  async putOwnedBuffer(key: string, plaintext: Buffer, sha256: Buffer, opts: { codec?: CodecName } = {}): Promise<PutResult> {
    const existing = await this.alreadyStored(key, plaintext.length, sha256);
    if (existing === 'same') return 'unchanged';
    await this.writeVerified(key, bufferSource(plaintext), sha256, false, opts.codec);
    return existing === 'damaged' ? 'repaired' : 'stored';
  }

  /**
   * Stores a sealed file as an immutable object: the plain envelope header for
   * (`plaintextLength`, `digest`) followed by the plaintext, as the spool leaves a completed
   * segment. A backend that can adopt the file (a local archive on the same filesystem)
   * links it into place, so the bytes are not copied; otherwise the plaintext is written
   * from the file. Either way the stored object is read back and verified. `bodyCrc32c`, the
   * CRC32C the plaintext had as it arrived, lets the read-back of a linked file check the
   * body with it instead of hashing it with SHA-256 a second time (see below).
   */
  async putSealedFile(
    key: string,
    file: string,
    plaintextLength: number,
    digest: Buffer,
    opts: { replaceUnreadable?: boolean; bodyCrc32c?: number } = {},
  ): Promise<PutResult> {
    const header = encodePlainHeader(plaintextLength, digest);
    const source = fileSource(file, plaintextLength, header.length);
    const existing = await this.alreadyStored(key, plaintextLength, digest).catch((err) => {
      // The caller has seen the store fail to produce this one object again and again while
      // it answers others: what is there cannot be read, so it is treated as torn.
      if (opts.replaceUnreadable && isWalvaultError(err, 'STORAGE_OBJECT_UNREADABLE')) return 'damaged' as const;
      throw err;
    });
    if (existing === 'same') return 'unchanged';
    const done: PutResult = existing === 'damaged' ? 'repaired' : 'stored';
    if (!this.plain) {
      await this.writeFramedVerified(key, source, digest, opts.bodyCrc32c ?? true, this.options.codec ?? 'none');
      return done;
    }
    // A link never replaces: the damaged object goes first.
    if (existing === 'damaged') await this.storage.delete(key);
    const adopted = this.storage.adoptFile ? await this.storage.adoptFile(key, file) : 'unsupported';
    if (adopted === 'exists') {
      // Another writer got there between the check and the link: same rules as before.
      if ((await this.alreadyStored(key, plaintextLength, digest)) === 'same') return 'unchanged';
      throw new WalvaultError('ARCHIVE_CORRUPT', `${this.label(key)} appeared and vanished while it was being stored; is another process writing to this archive?`);
    }
    if (adopted === 'adopted') {
      // The link is the spool file's own inode, whose bytes the spool hashed as they arrived,
      // and still the object is read back whole through its archive name (one read, one
      // hash). What that proves: the object the archive names holds our header and a body
      // hashing to what arrived from the server, so the spool's writes put the received
      // bytes where they belong and nothing changed them since (a buffer reused before its
      // write finished, a write at the wrong offset, another process, a damaged page). A
      // check that the name links the same inode would prove none of that. It does not prove
      // the disk has them: the read may come from the page cache; the fsyncs of the file
      // before it was sealed and of the directory after the link make them durable.
      // The header, which carries the SHA-256, is compared byte for byte; the body, when its
      // CRC32C on arrival is known, against that: CRC32C finds every error of up to 32 bits
      // and all but 1 in 2^32 of the rest, which is what an accident (a misplaced write, a
      // damaged page) can do, at a small part of SHA-256's cost (the receiver's largest).
      await this.verifyOrRemove(key, header, source, digest, opts.bodyCrc32c);
    } else {
      await this.writeVerified(key, source, digest);
    }
    return done;
  }

  /**
   * What `key` holds now, reading only the header (it carries the checksum) and the length
   * (against the header or the trailer): 'absent'; 'same' (this plaintext size and
   * checksum); 'damaged' (not a whole walvault object: a write torn by a store that is not
   * atomic, such as s3rver killed mid-PUT; we never leave one ourselves, since every write is
   * verified and removed when it fails, so it holds nothing anyone relies on and is
   * replaced); or a refusal when it is a whole object with other content.
   */
  private async alreadyStored(key: string, plaintextLength: number, ours: Buffer): Promise<'absent' | 'same' | 'damaged'> {
    const label = this.label(key);
    const existing = await this.storage.head(key);
    if (existing === null) return 'absent';
    // Never a range past what the store says it holds: s3rver answers a range of an empty
    // object (a PUT it tore at its start) with a length of 1 and no body, so that read would
    // fail on every attempt and the object would never be replaced.
    const head = existing.size === 0 ? Buffer.alloc(0) : await this.storage.getRange(key, 0, Math.min(MAX_HEADER_READ, existing.size));
    let theirs: ReturnType<typeof readEnvelopeHeader>;
    try {
      theirs = readEnvelopeHeader(head ?? Buffer.alloc(0), label);
    } catch (err) {
      if (isWalvaultError(err, 'ARCHIVE_CORRUPT')) return 'damaged';
      throw err;
    }
    const problem = theirs.framed ? await this.framedLengthProblem(key, existing.size) : existing.size === theirs.headerLength + theirs.bodyLength! ? null : `its header says ${theirs.headerLength + theirs.bodyLength!}`;
    if (problem !== null) return 'damaged';
    if (theirs.plaintextSize === plaintextLength && theirs.sha256.equals(ours)) return 'same';
    throw new WalvaultError(
      'ARCHIVE_CONFLICT',
      `${label} already exists with different content (stored: ${theirs.plaintextSize} bytes, sha256 ${theirs.sha256.toString('hex')}; ` +
        `new: ${plaintextLength} bytes, sha256 ${ours.toString('hex')}); refusing to overwrite an archived object`,
    );
  }

  private async framedLengthProblem(key: string, size: number): Promise<string | null> {
    const tail = size >= TRAILER_LENGTH ? await this.storage.getRange(key, size - TRAILER_LENGTH, TRAILER_LENGTH) : null;
    const trailer = readTrailer(tail ?? Buffer.alloc(0));
    if (typeof trailer === 'string') return trailer;
    return trailer.objectLength === size ? null : `its trailer says ${trailer.objectLength}`;
  }

  /**
   * Stores the growing partial of the segment being received, replacing the older one.
   * Returns the plaintext's SHA-256. `knownSha256` is what those bytes hashed to as they
   * arrived (the spool keeps a running hash): the source is then read once, and the write
   * proves it still holds them; without it the source is hashed first, and read again.
   */
  async putPartial(key: string, plaintext: Buffer | BodySource, knownSha256?: Buffer): Promise<Buffer> {
    // Guard the promise that finished objects never change: only .partial keys are replaceable.
    if (!key.endsWith('.partial')) {
      throw new WalvaultError('INTERNAL', `putPartial called for ${key}, which is not a .partial key`);
    }
    const source = Buffer.isBuffer(plaintext) ? bufferSource(plaintext) : plaintext;
    const digest = knownSha256 ?? (Buffer.isBuffer(plaintext) ? await sha256Async(plaintext) : await digestOf(source));
    // A file that changes between hashing and storing (the spool keeps growing) fails the
    // read-back check. A buffer hashed just now needs no second pass (see putImmutable).
    await this.writeVerified(key, source, digest, knownSha256 !== undefined || !Buffer.isBuffer(plaintext));
    return digest;
  }

  /**
   * Writes header + plaintext, then reads the object back: the header must be ours byte for
   * byte and the body must hash to `digest`, the checksum the plaintext had when it arrived.
   * One hash thus proves both that the write is good and that the source (a spool file, say)
   * still held what was received; the source is read only once.
   */
  /** `codec` overrides the archive's for this object (bytes compressed already, say). */
  private async writeVerified(key: string, source: BodySource, digest: Buffer, recheck = true, codec?: CodecName): Promise<void> {
    const plain = codec === undefined ? this.plain : codec === 'none' && !this.options.recipient;
    if (!plain) return this.writeFramedVerified(key, source, digest, recheck, codec ?? this.options.codec ?? 'none');
    const header = encodePlainHeader(source.length, digest, bindingExtension(key, await this.systemId()));
    async function* body(): AsyncIterable<Buffer> {
      yield header;
      yield* source.windows();
    }
    await this.storage.put(key, body());
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
  private async writeFramedVerified(key: string, source: BodySource, digest: Buffer, recheck: boolean | number, codecName: CodecName): Promise<void> {
    const codec = codecByName(codecName);
    const recipient = this.options.recipient;
    const wrapped = recipient ? newDataKey(recipient) : null;
    // The binding is in the header, which encryption authenticates with every frame.
    const extension = { ...bindingExtension(key, await this.systemId()), ...(wrapped ? { enc: wrapped.info } : {}) };
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
    await this.storage.put(key, body());
    const written = readTrailer(trailer ?? Buffer.alloc(0));
    if (typeof written === 'string') throw new WalvaultError('INTERNAL', `${this.label(key)}: the encoder ended without its trailer`);
    const problem = await this.readBackProblem(key, { total: written.objectLength, tail: trailer!, sha256: written.sha256 });
    if (problem !== null) await this.removeAndFail(key, source, problem);
  }

  private async verifyOrRemove(key: string, header: Buffer, source: BodySource, digest: Buffer, bodyCrc32c?: number): Promise<void> {
    const problem = await this.readBackProblem(key, { total: header.length + source.length, head: header, sha256: digest, crc32c: bodyCrc32c });
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
    const same = await this.read(key, async (object) => {
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
    await this.storage.delete(key).catch(() => undefined);
    throw new WalvaultError(
      'ARCHIVE_CORRUPT',
      `${this.label(key)}: written from ${source.origin}, but ${problem} (removed, so a retry writes it afresh; ` +
        `check the disk ${source.origin} is on, and that no other process writes to this archive)`,
    );
  }

  /**
   * Reads the stored object back in one pass, in bounded memory, hashing it once: it must be
   * `total` bytes; its first bytes must be `head` and its last `tail`, byte for byte (the
   * plain envelope header; a framed object's trailer); what lies between must hash to
   * `sha256` (the plaintext's received checksum; for a framed object the trailer's checksum,
   * whose range includes the header), or have the CRC32C `crc32c` when that is given instead.
   * Null when it is so, else what differs.
   */
  private async readBackProblem(key: string, expect: { total: number; head?: Buffer; tail?: Buffer; sha256: Buffer; crc32c?: number }): Promise<string | null> {
    const { total } = expect;
    const head = expect.head ?? Buffer.alloc(0);
    const tail = expect.tail ?? Buffer.alloc(0);
    const hashEnd = total - tail.length;
    const window = windowPool.acquire();
    try {
      const opened = await this.storage.openRead(key, window);
      if (opened === null) return 'missing when read back';
      let offset = 0;
      const hash = expect.crc32c === undefined ? createHash('sha256') : null;
      let crc = 0;
      const chunks = opened.chunks[Symbol.asyncIterator]();
      try {
        if (opened.size !== total) return `${opened.size} bytes instead of ${total} when read back`;
        for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
          const got = next.value;
          const end = offset + got.length;
          if (end > total) return `more than ${total} bytes when read back`;
          // This chunk's share of the head, of the hashed middle, and of the tail.
          if (offset < head.length && !got.subarray(0, head.length - offset).equals(head.subarray(offset, Math.min(end, head.length)))) {
            return 'its header differs when read back';
          }
          const from = Math.max(offset, head.length);
          const to = Math.min(end, hashEnd);
          if (from < to) {
            const middle = got.subarray(from - offset, to - offset);
            if (hash) hash.update(middle);
            else crc = crc32c(middle, crc);
          }
          if (end > hashEnd) {
            const at = Math.max(offset, hashEnd);
            if (!got.subarray(at - offset).equals(tail.subarray(at - hashEnd, end - hashEnd))) return 'its trailer differs when read back';
          }
          offset = end;
        }
      } finally {
        await chunks.return?.();
      }
      if (offset < total) return `missing from byte ${offset} when read back`;
      if (hash === null) {
        const want = expect.crc32c! >>> 0;
        return crc >>> 0 === want ? null : `what was read back has CRC32C ${hex32(crc >>> 0)}, not ${hex32(want)} as received`;
      }
      const stored = hash.digest();
      if (!stored.equals(expect.sha256)) {
        return `what was read back has sha256 ${stored.toString('hex')}, not ${expect.sha256.toString('hex')} as ${expect.head ? 'received' : 'written'}`;
      }
      return null;
    } finally {
      windowPool.release(window);
    }
  }

  /**
   * Reads `key` as it arrives, through the decode stages (./read/decode-object.ts), and hands
   * it to `consume`: its header (bound to this key and cluster: an object bound elsewhere is
   * refused with ARCHIVE_MISPLACED before `consume` runs) and its verified plaintext, chunk by
   * chunk, whose iteration ends without an error only once every check passed. `consume`
   * commits nothing before that, and must read the chunks to their end. Null when there is
   * no such object.
   */
  async read<T>(key: string, consume: (object: DecodedObject) => Promise<T>, opts: ReadOptions = {}): Promise<T | null> {
    const label = this.label(key);
    const window = windowPool.acquire();
    try {
      const opened = await this.storage.openRead(key, window);
      if (opened === null) return null;
      const decoded = await decodeObject(opened.chunks, opened.size, {
        label,
        privateKey: this.options.privateKey,
        storedOnlyWithoutKey: opts.storedOnlyWithoutKey,
        hasher: opts.hasher,
        // Once trusted: for an encrypted object, the binding is then authenticated.
        trusted: (header) => this.checkBound(header, key, label),
      });
      try {
        const result = await consume(decoded);
        if (!decoded.verified) throw new WalvaultError('INTERNAL', `${label}: its reader stopped before the object was verified`);
        return result;
      } finally {
        await decoded.close();
      }
    } finally {
      windowPool.release(window);
    }
  }

  /**
   * The whole verified plaintext, or null when there is no such object: for objects a
   * reader needs whole and that are small (metadata, manifests, history files); the rest
   * stream through read().
   */
  async get(key: string): Promise<Buffer | null> {
    return this.read(key, collectPlaintext);
  }

  /**
   * Reads and checks one stored object: the envelope decoded and its plaintext SHA-256
   * proven, each plaintext chunk handed to the sink `check` makes for the header (a WAL
   * file's identity, say); or, for an encrypted object when no private key was given, the
   * header and the trailer's SHA-256 of the stored bytes (plaintextChecked false). Null when
   * there is no such object; damage throws ARCHIVE_CORRUPT naming the key, an object bound to
   * another key or cluster ARCHIVE_MISPLACED, and the sink's own verdict comes after the
   * object's.
   */
  async checkObject(
    key: string,
    check?: (header: EnvelopeHeader) => PlaintextSink | null,
    opts: Pick<ReadOptions, 'hasher'> = {},
  ): Promise<{ header: EnvelopeHeader; plaintextChecked: boolean; storedBytes: number } | null> {
    return this.read(
      key,
      async (o) => {
        const sink = o.plaintextChecked ? (check?.(o.header) ?? null) : null;
        for await (const chunk of o.chunks) sink?.write(chunk);
        sink?.end();
        return { header: o.header, plaintextChecked: o.plaintextChecked, storedBytes: o.storedSize };
      },
      { ...opts, storedOnlyWithoutKey: true },
    );
  }

  async exists(key: string): Promise<boolean> {
    return (await this.storage.head(key)) !== null;
  }

  async delete(key: string): Promise<void> {
    await this.storage.delete(key);
  }

  /** Releases the storage's connections. */
  async close(): Promise<void> {
    await this.storage.close();
  }

  /** Names under wal/ without the prefix, sorted (segment names sort in WAL order). */
  async listWal(): Promise<string[]> {
    const objects = await this.storage.list(WAL_PREFIX);
    return objects.map((o) => o.key.slice(WAL_PREFIX.length));
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
    throw new WalvaultError('ARCHIVE_CORRUPT', `${source.origin} changed since it was received: its content has ${kind} ${actual}, not ${want}; check the disk it is on`);
  }
}

function isUint64Decimal(text: unknown): text is string {
  return typeof text === 'string' && /^\d{1,20}$/.test(text) && BigInt(text) <= UINT64_MAX;
}

function clusterInfoProblem(info: Record<string, unknown>): string | null {
  if (!isUint64Decimal(info.systemId)) return `systemId ${JSON.stringify(info.systemId)} is not a decimal uint64`;
  if (!Number.isInteger(info.pgVersionNum) || (info.pgVersionNum as number) <= 0) {
    return `pgVersionNum ${JSON.stringify(info.pgVersionNum)} is not a positive integer`;
  }
  if (!isValidSegmentSize(info.walSegmentSize as number)) {
    return `walSegmentSize ${JSON.stringify(info.walSegmentSize)} is not a power of two from 1 MiB to 1 GiB`;
  }
  if (info.createdAt !== undefined && typeof info.createdAt !== 'string') return 'createdAt is not a string';
  return null;
}

function checkClusterInfo(info: ClusterInfo): void {
  const problem = clusterInfoProblem(info as unknown as Record<string, unknown>);
  if (problem) throw new WalvaultError('INTERNAL', `invalid cluster identity: ${problem}`);
}

function parseClusterInfo(plaintext: Buffer, label: string): ClusterInfo {
  let value: unknown;
  try {
    value = JSON.parse(plaintext.toString('utf8'));
  } catch (err) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: not a JSON object`);
  }
  const obj = value as Record<string, unknown>;
  const problem = clusterInfoProblem(obj);
  if (problem) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${problem}`);
  const info: ClusterInfo = {
    systemId: obj.systemId as string,
    pgVersionNum: obj.pgVersionNum as number,
    walSegmentSize: obj.walSegmentSize as number,
  };
  if (typeof obj.createdAt === 'string') info.createdAt = obj.createdAt;
  const settings = parseRecordedSettings(obj.settings, label);
  if (settings) info.settings = settings;
  return info;
}
