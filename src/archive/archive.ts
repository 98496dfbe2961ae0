/**
 * The archive on top of a Storage: the layout under the site's prefix (./layout.ts) and the
 * rules the backends do not know about.
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
import { isWalvaultError, WalvaultError } from '../errors';
import type { ObjectInfo, Storage } from '../storage/storage';
import { reconcileSettings, recordSettings, type SettingsNote } from './archive-settings';
import { bufferSource, digestOf, fileSource, windowPool, type BodySource } from './body-source';
import { bindingOf, checkBinding } from './binding';
import { frameKeys, walkFrames, type FrameKeys, type FrameRef } from './read/pick-frames';
import { assertSameCluster, checkClusterInfo, encodeClusterMarker, parseClusterInfo, type ClusterInfo } from './cluster-marker';
import type { CodecName } from './codecs';
import type { PrivateKey, PublicKey } from './encryption';
import { encodePlainHeader, sha256Async, type EnvelopeHeader } from './envelope';
import { existingObject } from './existing-object';
import { CLUSTER_KEY, WAL_PREFIX, walKey } from './layout';
import { ObjectWriter, storedPlain, type WriteFormat } from './object-writer';
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

export interface ReadOptions {
  /** Where SHA-256 runs (./read/hashers.ts): on this thread by default. */
  hasher?: HasherFactory;
  /** An encrypted object read without the private key is checked by its stored bytes only. */
  storedOnlyWithoutKey?: boolean;
  /**
   * A fresh buffer for each read from the store (Storage.openRead), instead of one reused
   * window: the caller then owns every buffer it gave, and a chunk that is a view of one
   * stays valid after the next (../archive/read/read-ahead.ts adopts them, no copy).
   */
  readInto?: () => Buffer;
}

/** Takes a verified plaintext as it arrives; end() gives its own verdict (throws) once the object's passed. */
export interface PlaintextSink {
  write(chunk: Buffer): void;
  end(): void;
}

/** 'repaired': the key held a damaged object (a torn write), which was replaced. */
export type PutResult = 'stored' | 'unchanged' | 'repaired';

export class Archive {
  readonly storage: Storage;
  /** Settled once the archive's recorded settings are adopted (adoptRecordedSettings). */
  private readonly options: ArchiveOptions;
  /** cluster.json once read (shared with asPlain()): the system id objects are bound to. */
  private readonly known: { cluster?: ClusterInfo };
  private readonly writer: ObjectWriter;

  constructor(storage: Storage, options: ArchiveOptions = {}, known: { cluster?: ClusterInfo } = {}) {
    this.storage = storage;
    this.options = { ...options };
    this.known = known;
    this.writer = new ObjectWriter({
      storage,
      label: (key) => this.label(key),
      systemId: () => this.systemId(),
      read: (key, consume) => this.read(key, consume),
    });
  }

  /** How new objects are stored; `codec` overrides the archive's for one object (bytes compressed already, say). */
  private format(codec?: CodecName): WriteFormat {
    return { codec: codec ?? this.options.codec ?? 'none', recipient: this.options.recipient };
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

  static readonly walKey = walKey;

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
      assertSameCluster(existing, info, this.storage.description);
      return existing;
    }

