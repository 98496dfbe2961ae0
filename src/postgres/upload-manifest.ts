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
 * object that `pg` drives through these handlers instead of its own Query.
 */
import { WalvaultError } from '../errors';
import { mapPgError } from './connect-errors';
import type { ReplicationConnection } from './replication-connection';

/** CopyData size: the server accepts any; this keeps each message small. */
const CHUNK = 64 * 1024;

interface CopyInConnection {
  query(text: string): void;
  sendCopyFromChunk(buf: Buffer): void;
  endCopyFrom(): void;
}

/** Sends `manifest` with UPLOAD_MANIFEST on `conn` (idle, replication, PostgreSQL 17+). */
export async function uploadManifest(conn: ReplicationConnection, manifest: Buffer): Promise<void> {
  if (manifest.length === 0) throw new WalvaultError('INTERNAL', 'an empty manifest cannot be uploaded');
  let sent = false;
  const done = new Promise<void>((resolve, reject) => {
    const submittable = {
      submit(connection: CopyInConnection): void {
        connection.query('UPLOAD_MANIFEST');
      },
      handleCopyInResponse(connection: CopyInConnection): void {
        for (let at = 0; at < manifest.length; at += CHUNK) connection.sendCopyFromChunk(manifest.subarray(at, at + CHUNK));
        connection.endCopyFrom();
        sent = true;
      },
      handleCommandComplete(): void {},
      handleRowDescription(): void {},
      handleDataRow(): void {},
      handleEmptyQuery(): void {},
      handlePortalSuspended(): void {},
      handleCopyData(): void {},
      handleReadyForQuery(): void {
        if (sent) resolve();
        else reject(new WalvaultError('PG_PROTOCOL', 'the server answered UPLOAD_MANIFEST without asking for the manifest'));
      },
      handleError(err: Error): void {
        reject(err);
      },
    };
    conn.submit(submittable);
  });
  try {
    await done;
  } catch (err) {
    throw mapPgError(err, conn.target);
  }
}
