/**
 * The parts of every tar a restore reads, fetched ahead in one queue that runs across tars:
 * while the last parts of one tar (or of one member of an incremental chain) are parsed, the
 * first parts of the next are already being read and verified. With a read-ahead per tar each
 * tar started cold, and a chain of four members paid that start four times: the parser
 * waited for a part's first bytes while the writer threads drained.
 *
 * Tars must be consumed in order, each once. At most `window` parts are open at once over
 * all tars, so memory stays bounded as with one tar.
 */
import { WalvaultError } from '../errors';
import type { ReadAhead } from '../archive/read/read-ahead';

export class PartPrefetch {
  private readonly opened: Array<{ tar: number; reader: ReadAhead }> = [];
  private readonly queue: Array<{ tar: number; open: () => ReadAhead }> = [];
  private current = 0;

  /** `tars[i]` opens each part of tar i, in order; an opener starts reading at once. */
  constructor(
    tars: ReadonlyArray<ReadonlyArray<() => ReadAhead>>,
    private readonly window: number,
  ) {
    tars.forEach((parts, tar) => parts.forEach((open) => this.queue.push({ tar, open })));
  }

  /** The bytes of tar `tar`'s parts, in order; the next tar's parts open as these are read. */
  async *partsOf(tar: number): AsyncGenerator<Buffer> {
    if (tar !== this.current) throw new WalvaultError('INTERNAL', `restore read tar ${tar} out of order (expected ${this.current})`);
    this.current++;
    for (;;) {
      this.fill();
      const head = this.opened[0];
      if (!head || head.tar !== tar) return;
      this.opened.shift();
      // The reader cancels itself if this generator is abandoned.
      yield* head.reader;
    }
  }

  private fill(): void {
    while (this.opened.length < this.window && this.queue.length > 0) {
      const { tar, open } = this.queue.shift()!;
      this.opened.push({ tar, reader: open() });
    }
  }

  /** Stops every read still open (a failed or finished restore); resolves once they stopped. */
  async cancel(): Promise<void> {
    this.queue.length = 0;
    await Promise.all(this.opened.splice(0).map((o) => o.reader.cancel()));
  }
}
