/**
 * The S3 backend (AWS S3 and S3-compatible stores) on @aws-sdk/client-s3.
 *
 * Keys live under `s3://bucket/prefix/`. Credentials, region and endpoint come from the
 * SDK's standard sources (AWS_* environment variables, ~/.aws/config and credentials files,
 * instance roles) unless the site's configuration overrides them. A custom endpoint
 * (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or the config file) means an S3-compatible
 * store: path-style addressing and checksums only where required, which is what MinIO,
 * Ceph and s3rver need, unless configured otherwise.
 *
 * The backend only moves bytes; the archive above it verifies every write by reading it back,
 * so a store that mangles bodies (some do, with the SDK's aws-chunked uploads) is caught.
 *
 * Deadlines: a store that stops answering (a hung process, a black-holed network) must end
 * every call with an error in bounded time, or the receiver never notices and wal-fetch,
 * check and status wait forever. Each attempt of a request has three:
 *   - connect: the TCP (and TLS) connection within `connectTimeoutSeconds`;
 *   - progress: no byte moving either way for `requestTimeoutSeconds` ends it, which covers
 *     the wait for the first byte of the answer, an upload stalled mid-part and a download
 *     stalled mid-body (the socket's idle timeout, and for bodies also a wait per chunk: ./body-chunks.ts);
 *     a progress deadline rather than a fixed total, so a large object on a slow link goes
 *     through as long as its bytes keep moving;
 *   - whole request: requests without a large body (HEAD, LIST, DELETE, a GET until its
 *     answer begins) must also be answered within `requestTimeoutSeconds` in all.
 * The SDK makes `attempts` attempts in all (its retries, with backoff), so one call ends within
 * about attempts x (connect + progress) when nothing answers; callers that retry themselves
 * (wal-fetch) ask for one. Timeouts become STORAGE_TIMEOUT errors that say so.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  paginateListObjectsV2,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { Readable } from 'node:stream';
import { DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_REQUEST_TIMEOUT_S } from './s3-defaults';
import { WalvaultError } from '../errors';
import { BufferPool } from '../util/buffer-pool';
import { BodyFailed } from './body-failed';
import { collectInto, guardedBody } from './body-chunks';
import { unsignedPayload, uploadStream } from './s3-upload';
import { sdkLogger } from './sdk-log';
import { readingChunks, type ListOptions, type ObjectBody, type ObjectChunk, type ObjectInfo, type Storage } from './storage';
import { failedCallCode, missedDeadline, NETWORK_CODES, redactUrl, TIMEOUT_CODES, waitedForConnect, waitedForProgress } from './store-errors';

export type ChecksumMode = 'when_supported' | 'when_required';

/** Per-site overrides; everything unset comes from the SDK's standard sources. */
export interface S3Settings {
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  checksums?: ChecksumMode;
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  profile?: string;
  /** No answer and no byte moving for this long ends an attempt (see the deadlines above). */
  requestTimeoutSeconds?: number;
  /** Connecting to the store may take this long. */
  connectTimeoutSeconds?: number;
  /**
   * Sign request payloads (SHA-256 of every byte in the signature). Default: only over
   * plain http, where nothing else keeps the store from taking an altered body.
   */
  signPayloads?: boolean;
  /** Attempts per request, the SDK's retries included (not a config key: for callers that retry themselves). */
  attempts?: number;
  /** Objects up to this size go up in one PUT; larger ones in parts of this size. */
  partSizeBytes?: number;
  /** Keys per ListObjectsV2 page (tests use a small page to exercise pagination). */
  listPageSize?: number;
}

export interface S3Location {
  bucket: string;
  /** '' or a prefix ending in '/'. */
  prefix: string;
}

const DEFAULT_PART_SIZE = 16 * 1024 * 1024;
const MIN_PART_SIZE = 5 * 1024 * 1024; // S3's minimum for all parts but the last
const DEFAULT_ATTEMPTS = 3;
const PARTS_IN_FLIGHT = 2;

