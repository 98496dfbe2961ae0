/**
 * The shared-memory slabs a restore's tar bytes live in, from the read of a backup part to
 * the writer threads. Each slab is counted: its reader holds it while filling it, the parser
 * while parsing it, and every piece handed to a writer thread until written. A slab is
 * reused only when nothing holds it.
 *
 * Two ways to get one:
 * - acquire() waits until fewer than `limit` slabs are held: the decompressor, which could
 *   otherwise run ahead of the disks without bound, fills slabs got this way;
 * - take() never waits: the read-ahead of parts (../archive/read/read-ahead.ts), which has
 *   its own bound in bytes, reads into slabs got this way, and an uncompressed archive's
 *   slabs go to the parser and the writers as they are, with no copy.
 * The parser waits for below(limit) before taking more, so memory stays bounded by the
 * read-ahead's bytes plus `limit` slabs however far the disks fall behind.
 *
 * Slabs are plain SharedArrayBuffers: writes go through the page cache (./file-writers.ts),
 * so no alignment is needed.
 */
export class SlabRing {
  private readonly free: Buffer[] = [];
  /** Keyed by the memory, so any view of a slab counts as the slab. */
  private readonly holds = new Map<ArrayBufferLike, number>();
  /** Each returns true once it could proceed (and did), in arrival order. */
  private readonly waiting: Array<() => boolean> = [];

  constructor(
    readonly limit: number,
    readonly size: number,
  ) {}

  /** Slabs held now. */
  get held(): number {
    return this.holds.size;
  }

  /** A slab held once by the caller, at once (beyond `limit` if need be). */
  take(): Buffer {
    const slab = this.free.pop() ?? Buffer.from(new SharedArrayBuffer(this.size));
    this.holds.set(slab.buffer, 1);
    return slab;
  }

  /** A slab held once by the caller, once fewer than `limit` are held. */
  acquire(): Promise<Buffer> {
    return this.when(this.limit, () => this.take());
  }

  /** Resolves once fewer than `n` slabs are held. */
  below(n: number): Promise<void> {
    return this.when(n, () => undefined);
  }

  /** Runs `proceed` once fewer than `n` slabs are held, after every earlier waiter. */
  private when<T>(n: number, proceed: () => T): Promise<T> {
    if (this.waiting.length === 0 && this.holds.size < n) return Promise.resolve(proceed());
    return new Promise((resolve) =>
      this.waiting.push(() => {
        if (this.holds.size >= n) return false;
        resolve(proceed());
        return true;
      }),
    );
  }

  /** One more hold on the slab `view` is a view of. */
  retain(view: Uint8Array): void {
    this.holds.set(view.buffer, (this.holds.get(view.buffer) ?? 0) + 1);
  }

  release(view: Uint8Array): void {
    const memory = view.buffer;
    const n = (this.holds.get(memory) ?? 0) - 1;
    if (n > 0) {
      this.holds.set(memory, n);
      return;
    }
    this.holds.delete(memory);
    if (this.free.length < this.limit) this.free.push(Buffer.from(memory));
    while (this.waiting.length > 0 && this.waiting[0]()) this.waiting.shift();
  }
}
