/**
 * One writer per archive: a lease object, `lease.json` under the archive prefix, that names
 * the receiver holding it and carries a heartbeat. It works the same on S3 and on a local
 * directory (no locks or conditional writes needed, which S3-compatible stores do not all
 * honour).
 *
 *   - A lease held by another receiver whose heartbeat is younger than LEASE_TTL_MS refuses
 *     the start, naming the holder.
 *   - A lease left by this same site instance (same host and state directory: a restart after
 *     a crash; the state-directory lock already keeps two processes off one state directory)
 *     or an expired one is taken over.
 *   - The holder rewrites the lease every LEASE_HEARTBEAT_MS. Finding someone else's lease
 *     there means two writers: the receiver stops rather than keep writing.
 *   - A clean stop deletes the lease.
 *
 * Heartbeats compare the writer's clock with the reader's: hosts sharing an archive need
 * their clocks within a fraction of the TTL (NTP is plenty).
 */
import { randomUUID } from 'node:crypto';
import * as os from 'node:os';
import { encodeEnvelope } from './envelope';
import { decodeEnvelope } from './read/decode-object';
import { WalvaultError } from '../errors';
import type { Storage } from '../storage/storage';
import { processAlive } from '../util/process-alive';

const LEASE_KEY = 'lease.json';
export const LEASE_TTL_MS = 60_000;
export const LEASE_HEARTBEAT_MS = 10_000;

/** The backup lease: one base backup at a time per archive, and the backup it protects. */
const BACKUP_LEASE_KEY = 'backups/lease.json';

export interface LeaseHolder {
  id: string;
  host: string;
  pid: number;
  site: string;
  state: string;
  acquiredAt: string;
  heartbeatAt: string;
  /** For the backup lease: the backup being taken. */
  backup?: string;
  /** For the backup lease: how far it is, as of the last heartbeat (for those waiting on it). */
  progress?: BackupProgress;
}

export interface BackupProgress {
  phase: 'checkpoint' | 'streaming' | 'waiting for WAL';
  bytesDone: number;
  /** The server's estimate of the total, when it gave one. */
  bytesTotal: number | null;
  secondsLeft: number | null;
}

export interface LeaseKind {
  key: string;
  /** What holding it means, for errors: "receiver" or "backup". */
  role: 'receiver' | 'backup';
  /**
   * Whether a lease of the same host and state directory is ours to take over at once (a
   * receiver restarted after a crash; the state lock keeps two receivers off one state
   * directory). Backups have no such lock: two pushes on one host must still exclude each other.
   */
  sameStateTakesOver: boolean;
}

const RECEIVER_LEASE: LeaseKind = { key: LEASE_KEY, role: 'receiver', sameStateTakesOver: true };
export const BACKUP_LEASE: LeaseKind = { key: BACKUP_LEASE_KEY, role: 'backup', sameStateTakesOver: false };

export class ArchiveLease {
  private readonly me: LeaseHolder;

  constructor(
    private readonly storage: Storage,
    site: string,
    stateDir: string,
    private readonly ttlMs = LEASE_TTL_MS,
    private readonly kind: LeaseKind = RECEIVER_LEASE,
    backup?: string,
  ) {
    const now = new Date().toISOString();
    this.me = { id: randomUUID(), host: os.hostname(), pid: process.pid, site, state: stateDir, acquiredAt: now, heartbeatAt: now, ...(backup ? { backup } : {}) };
  }

  /** The archive, as logs name it. */
  get description(): string {
    return this.storage.description;
  }

  /** The live holder (heartbeat within the TTL, and not a process known dead), or null. */
  async liveHolder(): Promise<LeaseHolder | null> {
    const holder = await this.read();
    return holder !== null && this.alive(holder) ? holder : null;
  }

  private alive(h: LeaseHolder): boolean {
    const age = Date.now() - Date.parse(h.heartbeatAt);
    if (!Number.isFinite(age) || age >= this.ttlMs) return false;
    // A holder on this host can be asked directly: after a kill -9 the next run need not
    // wait out the TTL. (A recycled pid only makes us wait for the TTL, never take over early.)
    if (h.host === os.hostname() && h.pid !== process.pid) {
      if (!processAlive(h.pid)) return false;
    }
    return true;
  }

  async read(): Promise<LeaseHolder | null> {
    const buf = await this.storage.get(this.kind.key);
    if (buf === null) return null;
    try {
      return JSON.parse((await decodeEnvelope(buf, this.kind.key)).plaintext.toString('utf8')) as LeaseHolder;
    } catch {
      // A damaged lease protects nothing; treat it as absent rather than block the site forever.
      return null;
    }
  }

  private sameInstance(h: LeaseHolder): boolean {
    return h.id === this.me.id || (this.kind.sameStateTakesOver && h.host === this.me.host && h.state === this.me.state);
  }

  /** Refuses (ARCHIVE_LOCKED) when another live receiver holds the lease; writes nothing. */
  async check(): Promise<void> {
    const holder = await this.read();
    if (holder === null || this.sameInstance(holder)) return;
    if (this.alive(holder)) throw this.lockedError(holder, Date.now() - Date.parse(holder.heartbeatAt));
  }

  /** Checks, then writes our lease and reads it back. */
  async acquire(): Promise<void> {
    await this.check();
    await this.write();
    const holder = await this.read();
    if (holder === null || holder.id !== this.me.id) {
      throw this.lockedError(holder ?? this.me, 0, 'took the lease at the same moment');
    }
  }

  /** Renews the heartbeat; throws ARCHIVE_LOCKED when another receiver holds the lease now. */
  async heartbeat(): Promise<void> {
    const holder = await this.read();
    if (holder !== null && holder.id !== this.me.id) throw this.lockedError(holder, Date.now() - Date.parse(holder.heartbeatAt), 'took over the archive lease');
    await this.write();
  }

  /** What the next heartbeat tells readers about the work the lease protects. */
  report(progress: BackupProgress): void {
    this.me.progress = progress;
  }

  /** Deletes the lease if it is still ours. */
  async release(): Promise<void> {
    const holder = await this.read();
    if (holder?.id === this.me.id) await this.storage.delete(this.kind.key);
  }

  private async write(): Promise<void> {
    this.me.heartbeatAt = new Date().toISOString();
    await this.storage.put(this.kind.key, encodeEnvelope(Buffer.from(JSON.stringify(this.me, null, 2) + '\n', 'utf8')));
  }

  private lockedError(h: LeaseHolder, ageMs: number, what = 'holds the archive lease'): WalvaultError {
    const who = `walvault pid ${h.pid} on host ${h.host} (site ${h.site}, state ${h.state}${h.backup ? `, backup ${h.backup}` : ''})`;
    const ago = `heartbeat ${Math.max(0, Math.round(ageMs / 1000))} s ago`;
    const released = `a holder that died releases the lease ${Math.round(this.ttlMs / 1000)} s after its last heartbeat`;
    if (this.kind.role === 'backup') {
      return new WalvaultError(
        'ARCHIVE_LOCKED',
        `archive ${this.storage.description} has a base backup running: ${who} ${what.replace('archive lease', 'backup lease')}, ${ago}`, { fix: `one backup at a time per archive: wait for it to finish (${released})` },
      );
    }
    return new WalvaultError(
      'ARCHIVE_LOCKED',
      `archive ${this.storage.description} has another writer: ${who} ${what}, ${ago}`, { fix: `one archive takes one receiver: stop that one, ` + `or give this site its own archive (${released})` },
    );
  }
}