/** Parses `s3://bucket[/prefix]`; null when `url` is not an s3 URL. */
export function parseS3Url(url: string): S3Location | null {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/i.exec(url.trim());
  if (!m) return null;
  const bucket = m[1];
  if (bucket.includes('@')) {
    // Never echoed: the part before '@' would be credentials.
    throw new WalvaultError(
      'CONFIG_INVALID',
      'the archive URL carries credentials (user:secret@)', { fix: 'remove them and use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or the site\'s [s3] table' },
    );
  }
  // Bucket naming rules (3-63 characters, lower case, digits, dots, hyphens).
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new WalvaultError(
      'CONFIG_INVALID',
      `archive s3://${bucket}/...: "${bucket}" is not a valid bucket name`, { fix: `use 3-63 lower-case letters, digits, dots and hyphens, e.g. s3://my-wal-archive/cluster1` },
    );
  }
  const raw = (m[2] ?? '').replace(/\/+$/, '');
  if (raw !== '' && raw.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new WalvaultError('CONFIG_INVALID', `archive s3://${bucket}/${m[2]}: the prefix has an empty, "." or ".." part`, { fix: `write it like s3://${bucket}/cluster1` });
  }
  return { bucket, prefix: raw === '' ? '' : raw + '/' };
}

/** The endpoint in effect: configured, else the SDK's standard variables. */
function effectiveEndpoint(settings: S3Settings): string | undefined {
  return settings.endpoint ?? nonEmpty(process.env.AWS_ENDPOINT_URL_S3) ?? nonEmpty(process.env.AWS_ENDPOINT_URL);
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

export class S3Storage implements Storage {
  readonly description: string;
  private readonly client: S3Client;
  private readonly partSize: number;
  /**
   * Part buffers of streamed puts, reused: a put holds one while it fills and one per part in
   * flight. Two idle ones are kept (an idle buffer is resident only as far as a put filled
   * it: a compressed WAL segment's few MiB).
   */
  private readonly partBuffers: BufferPool;
  private readonly listPageSize: number | undefined;
  private readonly idleMs: number;
  private readonly connectMs: number;
  private readonly attempts: number;
  private readonly endpointShown: string | null;
  /** Request payloads left out of the signature (see the constructor). */
  private readonly unsignedPayloads: boolean;
  /** Per-call options of requests without a large body: answered in full within the deadline. */
  private readonly whole: { requestTimeout: number };

  constructor(
    private readonly location: S3Location,
    settings: S3Settings = {},
  ) {
    const endpoint = effectiveEndpoint(settings);
    const custom = endpoint !== undefined;
    this.idleMs = Math.round((settings.requestTimeoutSeconds ?? DEFAULT_REQUEST_TIMEOUT_S) * 1000);
    this.connectMs = Math.round((settings.connectTimeoutSeconds ?? DEFAULT_CONNECT_TIMEOUT_S) * 1000);
    this.attempts = Math.max(1, Math.floor(settings.attempts ?? DEFAULT_ATTEMPTS));
    this.whole = { requestTimeout: this.idleMs };
    const config: S3ClientConfig = {
      forcePathStyle: settings.forcePathStyle ?? custom,
      // The SDK retries throttling, timeouts and transient errors with exponential backoff
      // and jitter; the uploader retries whole objects on top of that.
      maxAttempts: this.attempts,
      requestHandler: new NodeHttpHandler({
        connectionTimeout: this.connectMs,
        // The socket's idle timeout: the progress deadline. (The handler's requestTimeout is a
        // fixed total up to the answer's headers, uploads included; it is given per call, to
        // requests without a large body only. Without throwOnRequestTimeout it only warns.)
        socketTimeout: this.idleMs,
        throwOnRequestTimeout: true,
        logger: sdkLogger,
      }),
      logger: sdkLogger,
    };
    if (endpoint !== undefined) config.endpoint = endpoint;
    const region = settings.region ?? nonEmpty(process.env.AWS_REGION) ?? nonEmpty(process.env.AWS_DEFAULT_REGION);
    // S3-compatible stores rarely care about the region, but the SDK must have one to sign.
    if (region !== undefined) config.region = region;
    else if (custom) config.region = 'us-east-1';
    const checksums =
      settings.checksums ??
      (process.env.AWS_REQUEST_CHECKSUM_CALCULATION || process.env.AWS_RESPONSE_CHECKSUM_VALIDATION ? undefined : custom ? 'when_required' : undefined);
    if (checksums !== undefined) {
      const mode = checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
      config.requestChecksumCalculation = mode;
      config.responseChecksumValidation = mode;
    }
    if (settings.accessKeyId !== undefined && settings.secretAccessKey !== undefined) {
      config.credentials = {
        accessKeyId: settings.accessKeyId,
        secretAccessKey: settings.secretAccessKey,
        ...(settings.sessionToken !== undefined ? { sessionToken: settings.sessionToken } : {}),
      };
    }
    if (settings.profile !== undefined) config.profile = settings.profile;
    // The SDK warns on stderr, once per process, that its releases after January 2027 need
    // Node 22: advice for whoever upgrades the lock file, not for the operator, and it would
    // break the one-line error contract of every command that touches S3. An operator who
    // wants it sets the variable to "false".
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client(config);
    this.partSize = Math.max(MIN_PART_SIZE, settings.partSizeBytes ?? DEFAULT_PART_SIZE);
    this.partBuffers = new BufferPool(this.partSize, 2);
    this.listPageSize = settings.listPageSize;
    // Over https, TLS keeps the body as sent and the read-back proves what the store holds,
    // so signing would only hash every byte once more. Over plain http a signed payload is
    // what stops the store from taking a body altered on the way, which a read-back whose
    // answer is just as unprotected could not prove.
    this.unsignedPayloads = !(settings.signPayloads ?? (endpoint !== undefined && /^http:/i.test(endpoint)));
    this.endpointShown = custom ? redactUrl(endpoint!) : null;
    this.description = `s3://${location.bucket}/${location.prefix}${custom ? ` at ${redactUrl(endpoint!)}` : ''}`;
  }

  private objectKey(key: string): string {
    if (key === '' || key.startsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..')) {
      throw new WalvaultError('STORAGE_IO', `invalid storage key "${key}"`);
    }
    return this.location.prefix + key;
  }

  private where(key: string): string {
    return `s3://${this.location.bucket}/${this.location.prefix}${key}`;
  }

  async put(key: string, body: ObjectBody): Promise<void> {
    const Key = this.objectKey(key);
    try {
      if (Buffer.isBuffer(body) || Array.isArray(body)) {
        const buf = Buffer.isBuffer(body) ? body : Buffer.concat(body as readonly Buffer[]);
        const command = new PutObjectCommand({ Bucket: this.location.bucket, Key, Body: buf, ContentLength: buf.length });
        await this.client.send(this.unsignedPayloads ? unsignedPayload(command) : command);
        return;
      }
      await uploadStream(
        { client: this.client, bucket: this.location.bucket, key: Key, parts: this.partBuffers, partsInFlight: PARTS_IN_FLIGHT, unsignedPayloads: this.unsignedPayloads },
        body as AsyncIterable<ObjectChunk>,
      );
    } catch (err) {
      // A failing source is the caller's error to see, not whatever the abort of the
      // multipart upload then said (some stores do not implement the abort).
      if (err instanceof BodyFailed) throw err.err;
      if (err instanceof WalvaultError) throw err;
      throw this.failure('put', this.where(key), err);
    }
  }

  async get(key: string): Promise<Buffer | null> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: this.objectKey(key) }), this.whole);
      const parts: Buffer[] = [];
      for await (const chunk of this.body(res.Body as Readable, res.ContentLength)) parts.push(chunk);
      return Buffer.concat(parts);
    } catch (err) {
      if (isNotFound(err)) return null;
      throw this.failure('get', this.where(key), err);
    }
  }

  /**
   * A response body under the progress deadline (./body-chunks.ts: the socket's idle timeout
   * should end a stalled body too; this does not depend on it). A reset connection is a body
   * cut short, said with how much came: a store that is not atomic (s3rver) does that when an
   * object shrinks under a read. Any other error the SDK's stream raises (a checksum
   * mismatch) is no cut and is reported as it is.
   */
  private body(stream: Readable, announced: number | undefined): AsyncGenerator<Buffer> {
    return guardedBody(stream, this.idleMs, announced, isReset);
  }

  async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    if (length <= 0) return (await this.head(key)) === null ? null : Buffer.alloc(0);
    try {
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.location.bucket, Key: this.objectKey(key), Range: `bytes=${offset}-${offset + length - 1}` }),
        this.whole,
      );
      return await collectInto(this.body(res.Body as Readable, res.ContentLength), length, into);
    } catch (err) {
      if (isNotFound(err)) return null;
      // A range starting at or past the end: the object exists and has nothing there.
      if (httpStatus(err) === 416) return Buffer.alloc(0);
      throw this.failure('read', this.where(key), err);
    }
  }

  async openRead(key: string): Promise<{ size: number; chunks: AsyncIterable<Buffer> } | null> {
    let stream: Readable;
    let size: number;
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: this.objectKey(key) }), this.whole);
      stream = res.Body as Readable;
      size = Number(res.ContentLength ?? 0);
    } catch (err) {
      if (isNotFound(err)) return null;
      throw this.failure('read', this.where(key), err);
    }
    const where = this.where(key);
    return { size, chunks: readingChunks(this.body(stream, size), (err) => this.failure('read', where, err), () => void stream.destroy()) };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key: this.objectKey(key) }), this.whole);
      return { key, size: Number(res.ContentLength ?? 0), ...(res.LastModified ? { modified: res.LastModified } : {}) };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw this.failure('head', this.where(key), err);
    }
  }

  async list(prefix: string, opts: ListOptions = {}): Promise<ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    const base = this.location.prefix;
    const limit = opts.limit;
    // A few keys after a name cost one small request, however large the listing would be.
    const pageSize = limit !== undefined ? Math.min(limit, this.listPageSize ?? 1000) : this.listPageSize;
    try {
      const pages = paginateListObjectsV2(
        { client: this.client, ...(pageSize ? { pageSize } : {}) },
        { Bucket: this.location.bucket, Prefix: base + prefix, ...(opts.startAfter !== undefined ? { StartAfter: base + opts.startAfter } : {}) },
        this.whole,
      );
      listing: for await (const page of pages) {
        for (const o of page.Contents ?? []) {
          if (o.Key === undefined || !o.Key.startsWith(base)) continue;
          found.push({ key: o.Key.slice(base.length), size: Number(o.Size ?? 0), modified: o.LastModified });
          if (limit !== undefined && found.length >= limit) break listing;
        }
      }
    } catch (err) {
      throw this.failure('list', this.where(prefix + '*'), err);
    }
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: this.objectKey(key) }), this.whole);
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.failure('delete', this.where(key), err);
    }
  }

  /** The error for a failed call: a timeout says the store did not answer in time, and after how long. */
  private failure(action: string, where: string, err: unknown): WalvaultError {
    if (!isTimeout(err)) return s3Error(action, where, err);
    // Set when the SDK gave up on the request; absent for a body that stopped arriving.
    const attempts = (err as { $metadata?: { attempts?: number } })?.$metadata?.attempts;
    // The SDK's connect and idle timeouts are one error type with no code between them: both
    // deadlines are named rather than one guessed from the text.
    const waited = `${waitedForConnect(this.connectMs)}, or ${waitedForProgress(this.idleMs)}`;
    const tries = attempts === undefined || attempts < 2 ? '' : `, ${attempts} attempts`;
    return missedDeadline({ store: 'S3', action, where, waited: waited + tries, ...(this.endpointShown !== null ? { endpoint: this.endpointShown } : {}), cause: err });
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code;
}

