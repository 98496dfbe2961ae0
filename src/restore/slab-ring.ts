/**
 * A fixed set of shared-memory slabs the restore decompresses into. Each slab is counted:
 * the filler holds it while filling and parsing, and every piece handed to a writer thread
 * holds it until written. A slab is reused only when nothing holds it, so memory is bounded
 * by count x size however far the decompressor could run ahead of the disks.
 *
 * The memory is one shared WebAssembly memory: V8 maps it page-aligned, so with a size that
 * is a multiple of the page every slab starts on a page boundary, and a piece at a
 * 512-aligned offset in it can be written with O_DIRECT (see ./file-writers.ts). A plain
 * SharedArrayBuffer gives no alignment guarantee.
 */
const WASM_PAGE = 64 * 1024;

/** The one WebAssembly API used here (the compile target's libs do not declare it). */
const { WebAssembly } = globalThis as unknown as {
  WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: true }) => { buffer: SharedArrayBuffer } };
};

export class SlabRing {
  private readonly free: Buffer[] = [];
  private readonly holds = new Map<Buffer, number>();
  private readonly waiting: Array<(slab: Buffer) => void> = [];

  constructor(count: number, readonly size: number) {
    if (size % WASM_PAGE !== 0) throw new Error(`slab size ${size} is not a multiple of ${WASM_PAGE}`);
    const pages = (count * size) / WASM_PAGE;
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    const all = Buffer.from(memory.buffer);
    for (let i = 0; i < count; i++) this.free.push(all.subarray(i * size, (i + 1) * size));
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
