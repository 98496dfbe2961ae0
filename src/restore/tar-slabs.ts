/**
 * The tar bytes of one backup archive, in slabs of shared memory: decompressed straight into
 * them when the server compressed the archive (zstd); otherwise the blocks the parts were
 * read into are slabs of the same ring already and go on as they are (an uncompressed
 * restore moves every byte of the database, and a copy here was a third of its main
 * thread's time). The consumer gets each slab (held once for it) and the filled view, in
 * order; it releases the slab when done with it. It is handed one only while fewer slabs than
 * the ring's limit are held, so the writers' backlog stays bounded.
 */
import { WalvaultError } from '../errors';
import type { SlabRing } from './slab-ring';

export type SlabConsumer = (slab: Buffer, filled: Buffer) => Promise<void>;

export async function fillSlabs(parts: AsyncIterable<Buffer>, compression: 'zstd' | null, ring: SlabRing, consume: SlabConsumer, label: string): Promise<void> {
  if (compression === null) {
    // Each block is a slab of `ring` the read-ahead holds until the next is asked for.
    for await (const block of parts) {
      await ring.below(ring.limit);
      ring.retain(block);
      await consume(block, block);
    }
    return;
  }
  let slab = await ring.acquire();
  let fill = 0;
  const flush = async () => {
    const full = slab;
    const n = fill;
    await consume(full, full.subarray(0, n));
    slab = await ring.acquire();
    fill = 0;
  };
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { DCtx } = require('zstd-napi/binding') as typeof import('zstd-napi/binding');
  const dctx = new DCtx();
  // ZSTD_decompressStream's hint: 0 once a frame is complete and fully flushed.
  let hint = 0;
  let any = false;
  for await (const part of parts) {
    let at = 0;
    for (;;) {
      const room = slab.length - fill;
      let produced: number;
      let consumed: number;
      try {
        [hint, produced, consumed] = dctx.decompressStream(slab.subarray(fill), part.subarray(at));
      } catch (err) {
        throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: the zstd stream is damaged (${(err as Error).message})`, { cause: err });
      }
      any = true;
      at += consumed;
      fill += produced;
      if (fill === slab.length) await flush();
      // More output may wait inside zstd only when the output filled up.
      else if (at >= part.length && produced < room) break;
    }
  }
  if (!any || hint !== 0) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: the zstd stream ends in the middle of a frame (truncated)`);
  if (fill > 0) await consume(slab, slab.subarray(0, fill));
  else ring.release(slab);
}
