/**
 * A streamed object to Azure Blob Storage with one copy per byte: each chunk is copied once,
 * into a pooled block buffer, and the block buffer is the request body. An object that fits
 * in one block goes up in one Put Blob; a larger one as blocks (Put Block, a bounded number in
 * flight, then Put Block List, which makes the blob in one step). A failed upload commits
 * nothing: its staged blocks never become part of a blob, and Azure discards them (a week
 * later); an older blob under the key stays as it was.
 *
 * Over plain http (Azurite, a proxy) nothing else keeps the store from taking a body altered
 * on the way (the shared-key signature leaves the body out), so each request then carries the
 * body's MD5, which the store checks (Content-MD5); over https, TLS does that and the archive
 * reads every object back against its own SHA-256.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { BlockBlobClient } from '@azure/storage-blob';
import type { BufferPool } from '../util/buffer-pool';
import { fillParts, PartsInFlight } from './part-filler';
import type { ObjectChunk } from './storage';

export interface BlockUpload {
  blob: BlockBlobClient;
  /** Block buffers (their size is the block size). */
  blocks: BufferPool;
  /** Blocks uploading at once; one more is being filled meanwhile. */
  blocksInFlight: number;
  /** Send each request body's MD5 for the store to check (see above). */
  md5: boolean;
}

function md5Of(o: BlockUpload, body: Buffer): { transactionalContentMD5?: Uint8Array } {
  return o.md5 ? { transactionalContentMD5: createHash('md5').update(body).digest() } : {};
}

/** The whole object in one Put Blob (which replaces what is there). */
export async function uploadWhole(o: BlockUpload, body: Buffer): Promise<void> {
  await o.blob.upload(body, body.length, md5Of(o, body));
}

/**
 * Uploads the chunks as the blob. Throws BodyFailed when the body threw (nothing is then
 * committed), the SDK's error when the store failed.
 */
export async function uploadBlocks(o: BlockUpload, body: AsyncIterable<ObjectChunk>): Promise<void> {
  // Block ids must all have one length within a blob; the random part keeps two writers of
  // one key (a retry beside an abandoned attempt) from committing each other's blocks.
  const tag = randomBytes(9).toString('hex');
  const ids: string[] = [];
  const inFlight = new PartsInFlight(o.blocks, o.blocksInFlight);

  // Stages a full (or the last) block; owns `buf` from here and gives it back once sent.
  const stage = async (buf: Buffer, length: number): Promise<void> => {
    await inFlight.room(buf);
    const id = Buffer.from(`${tag}-${String(ids.length).padStart(6, '0')}`).toString('base64');
    ids.push(id);
    const data = buf.subarray(0, length);
    inFlight.add(o.blob.stageBlock(id, data, length, md5Of(o, data)), buf);
  };

  try {
    const { last, length, full } = await fillParts(body, o.blocks, stage, inFlight.check);
    if (full === 0) {
      try {
        await uploadWhole(o, last.subarray(0, length));
      } finally {
        o.blocks.release(last);
      }
      return;
    }
    await stage(last, length);
    await inFlight.all();
    await o.blob.commitBlockList(ids);
  } catch (err) {
    await inFlight.settled();
    throw err;
  }
}
