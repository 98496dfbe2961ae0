/**
 * A streamed object to S3 with one copy per byte: each chunk is copied once, into a pooled
 * part buffer, and the part buffer is the request body. An object that fits in one part goes
 * up in one PutObject; a larger one as a multipart upload (CreateMultipartUpload, UploadPart
 * per full part, a bounded number in flight, CompleteMultipartUpload), aborted on failure so
 * neither an object nor stray parts remain. (lib-storage's Upload, used before, re-buffered
 * every part with a second copy, after the copy our chunks need anyway since their buffers
 * are refilled.)
 *
 * Bodies are sent as buffers with their length, never as streams: a streamed body would be
 * sent aws-chunked under the SDK's default checksums, which some S3-compatible stores
 * (s3rver) store framing and all. Over https their payload is not signed
 * (x-amz-content-sha256: UNSIGNED-PAYLOAD, as the SDK does for every streamed body): signing
 * would hash every byte once more, TLS protects the bytes on the way, and the archive reads
 * every object back against its own SHA-256. Over plain http it is (see S3Storage). The SDK's own checksums (CRC32 by default on
 * AWS) are left as configured: they cost a CRC pass, and the store checks them.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { BufferPool } from '../util/buffer-pool';
import { fillParts, PartsInFlight } from './part-filler';
import type { ObjectChunk } from './storage';

export interface StreamUpload {
  client: S3Client;
  bucket: string;
  key: string;
  /** Part buffers (their size is the part size). */
  parts: BufferPool;
  /** Parts uploading at once; one more is being filled meanwhile. */
  partsInFlight: number;
  /** Leave payloads out of the signature (see below). */
  unsignedPayloads: boolean;
}

interface Middlewared {
  middlewareStack: { add(mw: (next: (args: { request: unknown }) => Promise<unknown>) => (args: { request: unknown }) => Promise<unknown>, opts: { step: 'build'; name: string; override: boolean }): void };
}

/** The command with its payload left unsigned (see above). */
export function unsignedPayload<C>(command: C): C {
  (command as unknown as Middlewared).middlewareStack.add(
    (next) => (args) => {
      const headers = (args.request as { headers?: Record<string, string> }).headers;
      if (headers) headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      return next(args);
    },
    { step: 'build', name: 'walvaultUnsignedPayload', override: true },
  );
  return command;
}

/** Whether a failure is a timeout: an abort of the upload would only time out too. */
function timedOut(err: unknown): boolean {
  const e = err as { name?: string; code?: string } | undefined;
  return e?.name === 'TimeoutError' || e?.code === 'ETIMEDOUT';
}

/**
 * Uploads the chunks as the object `key`. Throws BodyFailed when the body threw (the upload
 * is then abandoned), the SDK's error when the store failed.
 */
export async function uploadStream(o: StreamUpload, body: AsyncIterable<ObjectChunk>): Promise<void> {
  const { client, bucket, key } = o;
  const payload = <C>(command: C): C => (o.unsignedPayloads ? unsignedPayload(command) : command);
  let uploadId: string | undefined;
  let partNumber = 0;
  const completed: CompletedPart[] = [];
  const inFlight = new PartsInFlight(o.parts, o.partsInFlight);

  // Sends a full (or the last) part; owns `buf` from here and gives it back once sent.
  const sendPart = async (buf: Buffer, length: number): Promise<void> => {
    if (uploadId === undefined) {
      try {
        const withChecksum = (await client.config.requestChecksumCalculation()) === 'WHEN_SUPPORTED';
        // As lib-storage does: parts then carry CRC32s, which the completion lists.
        const created = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...(withChecksum ? { ChecksumAlgorithm: 'CRC32' } : {}) }));
        if (!created.UploadId) throw new Error(`CreateMultipartUpload of ${key} returned no UploadId`);
        uploadId = created.UploadId;
      } catch (err) {
        o.parts.release(buf);
        throw err;
      }
    }
    await inFlight.room(buf);
    const number = ++partNumber;
    const sent = client
      .send(payload(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: number, Body: buf.subarray(0, length), ContentLength: length })))
      .then((res) => {
        if (!res.ETag) throw new Error(`UploadPart ${number} of ${key} returned no ETag`);
        completed[number - 1] = { PartNumber: number, ETag: res.ETag, ...(res.ChecksumCRC32 ? { ChecksumCRC32: res.ChecksumCRC32 } : {}) };
      });
    inFlight.add(sent, buf);
  };

  try {
    const { last, length } = await fillParts(body, o.parts, sendPart, inFlight.check);
    if (uploadId === undefined) {
      try {
        await client.send(payload(new PutObjectCommand({ Bucket: bucket, Key: key, Body: last.subarray(0, length), ContentLength: length })));
      } finally {
        o.parts.release(last);
      }
      return;
    }
    await sendPart(last, length);
    await inFlight.all();
    await client.send(
      new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: completed } }),
    );
  } catch (err) {
    await inFlight.settled();
    if (uploadId !== undefined) {
      const abort = client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })).then(
        () => undefined,
        () => undefined,
      );
      // Against a store that does not answer, the abort would only make the caller wait as
      // long again: it goes on in the background.
      if (!timedOut(inFlight.firstFailure ?? err)) await abort;
    }
    throw err;
  }
}
