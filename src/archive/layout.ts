/**
 * Where the archive keeps objects under the site's prefix:
 *
 *   cluster.json                 which database system this archive belongs to (./cluster-marker.ts)
 *   wal/<segment>                finished segments (immutable)
 *   wal/<segment>.partial        newest partial of the segment being received (replaced)
 *   wal/<TLI>.history            timeline history files (immutable)
 *
 * Leases (./archive-lease.ts) and backups/ (../backup/catalog.ts) name their own keys.
 */
import { WalvaultError } from '../errors';

export const CLUSTER_KEY = 'cluster.json';
export const WAL_PREFIX = 'wal/';

/** The key of a WAL file (segment, partial or history file) by its bare name. */
export function walKey(name: string): string {
  if (name === '' || name.includes('/')) {
    throw new WalvaultError('WAL_BAD_NAME', `"${name}" is not a WAL file name (expected a bare name such as 000000010000000000000003)`);
  }
  return WAL_PREFIX + name;
}
