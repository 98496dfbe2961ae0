/**
 * The S3 client's own deadlines when a site sets none. Here, apart from ./s3.ts, so that the
 * configuration table (../config/keys.ts) can show them without loading the AWS SDK.
 */
/** No byte moving this long ends an attempt. */
export const DEFAULT_REQUEST_TIMEOUT_S = 30;
/** Connecting to the store, per attempt. */
export const DEFAULT_CONNECT_TIMEOUT_S = 10;
