/**
 * The settings an archive records when it is created (in cluster.json, which never changes
 * afterwards): the codec and the public key objects are encrypted for. A later command that
 * is not told a codec or a key uses the archive's, so `run --compression zstd` followed by a
 * bare `backup push` does not store an uncompressed backup without a word.
 *
 *   - codec: not named by the command: the archive's. Named and different: used as asked, with
 *     a warning (every object names its own codec, so both kinds restore).
 *   - key: not named, for an encrypted archive: the key this site pinned in its state
 *     directory when it first wrote there with the archive's key (./key-pin.ts), if that pin
 *     agrees with cluster.json; a pin that disagrees is refused (ARCHIVE_KEY_CHANGED). With no
 *     pin (a command without a state directory, such as a bare `wal-push --archive`, or a
 *     site that never wrote with the key): refused, naming the recorded key id. The key is
 *     never taken from cluster.json alone: that object is not authenticated, and whoever can
 *     write the store could put their own key there and have new WAL encrypted for them.
 *     Named and different: refused, because a restore decrypts with one private key, and
 *     objects for two keys would leave backups that cannot be restored with either alone.
 *     Named for an archive created without encryption: used as asked, with a warning that
 *     commands not naming it keep the archive's setting.
 * Archives created before this record have no settings: every command uses its own, as then.
 */
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import type { Archive } from './archive';
import type { ClusterInfo } from './cluster-marker';
import { CODEC_NAMES, type CodecName } from './codecs';
import { publicKeyFromPem, publicKeyPem, type PublicKey } from './encryption';
import { KEY_PIN_FILE, pinKey, pinnedKey, type PinnedKey } from './key-pin';

export interface RecordedSettings {
  compression: CodecName;
  /** Null: the archive was created storing unencrypted objects. */
  encryption: { keyId: string; publicKey: string } | null;
}

/** What a command writes with, and whether it was told the codec (false: the site's default). */
export interface AskedSettings {
  codec: CodecName;
  codecChosen: boolean;
  recipient?: PublicKey;
}

/** Where the notes go: a pino logger, or something as small. */
export interface NoteLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

export interface SettingsNote {
  level: 'info' | 'warn';
  msg: string;
  fields: Record<string, unknown>;
}

export function recordSettings(asked: { codec?: CodecName; recipient?: PublicKey }): RecordedSettings {
  const r = asked.recipient;
  return { compression: asked.codec ?? 'none', encryption: r ? { keyId: r.keyId, publicKey: publicKeyPem(r) } : null };
}

/** The `settings` member of cluster.json; undefined when absent (an archive older than the record). */
export function parseRecordedSettings(value: unknown, label: string): RecordedSettings | undefined {
  if (value === undefined) return undefined;
  const bad = (what: string) => new WalvaultError('ARCHIVE_CORRUPT', `${label}: settings ${what}`);
  if (typeof value !== 'object' || value === null) throw bad('is not an object');
  const v = value as Record<string, unknown>;
  if (typeof v.compression !== 'string' || !(CODEC_NAMES as readonly string[]).includes(v.compression)) throw bad(`name no known codec (${JSON.stringify(v.compression)})`);
  const e = v.encryption;
  if (e === null) return { compression: v.compression as CodecName, encryption: null };
  if (typeof e !== 'object' || e === undefined || typeof (e as Record<string, unknown>).keyId !== 'string' || typeof (e as Record<string, unknown>).publicKey !== 'string') {
    throw bad('have no valid encryption entry');
  }
  const enc = e as { keyId: string; publicKey: string };
  return { compression: v.compression as CodecName, encryption: { keyId: enc.keyId, publicKey: enc.publicKey } };
}

/**
 * What this command writes with, given what the archive recorded and the key the site pinned
 * (null: none, or no state directory); refuses a different key.
 */
