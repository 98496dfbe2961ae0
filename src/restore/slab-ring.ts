/**
 * A fixed set of shared-memory slabs the restore decompresses into. Each slab is counted:
 * the filler holds it while filling and parsing, and every piece handed to a writer thread
 * holds it until written. A slab is reused only when nothing holds it, so memory is bounded
 * by count x size however far the decompressor could run ahead of the disks.
 */
export class SlabRing {
  private readonly free: Buffer[] = [];
  private readonly holds = new Map<Buffer, number>();
  private readonly waiting: Array<(slab: Buffer) => void> = [];

  constructor(count: number, readonly size: number) {
    for (let i = 0; i < count; i++) this.free.push(Buffer.from(new SharedArrayBuffer(size)));
  }

  /** A free slab, held once by the caller. */
  acquire(): Promise<Buffer> {
    const slab = this.free.pop();
    if (slab) {
      this.holds.set(slab, 1);
      return Promise.resolve(slab);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  retain(slab: Buffer): void {
    this.holds.set(slab, (this.holds.get(slab) ?? 0) + 1);
  }

  release(slab: Buffer): void {
    const n = (this.holds.get(slab) ?? 0) - 1;
    if (n > 0) {
      this.holds.set(slab, n);
      return;
    }
    const next = this.waiting.shift();
    if (next) {
      this.holds.set(slab, 1);
      next(slab);
    } else {
      this.holds.delete(slab);
      this.free.push(slab);
    }
  }
}
