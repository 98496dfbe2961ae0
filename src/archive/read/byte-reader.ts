/**
 * The first stage of every read: takes exact-length pieces off a stored object's chunks as
 * they arrive (Storage.openRead: one request, chunks of any size), so the format parsers
 * above it ask for "the next 8 bytes" or "the next frame" and never see chunk boundaries.
 *
 * A piece inside one chunk is a view of it; a piece spanning chunks is assembled in one
 * reused buffer (at most the largest piece asked for: a frame). Either is valid only until
 * the next read, as the chunks it comes from are (a backend may refill its buffer), so
 * memory stays at a chunk and a frame whatever the object's size.
 *
 * `size` is what the store announced (file size, Content-Length): the parsers check the
 * object's layout against it before reading, so a truncated object is named before any of
 * its body is used. A stream that ends short of it, or runs past it, changed while it was
 * read (a torn read of an object being replaced): that is ARCHIVE_CORRUPT too.
 */
import { WalvaultError } from '../../errors';

const EMPTY = Buffer.alloc(0);

export class ByteReader {
  private readonly source: AsyncIterator<Buffer>;
  private chunk: Buffer = EMPTY;
  private at = 0;
  private assembly: Buffer | null = null;
  private ended = false;
  private received = 0;
  /** Bytes handed out so far: the offset in the object of the next byte. */
  offset = 0;

  constructor(
    chunks: AsyncIterable<Buffer>,
    /** The object's size as its store announced it. */
    readonly size: number,
    private readonly label: string,
  ) {
    this.source = chunks[Symbol.asyncIterator]();
  }

  /** Bytes of the announced size not yet handed out. */
  get remaining(): number {
    return this.size - this.offset;
  }

  /** Exactly `n` bytes (no more than `remaining`): a view valid until the next read. */
  async read(n: number): Promise<Buffer> {
    this.within(n);
    if (n === 0) return EMPTY;
    if ((await this.fill()) && this.chunk.length - this.at >= n) return this.take(n);
    if (this.assembly === null || this.assembly.length < n) this.assembly = Buffer.allocUnsafeSlow(Math.max(n, 64 * 1024));
    const out = this.assembly;
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) throw this.cutShort();
      const piece = this.take(Math.min(n - got, this.chunk.length - this.at));
      piece.copy(out, got);
      got += piece.length;
    }
    return out.subarray(0, n);
  }

  /** Between 1 and `max` bytes (`max` > 0, at most `remaining`): what the current chunk holds, as a view. */
  async readSome(max: number): Promise<Buffer> {
    this.within(max);
    if (!(await this.fill())) throw this.cutShort();
    return this.take(Math.min(max, this.chunk.length - this.at));
  }

  /** The object must end here: every announced byte read and nothing after it. */
  async end(): Promise<void> {
    if (this.offset !== this.size) throw new WalvaultError('INTERNAL', `${this.label}: the reader stopped at byte ${this.offset} of ${this.size}`);
    if (await this.fill()) throw this.overrun();
  }

  /** Releases the source (the request or the file), however far it was read. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.source.return?.();
  }

  private within(n: number): void {
    if (n < 0 || n > this.remaining) throw new WalvaultError('INTERNAL', `${this.label}: asked for ${n} bytes at byte ${this.offset} of ${this.size}`);
  }

  private take(n: number): Buffer {
    const view = this.chunk.subarray(this.at, this.at + n);
    this.at += n;
    this.offset += n;
    return view;
  }

  /** Whether a byte is ready in the current chunk (the next one pulled when it is used up); false at the end. */
  private async fill(): Promise<boolean> {
    while (this.at >= this.chunk.length) {
      if (this.ended) return false;
      const next = await this.source.next();
      if (next.done) {
        this.ended = true;
        this.chunk = EMPTY;
        this.at = 0;
        return false;
      }
      this.chunk = next.value;
      this.at = 0;
      this.received += next.value.length;
      if (this.received > this.size) throw this.overrun();
    }
    return true;
  }

  private cutShort(): WalvaultError {
    return new WalvaultError('ARCHIVE_CORRUPT', `${this.label}: truncated while it was read: it ended at byte ${this.received}, but its store announced ${this.size} bytes (was it replaced meanwhile?)`);
  }

  private overrun(): WalvaultError {
    return new WalvaultError('ARCHIVE_CORRUPT', `${this.label}: its store sent more than the ${this.size} bytes it announced (was it replaced while it was read?)`);
  }
}
