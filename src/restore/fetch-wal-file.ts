/**
 * One WAL file from the archive into the place PostgreSQL reads it (restore_command's %p, or
 * the prefetch directory whose files the shell moves there unchecked): the object decoded as
 * it arrives (../archive/read/decode-object.ts), its plaintext checked against its name as it
 * passes (../wal/wal-identity.ts: page addresses, timelines, system id; a history file's
 * parents) and written to a temporary file beside the destination. Only when the object's
 * every check (header, binding, frames, trailer, both checksums) and the name check passed
 * is the file fsynced and renamed into place: a failure leaves the destination as it was.
 * Memory stays at a few frames whatever the segment size (up to 1 GiB).
 */
import { Archive } from '../archive/archive';
import { walIdentityChecker, type WalClusterIdentity } from '../wal/wal-identity';
import { DurableFile } from './durable-file';

export interface FetchWalOptions {
  /** The cluster the file must belong to; asked for only once the object is found. */
  cluster: () => Promise<WalClusterIdentity>;
  /** Zero-pad the file to the cluster's segment size (a partial served as its whole segment). */
  padToSegment?: boolean;
}

/** Fetches the WAL file `name` into `dest`; false when the archive has no such object (nothing written). */
export async function fetchWalFile(archive: Archive, name: string, dest: string, o: FetchWalOptions): Promise<boolean> {
  const key = Archive.walKey(name);
  const found = await archive.read(key, async (object) => {
    const cluster = await o.cluster();
    const size = object.header.plaintextSize;
    const check = walIdentityChecker(name, size, cluster, archive.label(key));
    const out = await DurableFile.create(dest);
    try {
      for await (const chunk of object.chunks) {
        check.write(chunk);
        await out.write(chunk);
      }
      check.end();
      if (o.padToSegment && size < cluster.walSegmentSize) await out.writeZeros(cluster.walSegmentSize - size);
      await out.commit();
    } catch (err) {
      await out.discard();
      throw err;
    }
    return true;
  });
  return found === true;
}
