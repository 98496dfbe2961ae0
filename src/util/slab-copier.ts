import { BufferPool } from './buffer-pool';

/**
 * Copies many small-to-medium buffers into a few large slabs. Each copy is a view into a
 * slab, so a stream of 128 KiB messages costs no allocation per message; once every view of
 * a slab has been released, the slab goes back to a pool and is filled again, so a steady
 * stream allocates nothing at all.
 */
export class SlabCopier {
  private current: Slab | null = null;
  private readonly slabs = new Map<ArrayBufferLike, Slab>();
  private readonly pool: BufferPool;

  constructor(
    private readonly slabSize = 4 * 1024 * 1024,
    keepIdle = 4,
  ) {
    this.pool = new BufferPool(slabSize, keepIdle);
  }

  /** A copy of `src`: a slab view, or (for a large src) a buffer of its own. */
  copy(src: Uint8Array): Buffer {
    if (src.length > this.slabSize / 4) return Buffer.from(src);
    let slab = this.current;
    if (slab === null || slab.used + src.length > slab.buf.length) {
      if (slab !== null) this.retire(slab);
      slab = { buf: this.pool.acquire(), used: 0, views: 0, retired: false };
      this.slabs.set(slab.buf.buffer, slab);
      this.current = slab;
    }
    const view = slab.buf.subarray(slab.used, slab.used + src.length);
    view.set(src);
    slab.used += src.length;
    slab.views++;
    return view;
  }

  /**
   * Declares a copy no longer used (written out). Releasing something that is not a live
   * copy is ignored, so callers need not track which copies came from a slab.
   */
  release(view: Buffer): void {
    const slab = this.slabs.get(view.buffer);
    if (slab === undefined || slab.views === 0) return;
    slab.views--;
    if (slab.views > 0) return;
    if (slab.retired) this.recycle(slab);
    else slab.used = 0; // the slab being filled is empty again: refill it from the start

  }

  /** Slabs currently holding live copies (for tests and status). */
  get liveSlabs(): number {
    return this.slabs.size;
  }

  private retire(slab: Slab): void {
    slab.retired = true;
    if (slab.views === 0) this.recycle(slab);
  }

  private recycle(slab: Slab): void {
    this.slabs.delete(slab.buf.buffer);
    this.pool.release(slab.buf);
  }
}

interface Slab {
  buf: Buffer;
  used: number;
  views: number;
  /** No longer the slab being filled: free once its views are released. */
  retired: boolean;
}
