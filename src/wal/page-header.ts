/**
 * WAL page header checks, applied to every page of a segment before it is called complete.
 *
 * Page layout (server byte order: little-endian on x86-64/ARM64, detected from the magic):
 *   short header, every page, 24 bytes:
 *     0  u16 xlp_magic      XLOG_PAGE_MAGIC of the server's major version
 *     2  u16 xlp_info       flags; only 0x000F may be set
 *     4  u32 xlp_tli        timeline of the first record on the page
 *     8  u64 xlp_pageaddr   LSN of the page's first byte
 *    16  u32 xlp_rem_len    bytes of a record continued from the previous page
 *    20  u32 padding
 *   long header, first page of each segment (flag 0x0002), 40 bytes:
 *    24  u64 xlp_sysid      system identifier (IDENTIFY_SYSTEM systemid)
 *    32  u32 xlp_seg_size   wal_segment_size
 *    36  u32 xlp_xlog_blcksz  wal_block_size
 *
 * After an XLOG_SWITCH record the rest of the segment is zero, headers included: once an
 * all-zero header is seen, every following byte must be zero too.
 */
import { WalvaultError } from '../errors';
import { formatLsn, isSegmentFileName, parseSegmentFileName, segmentStartOfNumber, type Lsn } from './lsn';

export const XLP_FIRST_IS_CONTRECORD = 0x0001;
export const XLP_LONG_HEADER = 0x0002;
const XLP_ALL_FLAGS = 0x000f;

const PAGE_MAGIC_BY_MAJOR: Record<number, number> = {
  11: 0xd098,
  12: 0xd101,
  13: 0xd106,
  14: 0xd10d,
  15: 0xd110,
  16: 0xd113,
  17: 0xd116,
  18: 0xd118,
};

export function pageMagicForMajor(major: number): number {
  const magic = PAGE_MAGIC_BY_MAJOR[major];
  if (magic === undefined) {
    throw new WalvaultError(
      'PG_UNSUPPORTED_VERSION',
      `PostgreSQL major version ${major} is not supported (supported: 13 to 18)`,
    );
  }
  return magic;
}

export interface PageCheckContext {
  /** Expected XLOG_PAGE_MAGIC. */
  magic: number;
  systemId: bigint;
  segSize: number;
  blockSize: number;
  /** The timeline in the file name: pages may carry an older (parent) timeline, never a newer one. */
  fileTli: number;
  /** Name used in error messages. */
  label: string;
}

export type Endianness = 'le' | 'be';

export function detectEndianness(buf: Buffer, magic: number): Endianness | null {
  if (buf.length < 2) return null;
  if (buf.readUInt16LE(0) === magic) return 'le';
  if (buf.readUInt16BE(0) === magic) return 'be';
  return null;
}