    const marker: ClusterInfo = {
      systemId: info.systemId,
      pgVersionNum: info.pgVersionNum,
      walSegmentSize: info.walSegmentSize,
      createdAt: info.createdAt ?? new Date().toISOString(),
      settings: recordSettings(this.options),
    };
    await this.storage.put(CLUSTER_KEY, encodeClusterMarker(marker));
    // If another cluster's process created the marker at the same moment, one of us reads
    // back the other's marker here and stops.
    const stored = await this.readCluster();
    if (stored === null) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${this.label(CLUSTER_KEY)}: written, but missing when read back`);
    }
    assertSameCluster(stored, info, this.storage.description);
    return stored;
  }

  /**
   * Stores an object that must never change (a finished segment, a history file). An
   * identical object already stored is a no-op; a different one is a refusal.
   * `knownSha256` is the checksum the plaintext had when it arrived: the write then also
   * proves the plaintext (a spool file, say) still has it.
   */
  async putImmutable(key: string, plaintext: Buffer | BodySource, knownSha256?: Buffer): Promise<PutResult> {
    const { source, digest: ours, recheck } = await hashedSource(plaintext, knownSha256);
    const existing = await this.alreadyStored(key, source.length, ours);
    if (existing === 'same') return 'unchanged';
    await this.writer.write(key, source, ours, recheck, this.format());
    return existing === 'damaged' ? 'repaired' : 'stored';
  }

  /**
   * Stores, as an immutable object, a buffer the caller owns and leaves untouched until this
   * settles (a backup part), with `sha256` the digest of exactly these bytes, computed by the
   * caller as it filled the buffer: the write does not hash the plaintext a second time, and
   * compresses its frames in parallel. `frameSize`: the plaintext bytes per frame when the
   * object is framed (1 MiB when not given); a plain object has no frames.
   */
  async putOwnedBuffer(key: string, plaintext: Buffer, sha256: Buffer, opts: { codec?: CodecName; frameSize?: number } = {}): Promise<PutResult> {
    const existing = await this.alreadyStored(key, plaintext.length, sha256);
    if (existing === 'same') return 'unchanged';
    const format = this.format(opts.codec);
    await this.writer.write(key, bufferSource(plaintext, storedPlain(format) ? undefined : opts.frameSize), sha256, false, format);
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
    if (!storedPlain(this.format())) {
      await this.writer.write(key, source, digest, opts.bodyCrc32c ?? true, this.format());
      return done;
    }
    // A link never replaces: the damaged object goes first.
    if (existing === 'damaged') await this.storage.delete(key);
    const adopted = this.storage.adoptFile ? await this.storage.adoptFile(key, file) : 'unsupported';
    if (adopted === 'exists') {
      // Another writer got there between the check and the link: same rules as before.
      if ((await this.alreadyStored(key, plaintextLength, digest)) === 'same') return 'unchanged';
      throw new WalvaultError('ARCHIVE_CORRUPT', `${this.label(key)} appeared and vanished while it was being stored`, { fix: `is another process writing to this archive?` });
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
      await this.writer.verifyOrRemove(key, header, source, digest, opts.bodyCrc32c);
    } else {
      await this.writer.write(key, source, digest, true, this.format());
    }
    return done;
  }

  /** What `key` holds now (./existing-object.ts): absent, the same plaintext, damaged, or a refusal. */
  private alreadyStored(key: string, plaintextLength: number, ours: Buffer): Promise<'absent' | 'same' | 'damaged'> {
    return existingObject(this.storage, key, this.label(key), plaintextLength, ours);
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
    const { source, digest, recheck } = await hashedSource(plaintext, knownSha256);
    // A file that changes between hashing and storing (the spool keeps growing) fails the
    // read-back check.
    await this.writer.write(key, source, digest, recheck, this.format());
    return digest;
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
    const window = opts.readInto ? null : windowPool.acquire();
    try {
      const opened = await this.storage.openRead(key, window ?? opts.readInto);
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
      if (window) windowPool.release(window);
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
   * `key` read whole, its frames' layout checked and its binding too, for frames to be
   * decoded elsewhere (decodeFrame, on a writer thread: an encrypted frame is authenticated
   * there); null when there is no such object. With `expect` (the stored size a record gives,
   * and a buffer of at least one byte more) it is read into that buffer where the backend can,
   * and an object of another size is refused before its frames are walked.
   */
  async readFramed(key: string, expect?: { size: number; into: Buffer }): Promise<{ stored: Buffer; header: EnvelopeHeader; frames: FrameRef[]; keys: FrameKeys } | null> {
    const label = this.label(key);
    // One byte more than recorded: an object longer than its record shows as such.
    // A restore reads its parts one after another: on this thread where the store allows it.
    const stored = !expect ? await this.storage.get(key) : this.storage.getRangeNow ? this.storage.getRangeNow(key, 0, expect.size + 1, expect.into) : await this.storage.getRange(key, 0, expect.size + 1, expect.into);
    if (stored === null) return null;
    if (expect && stored.length !== expect.size) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${label} is ${stored.length > expect.size ? 'longer than' : `${stored.length} bytes, not`} the ${expect.size} bytes recorded for it`, { fix: 'the object is damaged or was replaced' });
    }
    const { header, frames } = walkFrames(stored, label);
    await this.checkBound(header, key, label);
    return { stored, header, frames, keys: frameKeys(header, this.options.privateKey, label) };
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

  /**
   * What can be read under `prefix` now, to choose from (a restore's backup, a backup list):
   * here the store's listing; a site's several archives list those that answer
   * (./archive-set.ts), so one archive down does not stop a restore from the others.
   */
  listAvailable(prefix: string): Promise<ObjectInfo[]> {
    return this.storage.list(prefix);
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

/** A plaintext as a source, with its SHA-256: the one it arrived with (`knownSha256`), else hashed now. */
async function hashedSource(plaintext: Buffer | BodySource, knownSha256?: Buffer): Promise<{ source: BodySource; digest: Buffer; recheck: boolean }> {
  const source = Buffer.isBuffer(plaintext) ? bufferSource(plaintext) : plaintext;
  const digest = knownSha256 ?? (Buffer.isBuffer(plaintext) ? await sha256Async(plaintext) : await digestOf(source));
  // A buffer hashed just now, which the caller holds unchanged until the write settles, needs
  // no second pass over its plaintext; a known checksum, or a source read again, must be proven.
  return { source, digest, recheck: knownSha256 !== undefined || !Buffer.isBuffer(plaintext) };
}
