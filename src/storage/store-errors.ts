/**
 * What the object-store backends (./s3.ts, ./azure-errors.ts) share when they report a failed
 * call, so that an operator reads the same words whichever store an archive is in: endpoints
 * without their credentials, which socket codes mean the store cannot be reached, and how a
 * missed deadline is said. Loads no SDK: ./open.ts uses it for every archive URL.
 */
import { WalvaultError, type ErrorCode } from '../errors';

/** Endpoints and archive URLs may carry user:password; whatever shows one shows this instead. */
export function redactUrl(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/@]*@/, '$1***@');
}

/**
 * Socket codes that mean the store could not be reached or dropped the connection (Node's,
 * and REQUEST_SEND_ERROR, the Azure pipeline's for a request that never got out): the fix is
 * the endpoint and the network, not the credentials or the store's contents.
 */
export const NETWORK_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'REQUEST_SEND_ERROR']);

/** Codes of a deadline that passed: the socket's, ours (./deadline-agent.ts, ./body-chunks.ts). */
export const TIMEOUT_CODES: ReadonlySet<string> = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'WALVAULT_BODY_STALLED']);

/** The deadlines as the timeout message names them. */
export const waitedForConnect = (connectMs: number): string => `no connection within ${connectMs / 1000} s`;
export const waitedForProgress = (idleMs: number): string => `no answer or progress for ${idleMs / 1000} s`;

export interface MissedDeadline {
  /** 'S3', 'Azure': how the message names the store. */
  store: string;
  action: string;
  where: string;
  /** Which deadline passed, from waitedForConnect/waitedForProgress, with any attempt count. */
  waited: string;
  /** The endpoint for the fix, already free of secrets; none for the store's default one. */
  endpoint?: string;
  cause: unknown;
}

/**
 * STORAGE_TIMEOUT for a call the store did not answer in time. The wording is what
 * wal-fetch's and the daemon's operators (and tests) look for, whichever the store.
 */
export function missedDeadline(d: MissedDeadline): WalvaultError {
  return new WalvaultError('STORAGE_TIMEOUT', `${d.store} ${d.action} of ${d.where} failed: the store did not answer in time (${d.waited})`, {
    fix: `check that the ${d.store} endpoint is up and reachable${d.endpoint !== undefined ? ` (${d.endpoint})` : ''}`,
    cause: d.cause,
  });
}

/**
 * The code of a failed call that is not a timeout. A server error for one object (the store
 * answering, but not with that object) is told apart: a store that is not atomic can leave an
 * object it can no longer serve, and the caller may treat that object as torn.
 */
export function failedCallCode(action: string, status: number | undefined): ErrorCode {
  return (action === 'head' || action === 'get' || action === 'read') && status !== undefined && status >= 500 ? 'STORAGE_OBJECT_UNREADABLE' : 'STORAGE_IO';
}
