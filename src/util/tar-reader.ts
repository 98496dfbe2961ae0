/**
 * A streaming reader for the tar archives PostgreSQL's BASE_BACKUP writes: POSIX ustar
 * headers, names up to 99 bytes with the `prefix` field for longer paths, regular files,
 * directories and symbolic links. Bytes go in as they come; entries come out as events,
 * file contents in pieces (views valid only during the call), so memory stays bounded.
 *
 * ustar header, 512 bytes:
 *    0  name[100]      NUL-terminated unless 100 long
 *  100  mode[8]        octal
 *  124  size[12]       octal (or base-256 with the top bit set)
 *  148  chksum[8]      octal sum of the header bytes, the field itself counted as spaces
 *  156  typeflag       '0'/NUL file, '5' directory, '2' symlink
 *  157  linkname[100]
 *  257  magic[6]       "ustar"
 *  345  prefix[155]    path before name, joined with '/'
 * Contents follow in 512-byte blocks; two zero blocks end the archive.
 */
import { WalvaultError } from '../errors';

export type TarEntryType = 'file' | 'directory' | 'symlink';

export interface TarEntry {
  path: string;
  type: TarEntryType;
  mode: number;
  size: number;
  linkTarget: string;
}

export interface TarSink {
  entry(e: TarEntry): void | Promise<void>;
  data(chunk: Buffer): void | Promise<void>;
  entryEnd(): void | Promise<void>;
}

/** Header and content block size: an entry is one header block, then its content padded to whole blocks. */
export const TAR_BLOCK = 512;

function field(h: Buffer, at: number, len: number): string {
  const end = h.indexOf(0, at);
  return h.toString('utf8', at, end >= 0 && end < at + len ? end : at + len);
}

function octal(h: Buffer, at: number, len: number, what: string, label: string): number {
  if (h[at] & 0x80) {
    let n = 0;
    for (let i = at + 1; i < at + len; i++) n = n * 256 + h[i];
    return n;
  }
  const text = h.toString('ascii', at, at + len).replace(/[\0 ]+$/, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: malformed ${what} field in a tar header`);
  return parseInt(text, 8);
}

/** Checks and decodes one header block; null for a zero block (the end). */
function parseTarHeader(h: Buffer, label: string): TarEntry | null {
  if (h.every((b) => b === 0)) return null;
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  const stored = octal(h, 148, 8, 'checksum', label);
  if (stored !== sum) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: tar header checksum mismatch (damaged archive)`);
  const name = field(h, 0, 100);
  const prefix = h.toString('ascii', 257, 262) === 'ustar' ? field(h, 345, 155) : '';
  const path = prefix ? `${prefix}/${name}` : name;
  const flag = String.fromCharCode(h[156] || 0x30);
  const type: TarEntryType | null = flag === '0' || flag === '7' ? 'file' : flag === '5' ? 'directory' : flag === '2' ? 'symlink' : null;
  if (!type) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: unsupported tar entry type '${flag}' for ${path}`);
  const clean = path.replace(/\/+$/, '');
  if (clean === '' || clean.startsWith('/') || clean.split('/').some((p) => p === '..')) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: refusing tar entry with path ${JSON.stringify(path)}`);
  }
  return { path: clean, type, mode: octal(h, 100, 8, 'mode', label) & 0o7777, size: type === 'file' ? octal(h, 124, 12, 'size', label) : 0, linkTarget: type === 'symlink' ? field(h, 157, 100) : '' };
}

/** Feeds a tar stream to a sink; `finish` checks the archive ended properly. */
export class TarReader {
  private header = Buffer.alloc(TAR_BLOCK);
  private headerHave = 0;
  /** Bytes of the current entry's content still to come, then its padding. */
  private remaining = 0;
  private padding = 0;
  private ended = false;

  constructor(
    private readonly sink: TarSink,
    private readonly label: string,
  ) {}

  /** Takes the next bytes; awaits the sink where it returns promises (backpressure). */
  async write(chunk: Buffer): Promise<void> {
    for (const pending of this.steps(chunk)) if (pending) await pending;
  }

  /**
   * Takes the next bytes, all of them before it returns, for a sink that never returns a
   * promise: a caller that reuses `chunk` once the call returns (a socket's read buffer)
   * needs no copy, and calls need no chaining to stay in order.
   */
  writeSync(chunk: Buffer): void {
    for (const pending of this.steps(chunk)) {
      if (pending) throw new WalvaultError('INTERNAL', `${this.label}: a synchronous tar sink returned a promise`);
    }
  }

  /** The work of one chunk: yields each sink call's result, to be settled before the next step. */
  private *steps(chunk: Buffer): Generator<void | Promise<void>> {
    let at = 0;
    while (at < chunk.length) {
      if (this.ended) {
        // After the end blocks only zero padding may follow (tar pads to a record size).
        if (chunk.subarray(at).some((b) => b !== 0)) throw new WalvaultError('ARCHIVE_CORRUPT', `${this.label}: data after the end of the tar archive`);
        return;
      }
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - at);
        yield this.sink.data(chunk.subarray(at, at + take));
        this.remaining -= take;
        at += take;
        if (this.remaining === 0) {
          yield this.sink.entryEnd();
        }
        continue;
      }
      if (this.padding > 0) {
        const take = Math.min(this.padding, chunk.length - at);
        this.padding -= take;
        at += take;
        continue;
      }
      const take = Math.min(TAR_BLOCK - this.headerHave, chunk.length - at);
      chunk.copy(this.header, this.headerHave, at, at + take);
      this.headerHave += take;
      at += take;
      if (this.headerHave < TAR_BLOCK) continue;
      this.headerHave = 0;
      const e = parseTarHeader(this.header, this.label);
      if (!e) {
        this.ended = true;
        continue;
      }
      yield this.sink.entry(e);
      if (e.size > 0) {
        this.remaining = e.size;
        this.padding = (TAR_BLOCK - (e.size % TAR_BLOCK)) % TAR_BLOCK;
      } else {
        yield this.sink.entryEnd();
      }
    }
  }

  finish(): void {
    if (!this.ended || this.remaining > 0 || this.headerHave > 0) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${this.label}: the tar archive is truncated (no end-of-archive blocks)`);
    }
  }
}
