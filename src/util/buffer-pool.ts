/**
 * Fixed-size buffers handed out and taken back. Buffers that live across awaits (windows of a
 * file being uploaded, slabs of received WAL) would otherwise be promoted to V8's old space
 * and freed only by a full collection, which V8 starts after ~64 MiB of such garbage: reusing
 * them keeps a busy receiver's memory near what it actually holds.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  /**
   * `keep`: how many idle buffers to hold on to; more are left to the garbage collector.
   * `shared`: buffers in shared memory, which worker threads read and write in place (no copy
   * into or out of a worker).
   */
  constructor(
    readonly size: number,
    private readonly keep: number,
    private readonly opts: { shared?: boolean } = {},
  ) {}

  acquire(): Buffer {
    return this.free.pop() ?? (this.opts.shared ? Buffer.from(new SharedArrayBuffer(this.size)) : Buffer.allocUnsafeSlow(this.size));
  }

  /** Gives back a buffer from `acquire`; the caller must hold no view of it any more. */
  release(buf: Buffer): void {
    if (buf.length === this.size && buf.byteOffset === 0 && this.free.length < this.keep && !this.free.includes(buf)) {
      this.free.push(buf);
    }
  }

  get idle(): number {
    return this.free.length;
  }
}
