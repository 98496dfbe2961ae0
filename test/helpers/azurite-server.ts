/**
 * A real Azure Blob Storage emulator for tests: the npm package azurite (its blob service
 * only) in a child process on 127.0.0.1, storing under a temp directory, with one container
 * created. It serves the well-known development account (devstoreaccount1 and its published
 * key, the same in every Azurite), path-style: http://127.0.0.1:PORT/devstoreaccount1.
 * Like S3Server it can be frozen (a hung store), stopped (an outage) and started again with
 * its data.
 */
import * as path from 'node:path';
import { AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, BlobServiceClient, generateAccountSASQueryParameters, StorageSharedKeyCredential } from '@azure/storage-blob';
import type { AzureSettings } from '../../src/storage/azure';
import { ChildServer } from './child-server';
import { freePort } from './free-port';
import { tmpDir } from './temp-dirs';

const AZURITE_BIN = path.join(require.resolve('azurite/package.json'), '..', 'dist', 'src', 'blob', 'main.js');
/** Azurite's built-in account and key (published in its README; they guard nothing). */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

const endpointAt = (port: number): string => `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;

/**
 * Stopped with SIGTERM, which Azurite answers by saving its metadata: killed outright, it
 * loses blobs it had already acknowledged (its metadata database is saved on a timer), which
 * no real store does, so an outage test would see losses that are the emulator's.
 */
export class AzuriteServer extends ChildServer {
  private constructor(
    port: number,
    dataDir: string,
    readonly container: string,
  ) {
    super(port, dataDir, 'SIGTERM');
  }

  static async start(opts: { container?: string } = {}): Promise<AzuriteServer> {
    const server = new AzuriteServer(await freePort(), tmpDir('walvault-azurite-'), opts.container ?? 'walvault-test');
    await server.startProcess();
    return server;
  }

  protected nodeArgs(): string[] {
    return [AZURITE_BIN, '--blobHost', '127.0.0.1', '--blobPort', String(this.port), '--location', this.dataDir, '--skipApiVersionCheck', '--silent', '--disableTelemetry'];
  }

  /** Answering means the container exists (created here on the first start). */
  protected async answers(): Promise<boolean> {
    const service = new BlobServiceClient(this.endpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY), { retryOptions: { maxTries: 1 } });
    await service.getContainerClient(this.container).createIfNotExists();
    return true;
  }

  /** The blob service URL of the development account. */
  get endpoint(): string {
    return endpointAt(this.port);
  }

  /** `azure://container/prefix` for an archive in this server. */
  url(prefix: string): string {
    return `azure://${this.container}/${prefix}`;
  }

  /**
   * The connection string of the development account on this server; `port`, when the client
   * is to reach it through a forwarder on 127.0.0.1 (a TcpGate) instead.
   */
  connectionString(port = this.port): string {
    return `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpointAt(port)};`;
  }

  /** What a walvault process needs in its environment to use this server (`port` as above). */
  env(port = this.port): Record<string, string> {
    return { AZURE_STORAGE_CONNECTION_STRING: this.connectionString(port) };
  }

  /**
   * Points this test process (and the walvault processes it starts, which inherit its
   * environment) at this server through the standard Azure variable.
   */
  useInThisProcess(): void {
    Object.assign(process.env, this.env());
  }

  /**
   * AzureSettings for an in-process AzureStorage: the account and endpoint. The key is never
   * a setting: it comes from AZURE_STORAGE_KEY (see useKeyInThisProcess).
   */
  settings(): AzureSettings {
    return { account: AZURITE_ACCOUNT, endpoint: this.endpoint };
  }

  /**
   * An account SAS token (an hour, read, write, delete, list, add, create on blobs) for the
   * development account: what AZURE_STORAGE_SAS_TOKEN takes. Unlike the account key, it signs
   * no request header.
   */
  static sasToken(): string {
    return generateAccountSASQueryParameters(
      {
        expiresOn: new Date(Date.now() + 3600_000),
        permissions: AccountSASPermissions.parse('rwdlac'),
        resourceTypes: AccountSASResourceTypes.parse('sco').toString(),
        services: AccountSASServices.parse('b').toString(),
      },
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
    ).toString();
  }

  /** Sets AZURE_STORAGE_KEY (and no connection string, which would win) in this process. */
  useKeyInThisProcess(): void {
    delete process.env.AZURE_STORAGE_CONNECTION_STRING;
    process.env.AZURE_STORAGE_KEY = AZURITE_KEY;
  }
}
