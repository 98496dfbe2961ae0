/**
 * The Azure Blob Storage backend on @azure/storage-blob, for `azure://container/prefix`.
 *
 * Blobs live under the prefix in the container, as block blobs. Credentials and the endpoint:
 * ./azure-credentials.ts. Behaviour matches the S3 backend's, call for call:
 *   - put writes the whole blob in one step (Put Blob, or Put Block List after the blocks,
 *     ./azure-upload.ts), replacing what is there, as the interface says (partials and leases
 *     rely on it); the no-overwrite rule and the read-back of every write are the archive's
 *     (existing-object.ts, object-writer.ts), the same for every backend;
 *   - get, getRange and openRead are one GET each, never retried midway by the SDK (its
 *     download retries would hide a stalled or truncated body);
 *   - list pages through List Blobs; Azure has no StartAfter, so keys up to `startAfter` are
 *     skipped as they come;
 *   - delete of a missing blob is no error; deleting a blob deletes its snapshots too.
 *
 * Deadlines, as for S3: every socket has a connect deadline and a progress deadline (no byte
 * moving either way for `requestTimeoutSeconds`: ./deadline-agent.ts), and every body read
 * waits at most that long per chunk (./body-chunks.ts); the SDK's retry policy makes
 * `attempts` attempts in all. A hung store thus ends every call with STORAGE_TIMEOUT in about
 * attempts x (connect + progress), while a slow link whose bytes keep moving goes through.
 */
import { type BlobClient, type ContainerClient } from '@azure/storage-blob';
import type * as http from 'node:http';
import type { Readable } from 'node:stream';
import { WalvaultError } from '../errors';
import { BufferPool } from '../util/buffer-pool';
import { azureAccess } from './azure-credentials';
import { azureFailure, isNotFound, statusOf, type FailureContext } from './azure-errors';
import { routeAzureLog } from './azure-log';
import { uploadBlocks, uploadWhole, type BlockUpload } from './azure-upload';
import type { AzureLocation } from './azure-url';
import { BodyFailed } from './body-failed';
import { collectInto, guardedBody } from './body-chunks';
import { deadlineAgent } from './deadline-agent';
import { DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_REQUEST_TIMEOUT_S } from './s3-defaults';
import { readingChunks, type ListOptions, type ObjectBody, type ObjectChunk, type ObjectInfo, type Storage } from './storage';

/** Per-site settings; what is unset comes from the environment (./azure-credentials.ts). */
export interface AzureSettings {
  /** The storage account (else AZURE_STORAGE_ACCOUNT). */
  account?: string;
  /** The blob service URL, e.g. Azurite's http://127.0.0.1:10000/devstoreaccount1. */
  endpoint?: string;
  /** No byte moving this long ends an attempt. */
  requestTimeoutSeconds?: number;
  /** Connecting to the store may take this long. */
  connectTimeoutSeconds?: number;
  /** Attempts per request, the SDK's retries included (for callers that retry themselves). */
  attempts?: number;
  /** Objects up to this size go up in one Put Blob; larger ones in blocks of this size. */
  blockSizeBytes?: number;
  /** Keys per List Blobs page (tests use a small page to exercise pagination). */
  listPageSize?: number;
}

const DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024;
const MIN_BLOCK_SIZE = 64 * 1024;
const DEFAULT_ATTEMPTS = 3;
const BLOCKS_IN_FLIGHT = 4;

export class AzureStorage implements Storage {
  readonly description: string;
  private readonly container: ContainerClient;
  /** The deadline agents the SDK's requests go through; destroyed by close(). */
  private readonly agents: http.Agent[];
  private readonly blocks: BufferPool;
  private readonly md5: boolean;
  private readonly listPageSize: number | undefined;
  private readonly idleMs: number;
  private readonly context: Omit<FailureContext, 'action' | 'where'>;

  constructor(
    private readonly location: AzureLocation,
    settings: AzureSettings = {},
  ) {
    this.idleMs = Math.round((settings.requestTimeoutSeconds ?? DEFAULT_REQUEST_TIMEOUT_S) * 1000);
    const connectMs = Math.round((settings.connectTimeoutSeconds ?? DEFAULT_CONNECT_TIMEOUT_S) * 1000);
    const attempts = Math.max(1, Math.floor(settings.attempts ?? DEFAULT_ATTEMPTS));
    const agents: http.Agent[] = [];
    const agentFor = (protocol: string) => {
      const agent = deadlineAgent(protocol, { connectMs, idleMs: this.idleMs });
      agents.push(agent);
      return agent;
    };
    // The SDK's exponential backoff: 0, 0.5 s, 1.5 s, ... between attempts.
    const access = azureAccess(settings, agentFor, { maxTries: attempts, retryDelayInMs: 500, maxRetryDelayInMs: 8000 });
    this.agents = agents;
    routeAzureLog(access.secrets);
    this.container = access.service.getContainerClient(location.container);
    this.blocks = new BufferPool(Math.max(MIN_BLOCK_SIZE, settings.blockSizeBytes ?? DEFAULT_BLOCK_SIZE), 2);
    this.md5 = /^http:/i.test(access.endpoint);
    this.listPageSize = settings.listPageSize;
    this.context = { endpoint: access.endpoint, via: access.via, secrets: access.secrets, connectMs, idleMs: this.idleMs };
    const custom = settings.endpoint !== undefined || access.via === 'AZURE_STORAGE_CONNECTION_STRING';
    this.description = `azure://${location.container}/${location.prefix}${custom ? ` at ${access.endpoint}` : ''}`;
  }

