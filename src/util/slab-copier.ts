/**
 * Copies many small-to-medium buffers into a few large slabs. Each copy is a view into a
 * slab, so a stream of 128 KiB messages costs one allocation per slab instead of one per
 * message, which keeps the garbage collector out of the receive path.
 */
export class SlabCopier {
  private slab: Buffer | null = null;
  private used = 0;

  constructor(private readonly slabSize = 4 * 1024 * 1024) {}

  copy(src: Uint8Array): Buffer {
    if (src.length > this.slabSize / 4) return Buffer.from(src);
    if (this.slab === null || this.used + src.length > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(this.slabSize);
      this.used = 0;
    }
    const view = this.slab.subarray(this.used, this.used + src.length);
    view.set(src);
    this.used += src.length;
    return view;
  }
}