function isZero(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

const LONG_HEADER_SIZE = 40;
const SHORT_HEADER_SIZE = 24;

/**
 * Checks page headers as a segment's bytes arrive, in order, in chunks of any size, so a
 * segment is verified in the same pass that writes it (no read-back, no segment-sized
 * buffer). Header bytes split across chunks are carried over.
 */
export class PageChecker {
  private readonly header = Buffer.alloc(LONG_HEADER_SIZE);
  private endian: Endianness | null = null;
  private lastTli = 0;
  private zeroTail = false;
  private position = 0;

  constructor(
    private readonly segStart: Lsn,
    private readonly ctx: PageCheckContext,
  ) {}

  /** Bytes checked so far, from offset 0 of the segment. */
  get checkedBytes(): number {
    return this.position;
  }

  feed(chunk: Buffer): void {
    const { blockSize } = this.ctx;
    const end = this.position + chunk.length;
    if (end > this.ctx.segSize) throw new RangeError(`${this.ctx.label}: ${end} bytes exceed the segment size`);
    let pos = this.position;
    while (pos < end) {
      const pageOff = pos - (pos % blockSize);
      const headerLen = pageOff === 0 ? LONG_HEADER_SIZE : SHORT_HEADER_SIZE;
      const inPage = pos - pageOff;
      if (inPage < headerLen) {
        const take = Math.min(headerLen - inPage, end - pos);
        const from = pos - this.position;
        chunk.copy(this.header, inPage, from, from + take);
        if (this.zeroTail && !isZero(chunk, from, from + take)) this.bad(pageOff, 'has non-zero bytes after the zero-filled end of the WAL');
        pos += take;
        if (inPage + take === headerLen) this.checkHeader(pageOff, headerLen);
      } else {
        const next = Math.min(pageOff + blockSize, end);
        if (this.zeroTail && !isZero(chunk, pos - this.position, next - this.position)) {
          this.bad(pageOff, 'has non-zero bytes after the zero-filled end of the WAL');
        }
        pos = next;
      }
    }
    this.position = end;
  }

  private bad(pageOffset: number, why: string): never {
    throw new WalvaultError(
      'WAL_BAD_PAGE',
      `${this.ctx.label}: page at offset ${pageOffset} (${formatLsn(this.segStart + BigInt(pageOffset))}) ${why}`,
    );
  }

  private checkHeader(off: number, headerLen: number): void {
    const h = this.header;
    const ctx = this.ctx;
    if (this.zeroTail) return;
    if (isZero(h, 0, SHORT_HEADER_SIZE)) {
      if (off === 0) this.bad(off, 'has an empty header at the start of the segment');
      // After XLOG_SWITCH the server zero-fills the rest of the segment, headers included.
      if (headerLen > SHORT_HEADER_SIZE && !isZero(h, SHORT_HEADER_SIZE, headerLen)) this.bad(off, 'has a half-empty header');
      this.zeroTail = true;
      return;
    }
    if (this.endian === null) {
      this.endian = detectEndianness(h, ctx.magic);
      if (this.endian === null) this.bad(off, `has magic 0x${h.readUInt16LE(0).toString(16)}, expected 0x${ctx.magic.toString(16)}`);
    }
    const le = this.endian === 'le';
    const u16 = (o: number) => (le ? h.readUInt16LE(o) : h.readUInt16BE(o));
    const u32 = (o: number) => (le ? h.readUInt32LE(o) : h.readUInt32BE(o));
    const u64 = (o: number) => (le ? h.readBigUInt64LE(o) : h.readBigUInt64BE(o));

    const magic = u16(0);
    if (magic !== ctx.magic) this.bad(off, `has magic 0x${magic.toString(16)}, expected 0x${ctx.magic.toString(16)}`);
    const info = u16(2);
    if ((info & ~XLP_ALL_FLAGS) !== 0) this.bad(off, `has unknown flag bits 0x${info.toString(16)}`);
    const tli = u32(4);
    // The first segment of a new timeline starts as a copy of the parent's, so older TLIs are fine.
    if (tli === 0 || tli > ctx.fileTli) this.bad(off, `has timeline ${tli}, expected at most ${ctx.fileTli}`);
    if (tli < this.lastTli) this.bad(off, `has timeline ${tli} after a page of timeline ${this.lastTli}`);
    this.lastTli = tli;
    const pageAddr = u64(8);
    const expected = this.segStart + BigInt(off);
    if (pageAddr !== expected) {
      this.bad(off, `has address ${formatLsn(pageAddr)}, expected ${formatLsn(expected)} (a stale or misplaced page)`);
    }
    if (off === 0) {
      if ((info & XLP_LONG_HEADER) === 0) this.bad(off, 'lacks the long header a segment must start with');
      const sysid = u64(24);
      if (sysid !== ctx.systemId) this.bad(off, `belongs to database system ${sysid}, expected ${ctx.systemId}`);
      const segSize = u32(32);
      if (segSize !== ctx.segSize) this.bad(off, `says segment size ${segSize}, expected ${ctx.segSize}`);
      const blck = u32(36);
      if (blck !== ctx.blockSize) this.bad(off, `says block size ${blck}, expected ${ctx.blockSize}`);
    } else if ((info & XLP_LONG_HEADER) !== 0) {
      this.bad(off, 'has a long header in the middle of a segment');
    }
  }
}

/**
 * Checks the page headers of the first `validLength` bytes of a segment held in `data`
 * (validLength == segSize for a complete segment). Throws WAL_BAD_PAGE naming the page.
 */
export function verifySegmentPages(data: Buffer, validLength: number, segStart: Lsn, ctx: PageCheckContext): void {
  if (validLength > data.length) throw new RangeError(`validLength ${validLength} exceeds the buffer`);
  new PageChecker(segStart, ctx).feed(data.subarray(0, validLength));
}

const MAJORS = [13, 14, 15, 16, 17, 18];

export interface LongPageHeader {
  major: number;
  systemId: bigint;
  segSize: number;
  blockSize: number;
  /** The first page's xlp_tli and xlp_pageaddr: which timeline and position the bytes are. */
  tli: number;
  pageAddr: Lsn;
}

/** A segment's first page's long header, whichever supported major and byte order wrote it. */
export function readLongPageHeader(data: Buffer, label: string): LongPageHeader {
  for (const major of MAJORS) {
    const magic = pageMagicForMajor(major);
    const endian = detectEndianness(data, magic);
    if (!endian || data.length < 40) continue;
    const le = endian === 'le';
    return {
      major,
      systemId: le ? data.readBigUInt64LE(24) : data.readBigUInt64BE(24),
      segSize: le ? data.readUInt32LE(32) : data.readUInt32BE(32),
      blockSize: le ? data.readUInt32LE(36) : data.readUInt32BE(36),
      tli: le ? data.readUInt32LE(4) : data.readUInt32BE(4),
      pageAddr: le ? data.readBigUInt64LE(8) : data.readBigUInt64BE(8),
    };
  }
  throw new WalvaultError('WAL_BAD_PAGE', `${label} does not start with a WAL page header of PostgreSQL 13 to 18`, { fix: `pass a WAL segment file (what PostgreSQL names %p), or check that this one is not damaged` });
}

/**
 * Checks the WAL file `name` (a segment, or `NAME.partial`) held in `data`: its first page's
 * long header, the size of a complete segment, and the header of every whole page against
 * that long header and the timeline in the name (a partial may end inside a page). Returns
 * the long header, whose system identifier and sizes the caller compares with what it
 * expects. Throws WAL_BAD_PAGE naming `label`.
 */
export function checkWalFile(data: Buffer, name: string, label: string): LongPageHeader {
  const checker = new WalFileChecker(name, data.length, label);
  checker.feed(data);
  return checker.finish();
}

/**
 * checkWalFile as the file's `length` bytes arrive, in chunks of any size (a file streamed
 * from the archive): the first page's long header is taken from the first bytes, handed to
 * `onLongHeader` (the caller's checks of what it says), and then every page is checked as it
 * passes. finish() once all `length` bytes were fed.
 */
export class WalFileChecker {
  private readonly head = Buffer.alloc(LONG_HEADER_SIZE);
  private headFilled = 0;
  private pages: PageChecker | null = null;
  /** Bytes the page checker is to see: a partial's last, incomplete page is not checked. */
  private valid = 0;
  private fed = 0;
  private longHeader: LongPageHeader | null = null;

  constructor(
    private readonly name: string,
    private readonly length: number,
    private readonly label: string,
    private readonly onLongHeader?: (h: LongPageHeader) => void,
  ) {}

  feed(chunk: Buffer): void {
    let from = 0;
    if (this.headFilled < LONG_HEADER_SIZE) {
      from = chunk.copy(this.head, this.headFilled, 0, Math.min(chunk.length, LONG_HEADER_SIZE - this.headFilled));
      this.headFilled += from;
      if (this.headFilled === LONG_HEADER_SIZE) this.start(Math.min(this.length, LONG_HEADER_SIZE));
      else return;
    }
    this.check(chunk.subarray(from));
  }

  finish(): LongPageHeader {
    // Shorter than a long header: the reader says what it is not.
    if (this.longHeader === null) readLongPageHeader(this.head.subarray(0, this.headFilled), this.label);
    if (this.fed !== this.valid) throw new WalvaultError('INTERNAL', `${this.label}: ${this.fed} of its ${this.valid} bytes of whole pages were checked`);
    return this.longHeader!;
  }

  private start(headBytes: number): void {
    const h = readLongPageHeader(this.head, this.label);
    this.onLongHeader?.(h);
    const complete = isSegmentFileName(this.name);
    const { tli, segNo } = parseSegmentFileName(this.name.slice(0, 24), h.segSize);
    if (complete && this.length !== h.segSize) {
      throw new WalvaultError('WAL_BAD_PAGE', `${this.label} is ${this.length} bytes, but its header says segments are ${h.segSize}: not a whole segment`);
    }
    this.valid = complete ? this.length : this.length - (this.length % h.blockSize);
    this.pages = new PageChecker(segmentStartOfNumber(segNo, h.segSize), {
      magic: pageMagicForMajor(h.major),
      systemId: h.systemId,
      segSize: h.segSize,
      blockSize: h.blockSize,
      fileTli: tli,
      label: this.label,
    });
    this.longHeader = h;
    this.check(this.head.subarray(0, headBytes));
  }

  private check(bytes: Buffer): void {
    const take = Math.min(bytes.length, this.valid - this.fed);
    if (take <= 0 || this.pages === null) return;
    this.pages.feed(bytes.subarray(0, take));
    this.fed += take;
  }
}