  private blobName(key: string): string {
    if (key === '' || key.startsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..')) {
      throw new WalvaultError('STORAGE_IO', `invalid storage key "${key}"`);
    }
    return this.location.prefix + key;
  }

  private blob(key: string): BlobClient {
    return this.container.getBlobClient(this.blobName(key));
  }

  private where(key: string): string {
    return `azure://${this.location.container}/${this.location.prefix}${key}`;
  }

  private failure(action: string, key: string, err: unknown): WalvaultError {
    return azureFailure({ ...this.context, action, where: this.where(key) }, err);
  }

  async put(key: string, body: ObjectBody): Promise<void> {
    const upload: BlockUpload = { blob: this.container.getBlockBlobClient(this.blobName(key)), blocks: this.blocks, blocksInFlight: BLOCKS_IN_FLIGHT, md5: this.md5 };
    try {
      if (Buffer.isBuffer(body) || Array.isArray(body)) {
        await uploadWhole(upload, Buffer.isBuffer(body) ? body : Buffer.concat(body as readonly Buffer[]));
        return;
      }
      await uploadBlocks(upload, body as AsyncIterable<ObjectChunk>);
    } catch (err) {
      // A failing source is the caller's error to see, as it threw it.
      if (err instanceof BodyFailed) throw err.err;
      throw this.failure('put', key, err);
    }
  }

  /**
   * One GET of bytes [offset, offset + count) (count undefined: to the end) as guarded
   * chunks with the object's size, or null when there is no object.
   */
  private async download(key: string, offset: number, count?: number): Promise<{ size: number; length: number; chunks: AsyncGenerator<Buffer>; release: () => void } | null> {
    const blob = this.blob(key);
    let res;
    try {
      res = await blob.download(offset, count, { maxRetryRequests: 0 });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    const stream = res.readableStreamBody as Readable;
    const length = Number(res.contentLength ?? 0);
    // Content-Range: bytes a-b/SIZE on a range; the whole object's length otherwise.
    const total = /\/(\d+)$/.exec(res.contentRange ?? '')?.[1];
    return { size: total !== undefined ? Number(total) : length, length, chunks: guardedBody(stream, this.idleMs, length), release: () => void stream.destroy() };
  }

  async get(key: string): Promise<Buffer | null> {
    try {
      const got = await this.download(key, 0);
      if (got === null) return null;
      const parts: Buffer[] = [];
      for await (const chunk of got.chunks) parts.push(chunk);
      return Buffer.concat(parts);
    } catch (err) {
      throw this.failure('get', key, err);
    }
  }

  async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    if (length <= 0) return (await this.head(key)) === null ? null : Buffer.alloc(0);
    try {
      const got = await this.download(key, offset, length);
      return got === null ? null : await collectInto(got.chunks, length, into);
    } catch (err) {
      // A range starting at or past the end: the object exists and has nothing there.
      if (statusOf(err) === 416) return Buffer.alloc(0);
      throw this.failure('read', key, err);
    }
  }

  async openRead(key: string): Promise<{ size: number; chunks: AsyncIterable<Buffer> } | null> {
    let got: Awaited<ReturnType<AzureStorage['download']>>;
    try {
      got = await this.download(key, 0);
    } catch (err) {
      throw this.failure('read', key, err);
    }
    if (got === null) return null;
    return { size: got.size, chunks: readingChunks(got.chunks, (err) => this.failure('read', key, err), got.release) };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const p = await this.blob(key).getProperties();
      return { key, size: Number(p.contentLength ?? 0), ...(p.lastModified ? { modified: p.lastModified } : {}) };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw this.failure('head', key, err);
    }
  }

  async list(prefix: string, opts: ListOptions = {}): Promise<ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    const base = this.location.prefix;
    const { limit, startAfter } = opts;
    const after = startAfter !== undefined ? base + startAfter : undefined;
    try {
      const pages = this.container.listBlobsFlat({ prefix: base + prefix }).byPage(this.listPageSize ? { maxPageSize: this.listPageSize } : {});
      listing: for await (const page of pages) {
        for (const item of page.segment.blobItems) {
          // Names come in code-unit order (UTF-8 byte order is the same for the names walvault writes).
          if (after !== undefined && item.name <= after) continue;
          if (!item.name.startsWith(base)) continue;
          found.push({ key: item.name.slice(base.length), size: Number(item.properties.contentLength ?? 0), modified: item.properties.lastModified });
          if (limit !== undefined && found.length >= limit) break listing;
        }
      }
    } catch (err) {
      throw this.failure('list', prefix + '*', err);
    }
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    try {
      await this.blob(key).delete({ deleteSnapshots: 'include' });
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.failure('delete', key, err);
    }
  }

  async close(): Promise<void> {
    for (const agent of this.agents) agent.destroy();
  }
}
