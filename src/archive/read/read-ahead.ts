/**
 * Lets a producer of chunks (an object being read and verified) run ahead of its consumer by
 * a bounded amount: its chunks, valid only until it produces the next, are copied into
 * owned blocks from a pool, at most `maxBytes` of them waiting, so fetching and checking the
 * next objects overlaps with the consumer's work on this one without holding any of them
 * whole (restore reads several backup parts ahead this way).
 *
 * The order and the verdict are the producer's: blocks reach the consumer in order, the last
 * one only after the producer finished (so after the object's last check), and a producer
 * failure reaches the consumer at its next request. A consumer that stops early, or cancel(),
 * stops the producer at its next chunk (push() then throws) and waits for it to let go of
 * what it reads from.
 *
 * A producer may also read into blocks it borrows (`lend`, given to it with `push`): a chunk
 * that is a view of a borrowed block is queued as it is, the block with it, and not copied
 * (a restore of an uncompressed archive moves every byte of the database, and this copy was
 * a quarter of its main thread's time). Only a block's first such view is taken that way;
 * blocks still borrowed when the producer ends go back to the pool.
 */
/** Where blocks come from: a pool of fixed-size buffers (../../util/buffer-pool.ts, or a restore's slabs). */
export interface BlockSource {
  acquire(): Buffer;
  /** Takes back a block (or a view of one) from acquire(). */
  release(block: Buffer): void;
}

/** Hands a chunk to the read-ahead; the producer may reuse it once the returned promise, if any, settles. */
export type Push = (chunk: Buffer) => void | Promise<void>;
/** A block from the pool for the producer to read into; its views pushed are then not copied. */
export type Lend = () => Buffer;

const CANCELLED = Symbol('read-ahead cancelled');

export class ReadAhead implements AsyncIterable<Buffer> {
  private readonly queue: Array<{ block: Buffer; view: Buffer }> = [];
  /** Blocks lent to the producer and not yet queued, by their memory. */
  private readonly lent = new Map<ArrayBufferLike, Buffer>();
  private held = 0;
  private block: Buffer | null = null;
  private filled = 0;
  private done = false;
  private failure: { error: unknown } | null = null;
  private cancelled = false;
  private wakeConsumer: (() => void) | null = null;
  private wakeProducer: (() => void) | null = null;
  private readonly finished: Promise<void>;

  constructor(
    produce: (push: Push, lend: Lend) => Promise<void>,
    private readonly pool: BlockSource,
    private readonly maxBytes: number,
  ) {
    this.finished = produce(
      (chunk) => this.push(chunk),
      () => this.lend(),
    ).then(
      () => {
        this.returnLent();
        if (this.filled > 0) this.flush();
        this.done = true;
      },
      (error: unknown) => {
        this.returnLent();
        if (error !== CANCELLED) this.failure = { error };
      },
    );
    this.finished.finally(() => this.wake()).catch(() => undefined);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    let last: Buffer | null = null;
    try {
      for (;;) {
        if (last) this.pool.release(last);
        last = null;
        while (this.queue.length === 0 && !this.done && this.failure === null) await new Promise<void>((resolve) => (this.wakeConsumer = resolve));
        if (this.failure !== null) throw this.failure.error;
        const next = this.queue.shift();
        if (!next) return;
        this.held -= next.view.length;
        this.resumeProducer();
        last = next.block;
        yield next.view;
      }
    } finally {
      if (last) this.pool.release(last);
      await this.cancel();
    }
  }

  /** Stops the producer and releases what waits; resolves once the producer has stopped. */
  async cancel(): Promise<void> {
    if (!this.done) this.cancelled = true;
    this.resumeProducer();
    await this.finished;
    for (const q of this.queue.splice(0)) this.pool.release(q.block);
    if (this.block) this.pool.release(this.block);
    this.block = null;
  }

  private lend(): Buffer {
    const block = this.pool.acquire();
    this.lent.set(block.buffer, block);
    return block;
  }

  private returnLent(): void {
    for (const block of this.lent.values()) this.pool.release(block);
    this.lent.clear();
  }

  private push(chunk: Buffer): void | Promise<void> {
    if (this.cancelled) throw CANCELLED;
    const borrowed = chunk.length > 0 ? this.lent.get(chunk.buffer) : undefined;
    if (borrowed !== undefined) {
      this.lent.delete(chunk.buffer);
      if (this.filled > 0) this.flush();
      this.enqueue(borrowed, chunk);
    }
    for (let at = borrowed === undefined ? 0 : chunk.length; at < chunk.length; ) {
      this.block ??= this.pool.acquire();
      const n = chunk.copy(this.block, this.filled, at);
      at += n;
      this.filled += n;
      if (this.filled === this.block.length) this.flush();
    }
    if (this.held >= this.maxBytes) {
      return new Promise<void>((resolve) => (this.wakeProducer = resolve)).then(() => {
        if (this.cancelled) throw CANCELLED;
      });
    }
  }

  private flush(): void {
    const block = this.block!;
    this.block = null;
    this.enqueue(block, block.subarray(0, this.filled));
    this.filled = 0;
  }

  private enqueue(block: Buffer, view: Buffer): void {
    this.queue.push({ block, view });
    this.held += view.length;
    this.wake();
  }

  private resumeProducer(): void {
    const w = this.wakeProducer;
    this.wakeProducer = null;
    w?.();
  }

  private wake(): void {
    const w = this.wakeConsumer;
    this.wakeConsumer = null;
    w?.();
  }
}
