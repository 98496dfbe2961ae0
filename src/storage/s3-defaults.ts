/**
 * The object-store clients' own deadlines when a site sets none (S3's, and Azure's, which
 * keeps the same). Here, apart from ./s3.ts, so that the configuration table
 * (../config/keys.ts) can show them without loading an SDK.
 */
/** No byte moving this long ends an attempt. */
export const DEFAULT_REQUEST_TIMEOUT_S = 30;
/** Connecting to the store, per attempt. */
export const DEFAULT_CONNECT_TIMEOUT_S = 10;
