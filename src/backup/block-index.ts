/**
 * A base backup's block index: for one tar archive, every member, where a file's content lies
 * in the tar stream, and the CRC-32C and XXH64 of each 8 KiB block of it. A delta restore compares the
 * files on disk with these and fetches only the blocks that differ, reading just the frames
 * of the parts that hold them (parts of indexed archives have 32 KiB frames). Stored as
 * `backups/<name>/index/<archive>` (docs/archive-format.md, section 14).
 *
 * Plaintext (integers unsigned, big-endian):
 *
 *   header, 16 bytes:
 *     0   4  magic "WVIX" (57 56 49 58)
 *     4   4  format: 1
 *     8   4  block size: 8192
 *     12  4  zero
 *   records, in tar order, until the plaintext ends:
 *     0   1  type: 0 regular file, 1 directory, 2 symbolic link
 *     1   2  mode: permission bits of the tar header (& 0o7777)
 *     3   2  path length n
 *     5   n  path, UTF-8, as TarReader names it (no trailing '/')
 *   then, symbolic link only:
 *     0   2  target length t
 *     2   t  target, UTF-8
 *   or, regular file only:
 *     0   8  size
 *     8   8  offset of the file's first content byte in the archive's tar stream (its
 *            parts' plaintexts concatenated, from 0)
 *     16  12k ceil(size / block size) block hashes, from the file's start (the last block
 *            may be shorter): CRC-32C of the block (4), then its XXH64, seed 0 (8); none for
 *            an empty file (../util/block-hash.ts says why these two)
 */
import { WalvaultError } from '../errors';
import { BLOCK_HASH_LENGTH, writeBlockHash } from '../util/block-hash';
import { TAR_BLOCK, TarReader, type TarEntry, type TarEntryType, type TarSink } from '../util/tar-reader';

export const INDEX_MAGIC = Buffer.from('WVIX', 'ascii');
export const INDEX_FORMAT = 2;
/** PostgreSQL's page size: the unit a delta restore compares and fetches. */
export const INDEX_BLOCK_SIZE = 8192;
export const INDEX_HEADER_LENGTH = 16;
/** CRC-32C then XXH64 of one block (../util/block-hash.ts). */
export const INDEX_HASH_LENGTH = BLOCK_HASH_LENGTH;

const TYPE_CODES: Record<TarEntryType, number> = { file: 0, directory: 1, symlink: 2 };
const TYPES: readonly TarEntryType[] = ['file', 'directory', 'symlink'];
/** type, mode, path length. */
const RECORD_FIXED = 5;
/** size, offset. */
const FILE_FIXED = 16;

export interface IndexMember {
  type: TarEntryType;
  mode: number;
  path: string;
  /** Symbolic links only. */
  target?: string;
  /** Content bytes; 0 for directories and links. */
  size: number;
  /** Where the content starts in the tar stream; 0 for directories and links. */
  offset: number;
  /** INDEX_HASH_LENGTH bytes per block: a view of the decoded plaintext. */
  hashes: Buffer;
}

export interface BlockIndex {
  blockSize: number;
  members: IndexMember[];
}

function indexHeader(): Buffer {
  const h = Buffer.alloc(INDEX_HEADER_LENGTH);
  INDEX_MAGIC.copy(h, 0);
  h.writeUInt32BE(INDEX_FORMAT, 4);
  h.writeUInt32BE(INDEX_BLOCK_SIZE, 8);
  return h;
}

/**
 * Builds the index of one tar stream as it goes by: fed every chunk in order, it is done with
 * a chunk when `write` returns (it keeps no view of it), so the caller may reuse the chunk's
 * buffer at once.
 *
 * The encoded index is held in memory until `finish`: 12 bytes per 8 KiB of data, 0.15% of the
 * backup, so a 1 TiB database needs about 1.5 GiB here. A limit to lift by spooling the records
 * to a file when databases that large are backed up.
 */
export class BlockIndexer {
  private readonly reader: TarReader;
  private readonly records: Buffer[] = [indexHeader()];
  /** Where the next header block begins in the tar stream. */
  private position = 0;
  /** The open file's record, and where its next hash goes in it. */
  private record: Buffer | null = null;
  private hashAt = 0;
  /** The start of a block whose end is still to come, so that it is hashed whole. */
  private readonly carry = Buffer.alloc(INDEX_BLOCK_SIZE);
  private carried = 0;

  constructor(private readonly label: string) {
    const sink: TarSink = { entry: (e) => this.entry(e), data: (c) => this.data(c), entryEnd: () => this.entryEnd() };
    this.reader = new TarReader(sink, label);
  }

  write(chunk: Buffer): void {
    this.reader.writeSync(chunk);
  }

  /** The index's plaintext; refuses a tar stream that did not end properly. */
  finish(): Buffer {
    this.reader.finish();
    return Buffer.concat(this.records);
  }

