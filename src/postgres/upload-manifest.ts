/**
 * `UPLOAD_MANIFEST` (PostgreSQL 17+): hands the server the manifest of the backup an
 * incremental `BASE_BACKUP` on the same connection is to be taken against.
 *
 * The exchange (simple query protocol, replication connection):
 *    -> Query 'UPLOAD_MANIFEST'
 *    <- CopyInResponse  ('G', Int8 format 0, Int16 0 columns)
 *    -> CopyData*       the manifest's bytes, cut anywhere
 *    -> CopyDone
 *    <- CommandComplete, ReadyForQuery
 * An ErrorResponse at any point (a bad manifest: wrong system, no WAL ranges, a checksum that
 * does not match its text) ends it; the server keeps the last manifest it accepted until the
 * connection ends, and a second upload replaces it.
 *
 * `pg` answers an unexpected CopyInResponse with CopyFail, so the query is a submittable
 * object that `pg` drives instead of its own Query (pg-internals copyInQuery).
 */
import { WalvaultError } from '../errors';
import { mapPgError } from './connect-errors';
import { copyInQuery } from './pg-internals';
import type { ReplicationConnection } from './replication-connection';

/** CopyData size: the server accepts any; this keeps each message small. */
const CHUNK = 64 * 1024;

/** Sends `manifest` with UPLOAD_MANIFEST on `conn` (idle, replication, PostgreSQL 17+). */
export async function uploadManifest(conn: ReplicationConnection, manifest: Buffer): Promise<void> {
  if (manifest.length === 0) throw new WalvaultError('INTERNAL', 'an empty manifest cannot be uploaded');
  let sent = false;
  const done = new Promise<void>((resolve, reject) => {
    conn.submit(
      copyInQuery('UPLOAD_MANIFEST', {
        copyIn(send, end): void {
          for (let at = 0; at < manifest.length; at += CHUNK) send(manifest.subarray(at, at + CHUNK));
          end();
          sent = true;
        },
        readyForQuery(): void {
          if (sent) resolve();
          else reject(new WalvaultError('PG_PROTOCOL', 'the server answered UPLOAD_MANIFEST without asking for the manifest'));
        },
        error: reject,
      }),
    );
  });
  try {
    await done;
  } catch (err) {
    throw mapPgError(err, conn.target);
  }
}
