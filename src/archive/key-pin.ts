/**
 * The public key a site encrypts for, pinned in its state directory the first time it writes
 * to an encrypted archive with that key (STATE/archive-keys.json, mode 0600, one entry per
 * archive). Later commands of the same site that name no key use the pinned one: the state
 * directory is the backup host's own and trusted, unlike cluster.json, which anyone who can
 * write the store could rewrite to name their own key.
 *
 * File layout (JSON, UTF-8):
 *   version   1
 *   archives  { "<storage description>": { keyId, publicKey (PEM), pinnedAt (ISO 8601) } }
 *
 * A pin that disagrees with the key cluster.json records is refused (ARCHIVE_KEY_CHANGED)
 * rather than settled either way: one of them changed after the site first wrote, and only
 * the operator knows which is right.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import { replaceFileDurably } from '../wal/fsync-dir';

export const KEY_PIN_FILE = 'archive-keys.json';

export interface PinnedKey {
  keyId: string;
  publicKey: string;
  pinnedAt: string;
}

interface PinFile {
  version: 1;
  archives: Record<string, PinnedKey>;
}

function pinPath(stateDir: string): string {
  return path.join(stateDir, KEY_PIN_FILE);
}

async function readPins(stateDir: string): Promise<PinFile> {
  const file = pinPath(stateDir);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, archives: {} };
    throw new WalvaultError('STATE_CORRUPT', `cannot read ${file}: ${(err as Error).message}`, { fix: `fix its permissions, or give the key with --encryption-public-key`, cause: err });
  }
  const bad = (what: string) =>
    new WalvaultError('STATE_CORRUPT', `${file} ${what}`, { fix: `remove it and give the archive's public key once with --encryption-public-key (it is pinned again)` });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw bad('is not JSON');
  }
  const p = parsed as Partial<PinFile>;
  if (typeof p !== 'object' || p === null || p.version !== 1 || typeof p.archives !== 'object' || p.archives === null) throw bad('is not a key pin file of version 1');
  for (const [where, pin] of Object.entries(p.archives)) {
    if (typeof pin?.keyId !== 'string' || typeof pin.publicKey !== 'string' || typeof pin.pinnedAt !== 'string') throw bad(`has a damaged entry for ${where}`);
  }
  return p as PinFile;
}

/** The key this state directory pinned for the archive, or null. */
export async function pinnedKey(stateDir: string, archive: string): Promise<PinnedKey | null> {
  return (await readPins(stateDir)).archives[archive] ?? null;
}

/** Records (or replaces) the archive's pinned key: written whole, fsynced, renamed into place. */
export async function pinKey(stateDir: string, archive: string, key: { keyId: string; publicKey: string }): Promise<void> {
  const pins = await readPins(stateDir);
  pins.archives[archive] = { keyId: key.keyId, publicKey: key.publicKey, pinnedAt: new Date().toISOString() };
  await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
  await replaceFileDurably(pinPath(stateDir), `${JSON.stringify(pins, null, 2)}\n`);
}
