/**
 * What an archive object says it is, so an object copied or renamed over another name (or
 * brought over from another cluster's archive) is recognised on read. A misplaced object is
 * whole and valid on its own bytes: its checksums prove nothing about where it belongs.
 *
 * Envelope extension entry "bind" (JSON, inside the header CRC):
 *   key   the object's key under the archive's prefix: "wal/000000010000000000000003",
 *         "backups/20261201T150405Z/parts/base.tar.000002", "cluster.json"
 *   sys   the system identifier of the cluster the archive belongs to (decimal, as in
 *         cluster.json); absent when the writer did not know it (cluster.json itself)
 *
 * An encrypted object's envelope header is the additional data of every frame's AES-GCM
 * (./encryption.ts), so its binding cannot be changed without failing authentication: a
 * swapped or replayed encrypted object names where it came from. Objects written before
 * bindings existed have none and stay readable. Plain WAL objects (sealed spool files, whose
 * 64-byte header leaves no room) never have one: their page headers say which segment of
 * which cluster they are, and readers check those (../wal/wal-identity.ts).
 */
import { WalvaultError } from '../errors';

export interface Binding {
  key: string;
  sys?: string;
}

/** The extension entry binding an object written now to `key` (and the cluster, when known). */
export function bindingExtension(key: string, systemId: string | null): { bind: Binding } {
  return { bind: systemId === null ? { key } : { key, sys: systemId } };
}

/** The binding an envelope extension carries, or null for an object written before bindings. */
export function bindingOf(extension: Record<string, unknown>, label: string): Binding | null {
  const b = extension.bind;
  if (b === undefined) return null;
  const rec = b as Record<string, unknown>;
  if (typeof b !== 'object' || b === null || typeof rec.key !== 'string' || (rec.sys !== undefined && typeof rec.sys !== 'string')) {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: its header's binding is not {"key": ..., "sys": ...} (written by an unknown tool, or damaged)`);
  }
  return rec.sys === undefined ? { key: rec.key } : { key: rec.key, sys: rec.sys as string };
}

/**
 * Refuses an object whose binding names another key, or another cluster than `systemId`
 * (null: not known here, not compared). An unbound object passes.
 */
export function checkBinding(binding: Binding | null, key: string, systemId: string | null, label: string): void {
  if (binding === null) return;
  if (binding.key !== key) {
    throw new WalvaultError(
      'ARCHIVE_MISPLACED',
      `${label} holds ${binding.key} (its envelope says so), not ${key}: an object was copied or renamed over this name`, { fix: `put that name's own object back (walvault verify lists every misplaced object)` },
    );
  }
  if (binding.sys !== undefined && systemId !== null && binding.sys !== systemId) {
    throw new WalvaultError(
      'ARCHIVE_MISPLACED',
      `${label} belongs to database system ${binding.sys}, but this archive to ${systemId}: it was copied from another cluster's archive`, { fix: `put this archive's own object back` },
    );
  }
}
