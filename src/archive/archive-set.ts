/**
 * A site's several archives read as one (wal-fetch, restore, check, drill, backup list):
 * every object is read from the first archive that holds it whole. One missing there, or
 * damaged (its checksums, trailer, decryption, binding or the reader's own checks fail), or
 * unreadable (the store fails), is read from the next, and a line says which object came
 * from where instead of where. "Missing" is only answered when every archive said so: an
 * archive that failed may hold the object, and wal-fetch would end recovery on a miss.
 *
 * Each archive reads with its own keys and checks (./archive.ts); what exists is the union
 * of their listings (../storage/union-storage.ts). A read's `consume` may run once per
 * archive tried, so it must commit nothing before the object's verdict (Archive.read's
 * rule); restore holds a part whole until then (../restore/restore.ts).
 *
 * Reading only: writes reach the union storage, which refuses them.
 */
import { isWalvaultError, WalvaultError, type ErrorCode } from '../errors';
import { UnionStorage } from '../storage/union-storage';
import { Archive, type ReadOptions } from './archive';
import type { ClusterInfo } from './cluster-marker';
import type { DecodedObject } from './read/decode-object';
import type { ObjectInfo } from '../storage/storage';

/** Failures of one archive's copy of an object, which another archive's copy may not have. */
const OBJECT_FAULTS: readonly ErrorCode[] = [
  'ARCHIVE_CORRUPT',
  'ARCHIVE_MISPLACED',
  'ARCHIVE_AUTH_FAILED',
  'ARCHIVE_KEY_MISMATCH',
  'WAL_BAD_PAGE',
  'STORAGE_IO',
  'STORAGE_OBJECT_UNREADABLE',
  'STORAGE_TIMEOUT',
];

export function isObjectFault(err: unknown): err is WalvaultError {
  return isWalvaultError(err) && OBJECT_FAULTS.includes(err.code) && !err.local;
}

export class ArchiveSet extends Archive {
  readonly members: readonly Archive[];
  private readonly warn: (line: string, key: string) => void;
  private settled: ClusterInfo | null = null;

  /** `warn` gets one line per object (`key`) read from another archive than the first that should have had it. */
  constructor(members: readonly Archive[], warn: (line: string, key: string) => void) {
    if (members.length < 2) throw new WalvaultError('INTERNAL', 'an archive set needs two archives or more');
    super(new UnionStorage(members.map((m) => m.storage)));
    this.members = members;
    this.warn = warn;
  }

  override async read<T>(key: string, consume: (object: DecodedObject) => Promise<T>, opts: ReadOptions = {}): Promise<T | null> {
    const passed: Array<{ archive: Archive; error: WalvaultError | null }> = [];
    for (const archive of this.members) {
      let found: T | null;
      try {
        found = await archive.read(key, consume, opts);
      } catch (err) {
        if (!isObjectFault(err)) throw err;
        passed.push({ archive, error: err });
        continue;
      }
      if (found === null) {
        passed.push({ archive, error: null });
        continue;
      }
      for (const p of passed) this.warn(`${key}: ${p.error ? `unreadable in ${p.archive.storage.description} (${p.error.what})` : `missing in ${p.archive.storage.description}`}; read from ${archive.storage.description} instead`, key);
      return found;
    }
    const failures = passed.filter((p) => p.error !== null);
    if (failures.length === 0) return null;
    for (const f of failures.slice(1)) this.warn(`${key}: unreadable in ${f.archive.storage.description} too (${f.error!.what})`, key);
    throw failures[0].error;
  }

  /**
   * The listings of the archives that answer: one archive down (a store outage, the very case
   * several archives are kept for) leaves the others' backups to choose from, with a line
   * naming it. A miss is still never decided on this: reads ask every archive.
   */
  override listAvailable(prefix: string): Promise<ObjectInfo[]> {
    return (this.storage as UnionStorage).listAnswered(prefix, (description, err) =>
      this.warn(`${description} did not answer (${err.what}): what only it holds is not listed; reading from the other archives`, prefix),
    );
  }

  /**
   * cluster.json as the first archive holding it says, once every archive that answers was
   * found to hold the same cluster's: objects from another cluster's archive must never be
   * served as this one's.
   */
  override async readCluster(): Promise<ClusterInfo | null> {
    const answers = await Promise.allSettled(this.members.map((m) => m.readCluster()));
    let first: { info: ClusterInfo; where: string } | null = null;
    for (const [i, a] of answers.entries()) {
      if (a.status === 'rejected' || a.value === null) continue;
      const where = this.members[i].storage.description;
      if (first === null) first = { info: a.value, where };
      else if (a.value.systemId !== first.info.systemId || a.value.walSegmentSize !== first.info.walSegmentSize) {
        throw new WalvaultError('ARCHIVE_OTHER_CLUSTER', `${first.where} and ${where}, archives of one site, belong to different database systems (${first.info.systemId}, ${a.value.systemId})`, {
          fix: "every archive of a site must hold that site's cluster: remove the other one from the site",
        });
      }
    }
    if (first === null) {
      const failed = answers.find((a): a is PromiseRejectedResult => a.status === 'rejected');
      if (failed) throw failed.reason;
      return null;
    }
    this.settled = first.info;
    return first.info;
  }

  override async cluster(): Promise<ClusterInfo | null> {
    return this.settled ?? this.readCluster();
  }

  /** Reading only: the set itself (a plain view of the union would skip the members' checks). */
  override asPlain(): Archive {
    return this;
  }

  override async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.close()));
  }
}