export function reconcileSettings(
  recorded: RecordedSettings,
  asked: AskedSettings,
  archive: string,
  pinned: (PinnedKey & { where: string }) | null = null,
): { codec: CodecName; recipient?: PublicKey; notes: SettingsNote[] } {
  const notes: SettingsNote[] = [];
  let codec = asked.codec;
  if (!asked.codecChosen) {
    if (recorded.compression !== asked.codec) {
      notes.push({ level: 'info', msg: `archive ${archive} stores objects with ${recorded.compression} (its setting since it was created); so does this command`, fields: { compression: recorded.compression } });
    }
    codec = recorded.compression;
  } else if (recorded.compression !== asked.codec) {
    notes.push({
      level: 'warn',
      msg:
        `archive ${archive} was created storing objects with ${recorded.compression}, but this command was told ${asked.codec}: new objects use ${asked.codec} as asked ` +
        `(each object names its codec, so both restore); leave the option out to use the archive's`,
      fields: { archiveCompression: recorded.compression, compression: asked.codec },
    });
  }

  let recipient = asked.recipient;
  const theirs = recorded.encryption;
  if (recipient && theirs && recipient.keyId !== theirs.keyId && pinned?.keyId === recipient.keyId) {
    throw new WalvaultError(
      'ARCHIVE_KEY_CHANGED',
      `archive ${archive} records public key ${theirs.keyId} in its cluster.json, but this command was given key ${recipient.keyId}, the one this site pinned in ${pinned.where} ` +
        `when it first wrote there (${pinned.pinnedAt}): cluster.json changed since; it is not authenticated, so if nobody here changed it, someone who can write the store did`, { fix: `nothing was written` },
    );
  }
  if (recipient && theirs && recipient.keyId !== theirs.keyId) {
    throw new WalvaultError(
      'ARCHIVE_KEY_MISMATCH',
      `archive ${archive} encrypts for public key ${theirs.keyId} (recorded when it was created), but this command was given key ${recipient.keyId} (${recipient.origin}): ` +
        `a restore decrypts with one private key, so objects for two keys would leave backups unrestorable`, { fix: `give the archive's public key, or use a new archive for the new key` },
    );
  }
  if (recipient && !theirs) {
    notes.push({
      level: 'warn',
      msg:
        `archive ${archive} was created without encryption, but this command encrypts for key ${recipient.keyId} as asked; commands that do not name the key keep storing ` +
        `unencrypted objects (the archive's setting): give the key to every command, or start a new archive to have everything encrypted`,
      fields: { keyId: recipient.keyId },
    });
  }
  if (!recipient && theirs && pinned) {
    if (pinned.keyId !== theirs.keyId || pinned.publicKey !== theirs.publicKey) {
      throw new WalvaultError(
        'ARCHIVE_KEY_CHANGED',
        `archive ${archive} records public key ${theirs.keyId} in its cluster.json, but this site pinned key ${pinned.keyId} in ${pinned.where} when it first wrote there (${pinned.pinnedAt}): ` +
          `cluster.json is not authenticated, so if nobody here changed the key, someone who can write the store did`, { fix: `nothing was written. ` + `Give the key to encrypt for with --encryption-public-key FILE (or encryption_public_key_file in the site)` },
      );
    }
    recipient = publicKeyFromPem(pinned.publicKey, `the key pinned in ${pinned.where}`);
    if (recipient.keyId !== pinned.keyId) {
      throw new WalvaultError('STATE_CORRUPT', `${pinned.where}: the pinned key's id is ${recipient.keyId}, not the ${pinned.keyId} it is filed under`, { fix: `remove the file and give the key once with --encryption-public-key` });
    }
    notes.push({ level: 'info', msg: `archive ${archive} encrypts for public key ${theirs.keyId}; so does this command (the key this site pinned when it first wrote there)`, fields: { keyId: theirs.keyId } });
  }
  if (!recipient && theirs) {
    throw new WalvaultError(
      'ARCHIVE_KEY_REQUIRED',
      `archive ${archive} encrypts for public key ${theirs.keyId} (recorded when it was created), but this command names no key and would store unencrypted objects ` +
        `(and has no key pinned for it: a site pins the key in its state directory the first time it writes with it): ` +
        `give that public key with --encryption-public-key FILE (or encryption_public_key_file in the site)`,
    );
  }
  return { codec, recipient, notes };
}

/**
 * Claims the archive for the cluster (./archive.ts ensureCluster) and takes on its recorded
 * settings where the command named none, logging what that changed. Every command that writes
 * WAL or backups starts here.
 */
export async function claimArchive(archive: Archive, info: ClusterInfo, log: NoteLog, stateDir?: string): Promise<ClusterInfo> {
  const cluster = await archive.ensureCluster(info);
  await adoptSettings(archive, cluster, log, stateDir);
  return cluster;
}

/**
 * Takes on the archive's recorded settings (with the key the site pinned in `stateDir`, when
 * given), then pins the archive's key when this command writes with it and the site had not
 * pinned it yet. A pin that cannot be written is a warning: later commands then ask for the key.
 */
export async function adoptSettings(archive: Archive, cluster: ClusterInfo, log: NoteLog, stateDir?: string): Promise<void> {
  const where = archive.storage.description;
  const pin = stateDir && cluster.settings?.encryption ? await pinnedKey(stateDir, where) : null;
  const pinned = pin && stateDir ? { ...pin, where: path.join(stateDir, KEY_PIN_FILE) } : null;
  for (const n of archive.adoptRecordedSettings(cluster, pinned)) log[n.level](n.fields, n.msg);
  const theirs = cluster.settings?.encryption;
  const used = archive.recipient;
  if (!stateDir || !theirs || !used || used.keyId !== theirs.keyId) return;
  if (pin?.keyId === theirs.keyId && pin.publicKey === theirs.publicKey) return;
  try {
    await pinKey(stateDir, where, theirs);
    log.info({ keyId: theirs.keyId }, `pinned public key ${theirs.keyId} of archive ${where} in ${path.join(stateDir, KEY_PIN_FILE)}: later commands of this site that name no key use it`);
  } catch (err) {
    // Not a warning: this command named the key, and archive_command would repeat it per segment.
    log.info({ keyId: theirs.keyId }, `cannot pin public key ${theirs.keyId} in ${path.join(stateDir, KEY_PIN_FILE)} (${(err as Error).message}): later commands must name the key`);
  }
}
