/**
 * Which credentials an azure:// archive is reached with, in this order (the first that is
 * set wins, so an operator can tell which one is used):
 *   1. AZURE_STORAGE_CONNECTION_STRING (an account key or a SAS, and its endpoint);
 *   2. the account (the site's `account`, else AZURE_STORAGE_ACCOUNT) with AZURE_STORAGE_KEY;
 *   3. the account with AZURE_STORAGE_SAS_TOKEN;
 *   4. the account with DefaultAzureCredential (@azure/identity: environment, workload
 *      identity, managed identity, az login), loaded only then.
 * The endpoint is the site's `endpoint` (Azurite: http://127.0.0.1:10000/devstoreaccount1),
 * else the account's https://ACCOUNT.blob.core.windows.net.
 *
 * Every secret value is returned in `secrets`, so that whatever text leaves the backend can
 * be scrubbed of them whatever the SDK put in it.
 */
import type * as http from 'node:http';
import { AnonymousCredential, BlobServiceClient, StorageSharedKeyCredential, type StoragePipelineOptions } from '@azure/storage-blob';
import { WalvaultError } from '../errors';

export interface AzureAccess {
  service: BlobServiceClient;
  /** The blob endpoint, without any SAS: for messages. */
  endpoint: string;
  /** Which of the four sources is used, in words, for fixes. */
  via: string;
  /** Every secret value in play (keys, SAS tokens, the connection string). */
  secrets: string[];
}

export interface AccessSettings {
  account?: string;
  endpoint?: string;
}

const CREDENTIAL_SOURCES =
  'set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT (or account in the site\'s [azure] table) with AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, or a managed identity, workload identity or az login';

function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

/** `key=value;...` pairs of a connection string (values may hold '='). */
function connectionStringParts(text: string): Map<string, string> {
  const parts = new Map<string, string>();
  for (const piece of text.split(';')) {
    const at = piece.indexOf('=');
    if (at > 0) parts.set(piece.slice(0, at).trim().toLowerCase(), piece.slice(at + 1).trim());
  }
  return parts;
}

/**
 * `agentFor` gives the agent for the endpoint's protocol, which carries the deadlines
 * (./deadline-agent.ts); the SDK's pipeline hands it to every request. `retries` is the SDK's
 * retry policy (attempts and backoff).
 */
export function azureAccess(settings: AccessSettings, agentFor: (protocol: string) => http.Agent, retries: StoragePipelineOptions['retryOptions']): AzureAccess {
  // `agent` is core-rest-pipeline's own option, which the storage pipeline passes on.
  const options = (endpoint: string) => ({ retryOptions: retries, agent: agentFor(new URL(endpoint).protocol) }) as StoragePipelineOptions;

  const connectionString = env('AZURE_STORAGE_CONNECTION_STRING');
  if (connectionString !== undefined) {
    const parts = connectionStringParts(connectionString);
    const secrets = [connectionString, parts.get('accountkey'), parts.get('sharedaccesssignature')].filter((s): s is string => !!s);
    let service: BlobServiceClient;
    try {
      // Parsed once to learn the endpoint (no request is made), then built with its agent.
      const endpoint = BlobServiceClient.fromConnectionString(connectionString).url;
      service = BlobServiceClient.fromConnectionString(connectionString, options(endpoint));
    } catch (err) {
      // The SDK's words are not echoed: they are about a string that holds a secret.
      throw new WalvaultError('CONFIG_INVALID', 'AZURE_STORAGE_CONNECTION_STRING is not a usable connection string', {
        fix: 'give DefaultEndpointsProtocol, AccountName and AccountKey (or BlobEndpoint and SharedAccessSignature), as the Azure portal shows it',
        cause: new Error(`connection string refused (${(err as Error)?.name ?? 'Error'})`),
      });
    }
    return { service, endpoint: withoutQuery(service.url), via: 'AZURE_STORAGE_CONNECTION_STRING', secrets };
  }

  const account = settings.account ?? env('AZURE_STORAGE_ACCOUNT');
  if (account === undefined) throw new WalvaultError('CONFIG_INVALID', 'no Azure storage account or credentials are given', { fix: CREDENTIAL_SOURCES });
  const endpoint = serviceEndpoint(settings.endpoint) ?? `https://${account}.blob.core.windows.net`;

  const key = env('AZURE_STORAGE_KEY');
  if (key !== undefined) {
    return { service: new BlobServiceClient(endpoint, sharedKey(account, key), options(endpoint)), endpoint, via: 'AZURE_STORAGE_KEY', secrets: [key] };
  }
  const sas = env('AZURE_STORAGE_SAS_TOKEN')?.replace(/^\?/, '');
  if (sas !== undefined) {
    return { service: new BlobServiceClient(`${endpoint}?${sas}`, new AnonymousCredential(), options(endpoint)), endpoint, via: 'AZURE_STORAGE_SAS_TOKEN', secrets: [sas] };
  }
  // Loaded only here: most sites never need it, and it is large.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { DefaultAzureCredential } = require('@azure/identity') as typeof import('@azure/identity');
  return { service: new BlobServiceClient(endpoint, new DefaultAzureCredential(), options(endpoint)), endpoint, via: 'DefaultAzureCredential (managed identity, workload identity, az login)', secrets: [] };
}

function sharedKey(account: string, key: string): StorageSharedKeyCredential {
  try {
    return new StorageSharedKeyCredential(account, key);
  } catch {
    throw new WalvaultError('CONFIG_INVALID', 'AZURE_STORAGE_KEY is not a usable account key', { fix: "give the account's key as the Azure portal shows it (base64)" });
  }
}

/** A configured endpoint, checked: an http(s) URL without a query (a SAS belongs elsewhere). */
function serviceEndpoint(endpoint: string | undefined): string | undefined {
  if (endpoint === undefined) return undefined;
  let url: URL | null = null;
  try {
    url = new URL(endpoint);
  } catch {
    url = null;
  }
  if (url === null || !['http:', 'https:'].includes(url.protocol) || url.search !== '' || url.username !== '' || url.password !== '') {
    throw new WalvaultError('CONFIG_INVALID', 'the Azure endpoint is not an http:// or https:// URL without credentials or a query', {
      fix: 'give the blob service URL, e.g. https://ACCOUNT.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1 for Azurite',
    });
  }
  return endpoint.replace(/\/+$/, '');
}

function withoutQuery(url: string): string {
  return url.replace(/[?#].*$/, '').replace(/\/+$/, '');
}