function errorName(err: unknown): string {
  return (err as { name?: string; Code?: string })?.name ?? (err as { Code?: string })?.Code ?? 'Error';
}

/**
 * The SDK's connect, idle and request timeouts, and a body that stopped arriving. (The HTTP
 * handler also names a reset connection TimeoutError: that one is not.)
 */
function isTimeout(err: unknown): boolean {
  const code = codeOf(err) ?? '';
  if (code === 'ECONNRESET' || code === 'EPIPE') return false;
  return (err as { name?: string } | undefined)?.name === 'TimeoutError' || TIMEOUT_CODES.has(code);
}

function isReset(err: unknown): boolean {
  return codeOf(err) === 'ECONNRESET';
}

function isNotFound(err: unknown): boolean {
  const name = errorName(err);
  return name === 'NoSuchKey' || name === 'NotFound' || (httpStatus(err) === 404 && name !== 'NoSuchBucket');
}

function s3Error(action: string, where: string, err: unknown): WalvaultError {
  const name = errorName(err);
  const status = httpStatus(err);
  const message = (err as Error)?.message ?? String(err);
  let fix = 'check the endpoint, the network and the store';
  if (name === 'NoSuchBucket') fix = 'create the bucket, or correct the bucket name in the archive URL';
  else if (name === 'AccessDenied' || status === 403) fix = "check the credentials and that they may read and write the archive's bucket and prefix";
  else if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch') fix = 'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the credentials in the config file)';
  else if (name === 'CredentialsProviderError') fix = 'provide credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or access_key_id and secret_access_key in the site\'s [s3] section';
  else if (NETWORK_CODES.has(codeOf(err) ?? '') || name === 'TimeoutError') fix = 'check that the S3 endpoint is reachable (AWS_ENDPOINT_URL_S3 or endpoint in the config file)';
  return new WalvaultError(failedCallCode(action, status), `S3 ${action} of ${where} failed: ${name}${status ? ` (HTTP ${status})` : ''}: ${redactUrl(message)}; ${fix}`, {
    cause: err,
  });
}