  private entry(e: TarEntry): void {
    // TarReader takes only one-header entries (no pax or GNU long-name headers), so the
    // layout alone gives where each content begins.
    const contentAt = this.position + TAR_BLOCK;
    this.position = contentAt + Math.ceil(e.size / TAR_BLOCK) * TAR_BLOCK;
    const path = Buffer.from(e.path, 'utf8');
    const target = e.type === 'symlink' ? Buffer.from(e.linkTarget, 'utf8') : null;
    if (path.length > 0xffff || (target && target.length > 0xffff)) throw new WalvaultError('ARCHIVE_CORRUPT', `${this.label}: a tar entry's name is too long to index (${e.path})`);
    const blocks = Math.ceil(e.size / INDEX_BLOCK_SIZE);
    const tail = e.type === 'file' ? FILE_FIXED + blocks * INDEX_HASH_LENGTH : target ? 2 + target.length : 0;
    const r = Buffer.allocUnsafe(RECORD_FIXED + path.length + tail);
    r.writeUInt8(TYPE_CODES[e.type], 0);
    r.writeUInt16BE(e.mode & 0o7777, 1);
    r.writeUInt16BE(path.length, 3);
    path.copy(r, RECORD_FIXED);
    let at = RECORD_FIXED + path.length;
    if (target) {
      r.writeUInt16BE(target.length, at);
      target.copy(r, at + 2);
    } else if (e.type === 'file') {
      r.writeBigUInt64BE(BigInt(e.size), at);
      r.writeBigUInt64BE(BigInt(contentAt), at + 8);
      this.record = r;
      this.hashAt = at + FILE_FIXED;
    }
    this.records.push(r);
  }

  private data(chunk: Buffer): void {
    let at = 0;
    if (this.carried > 0) {
      const take = Math.min(INDEX_BLOCK_SIZE - this.carried, chunk.length);
      chunk.copy(this.carry, this.carried, 0, take);
      this.carried += take;
      at = take;
      if (this.carried < INDEX_BLOCK_SIZE) return;
      this.hash(this.carry);
      this.carried = 0;
    }
    for (; chunk.length - at >= INDEX_BLOCK_SIZE; at += INDEX_BLOCK_SIZE) this.hash(chunk.subarray(at, at + INDEX_BLOCK_SIZE));
    if (at < chunk.length) this.carried = chunk.copy(this.carry, 0, at);
  }

  private entryEnd(): void {
    if (this.carried > 0) this.hash(this.carry.subarray(0, this.carried));
    this.carried = 0;
    if (this.record && this.hashAt !== this.record.length) throw new WalvaultError('INTERNAL', `${this.label}: a file's block hashes are incomplete`);
    this.record = null;
  }

  private hash(block: Buffer): void {
    const r = this.record!;
    writeBlockHash(block, r, this.hashAt);
    this.hashAt += INDEX_HASH_LENGTH;
  }
}

/** Decodes an index's plaintext; `label` names it in errors (its key, say). */
export function decodeBlockIndex(plaintext: Buffer, label: string): BlockIndex {
  const bad = (what: string) => new WalvaultError('ARCHIVE_CORRUPT', `${label}: ${what}`);
  if (plaintext.length < INDEX_HEADER_LENGTH || !plaintext.subarray(0, 4).equals(INDEX_MAGIC)) throw bad('not a walvault block index (no WVIX header)');
  const format = plaintext.readUInt32BE(4);
  if (format !== INDEX_FORMAT) throw bad(`block index format ${format} is not known (written by a newer walvault, or damaged)`);
  const blockSize = plaintext.readUInt32BE(8);
  if (blockSize === 0) throw bad('block index with a block size of 0');
  const members: IndexMember[] = [];
  let at = INDEX_HEADER_LENGTH;
  const need = (n: number, what: string) => {
    if (plaintext.length - at < n) throw bad(`block index truncated in ${what} at byte ${at}`);
  };
  const text = (length: number, what: string): string => {
    need(length, what);
    at += length;
    return plaintext.toString('utf8', at - length, at);
  };
  while (at < plaintext.length) {
    need(RECORD_FIXED, 'a record');
    const type = TYPES[plaintext[at]];
    if (type === undefined) throw bad(`unknown member type ${plaintext[at]} at byte ${at}`);
    const mode = plaintext.readUInt16BE(at + 1);
    const pathLength = plaintext.readUInt16BE(at + 3);
    at += RECORD_FIXED;
    const path = text(pathLength, 'a path');
    const member: IndexMember = { type, mode, path, size: 0, offset: 0, hashes: plaintext.subarray(at, at) };
    if (type === 'symlink') {
      need(2, `the link target of ${path}`);
      const targetLength = plaintext.readUInt16BE(at);
      at += 2;
      member.target = text(targetLength, `the link target of ${path}`);
    } else if (type === 'file') {
      need(FILE_FIXED, `the size of ${path}`);
      const size = plaintext.readBigUInt64BE(at);
      const offset = plaintext.readBigUInt64BE(at + 8);
      if (size > BigInt(Number.MAX_SAFE_INTEGER) || offset > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${path}: size or offset out of range`);
      member.size = Number(size);
      member.offset = Number(offset);
      at += FILE_FIXED;
      const length = Math.ceil(member.size / blockSize) * INDEX_HASH_LENGTH;
      need(length, `the block hashes of ${path}`);
      member.hashes = plaintext.subarray(at, at + length);
      at += length;
    }
    members.push(member);
  }
  return { blockSize, members };
}
