/**
 * Azure SDK failures as walvault errors, decided on what the SDK reports as data (the HTTP
 * status, the service's error code from x-ms-error-code, Node's socket codes, the error's
 * name), never on its wording. The text that is kept is scrubbed of every secret in play.
 */
import { WalvaultError } from '../errors';
import { failedCallCode, missedDeadline, NETWORK_CODES, TIMEOUT_CODES, waitedForConnect, waitedForProgress } from './store-errors';

interface SdkError {
  name?: string;
  code?: string;
  statusCode?: number;
  message?: string;
  details?: { errorCode?: string };
  response?: { headers?: { get(name: string): string | undefined } };
}

export function statusOf(err: unknown): number | undefined {
  return (err as SdkError)?.statusCode;
}

/**
 * The service's error code (BlobNotFound, ContainerNotFound, AuthenticationFailed, ...), else
 * Node's socket code. A HEAD answer has no body, so its code is only in x-ms-error-code.
 */
export function codeOf(err: unknown): string | undefined {
  const e = err as SdkError | undefined;
  return e?.code ?? e?.details?.errorCode ?? e?.response?.headers?.get('x-ms-error-code');
}

/** No such blob (a missing container is an error to report, not an absent object). */
export function isNotFound(err: unknown): boolean {
  return statusOf(err) === 404 && codeOf(err) !== 'ContainerNotFound';
}

/** A deadline of ours (./deadline-agent.ts, ./body-chunks.ts) or the socket's. */
export function isTimeout(err: unknown): boolean {
  return TIMEOUT_CODES.has(codeOf(err) ?? '');
}

/** `text` (its first line only) with every secret replaced. */
export function scrubbed(text: string, secrets: readonly string[]): string {
  let out = text.split('\n', 1)[0].trim();
  for (const s of secrets) {
    if (s.length >= 4) out = out.split(s).join('***');
    // A SAS or key may be quoted URL-encoded.
    const encoded = encodeURIComponent(s);
    if (encoded !== s && encoded.length >= 4) out = out.split(encoded).join('***');
  }
  return out;
}

export interface FailureContext {
  action: string;
  /** azure://container/prefix/key */
  where: string;
  endpoint: string;
  /** Which credential source is in use, for the fixes. */
  via: string;
  secrets: readonly string[];
  connectMs: number;
  idleMs: number;
}

function fixFor(err: SdkError, c: FailureContext): string {
  const code = codeOf(err) ?? '';
  const status = err.statusCode;
  if (code === 'ContainerNotFound') return 'create the container, or correct the container name in the archive URL';
  if (code === 'AuthenticationFailed' || code === 'InvalidAuthenticationInfo') return `check the credentials (${c.via}) and that they belong to the account at ${c.endpoint}`;
  if (code.startsWith('AuthorizationPermissionMismatch') || code === 'AuthorizationFailure' || code.startsWith('AuthorizationResourceType') || status === 403) {
    return `check that the credentials (${c.via}) may read, write, list and delete blobs in the container (a role such as Storage Blob Data Contributor, or a SAS with rwdl)`;
  }
  if (code === 'BlobImmutableDueToPolicy' || code === 'ContainerImmutableDueToPolicy') return 'the container has an immutability policy that forbids replacing and deleting blobs: walvault needs to replace partial segments and delete by retention, so use a container without one';
  if (err.name === 'CredentialUnavailableError' || err.name === 'AggregateAuthenticationError' || err.name === 'AuthenticationRequiredError') {
    return 'provide credentials: AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN with the account, or a managed identity, workload identity or az login';
  }
  if (NETWORK_CODES.has(code)) return `check that the endpoint ${c.endpoint} is reachable (endpoint in the site's [azure] table, or the account name)`;
  return 'check the endpoint, the network and the store';
}

/** The error for a failed call: a timeout says the store did not answer in time, and after how long. */
export function azureFailure(c: FailureContext, err: unknown): WalvaultError {
  if (err instanceof WalvaultError) return err;
  const e = (err ?? {}) as SdkError;
  // The SDK's error holds the request (URLs with a SAS, headers); only a scrubbed copy of its
  // words goes on as the cause.
  const words = scrubbed(e.message ?? String(err), c.secrets);
  const code = codeOf(err);
  const cause = Object.assign(new Error(words), { name: e.name ?? 'Error', code, statusCode: e.statusCode });
  if (isTimeout(err)) {
    // Both deadlines are named: the agent's ETIMEDOUT does not say which one passed.
    const waited = `${waitedForConnect(c.connectMs)}, or ${waitedForProgress(c.idleMs)}`;
    return missedDeadline({ store: 'Azure', action: c.action, where: c.where, waited, endpoint: c.endpoint, cause });
  }
  const status = e.statusCode;
  const label = [code, status ? `HTTP ${status}` : ''].filter(Boolean).join(', ') || e.name || 'Error';
  return new WalvaultError(failedCallCode(c.action, status), `Azure ${c.action} of ${c.where} failed: ${label}: ${words}`, { fix: fixFor(e, c), cause });
}
