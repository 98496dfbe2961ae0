/**
 * Each frame's payload through the object's codec (../codecs.ts) into its plaintext, which
 * must be exactly as long as the frame header says; a payload that does not decompress is
 * damage (ARCHIVE_CORRUPT naming the frame). Codec "none" (an encrypted, uncompressed body)
 * passes the payload on as it is.
 *
 * zstd (the usual codec) decompresses into one reused buffer, valid until the next frame is
 * asked for: a fresh buffer per frame would leave a frame of garbage behind each time, and
 * V8 collects such external memory late, so a large object's read would grow with its size.
 * The other codecs' native calls allocate their output.
 */
import { WalvaultError } from '../../errors';
import type { Codec } from '../codecs';
import { FRAME_PLAINTEXT_MAX } from '../framed-body';
import type { Frame } from './frame-reader';

export async function* decompressFrames(frames: AsyncIterable<Frame>, codec: Codec, label: string): AsyncGenerator<Buffer> {
  const zstd = codec.name === 'zstd' ? zstdInto() : null;
  for await (const f of frames) {
    let plain: Buffer;
    if (codec.name === 'none') {
      plain = f.payload;
    } else if (zstd) {
      try {
        plain = zstd(f.payload);
      } catch (err) {
        throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: frame ${f.index} does not decompress with zstd (${(err as Error).message})`, { cause: err });
      }
    } else {
      try {
        plain = await codec.decompress(f.payload, f.plainLength);
      } catch (err) {
        throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: frame ${f.index} does not decompress with ${codec.name} (${(err as Error).message})`, { cause: err });
      }
    }
    if (plain.length !== f.plainLength) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: frame ${f.index} decompressed to ${plain.length} bytes, its header says ${f.plainLength}`);
    }
    yield plain;
  }
}

/** zstd into one reused frame-sized buffer: the payload's plaintext as a view of it. */
function zstdInto(): (payload: Buffer) => Buffer {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { DCtx } = require('zstd-napi/binding') as typeof import('zstd-napi/binding');
  const dctx = new DCtx();
  const out = Buffer.allocUnsafeSlow(FRAME_PLAINTEXT_MAX);
  // A payload whose content is larger than a frame fails here ("destination buffer too small").
  return (payload) => out.subarray(0, dctx.decompress(out, payload));
}
