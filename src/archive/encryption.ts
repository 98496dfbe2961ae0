/**
 * Client-side encryption of object bodies.
 *
 * Each object gets a fresh random 256-bit data key. The data key encrypts the body frame by
 * frame with AES-256-GCM, and is itself stored in the envelope's extension, wrapped for the
 * site's X25519 public key: an ephemeral X25519 key pair is made per object, the shared
 * secret goes through HKDF-SHA256 to a key-encryption key, and that key seals the data key
 * with AES-256-GCM. So the backup host needs only the public key; restore needs the private
 * key.
 *
 * Extension entry "enc" (JSON):
 *   alg   "x25519-hkdf-sha256-a256gcm"
 *   kid   key id: first 16 hex digits of SHA-256 over the public key's raw 32 bytes
 *   epk   ephemeral public key, raw 32 bytes, base64
 *   wk    wrapped data key: 32 bytes of ciphertext + 16-byte GCM tag, base64
 *
 * Frame encryption: nonce (12 bytes) = frame index (u64 BE) + final flag (u32 BE, 0 or 1),
 * unique per frame under a per-object key, and the final flag stops truncation at a frame
 * boundary from passing as a whole object. The additional data is the envelope header (so
 * its sizes, checksum and wrapped key cannot be swapped) followed by the frame's own header.
 */
import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, KeyObject, randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import { WalvaultError } from '../errors';

const ENCRYPTION_NAMES = ['none', 'aes-256-gcm'] as const;
export type EncryptionName = (typeof ENCRYPTION_NAMES)[number];
/** Encryption ids are part of the envelope format: never renumber. */
export const ENCRYPTION_IDS: Record<EncryptionName, number> = { none: 0, 'aes-256-gcm': 1 };

const KEY_WRAP_ALG = 'x25519-hkdf-sha256-a256gcm';
export const GCM_TAG_LENGTH = 16;
const HKDF_INFO = Buffer.from('walvault v1 data key wrap', 'utf8');

export interface PublicKey {
  readonly keyId: string;
  readonly key: KeyObject;
  /** Where it came from, for messages. */
  readonly origin: string;
}

export interface PrivateKey {
  readonly keyId: string;
  readonly key: KeyObject;
  readonly origin: string;
}

export interface WrappedKeyInfo {
  alg: string;
  kid: string;
  epk: string;
  wk: string;
}

function rawPublic(key: KeyObject): Buffer {
  // The raw key is the last 32 bytes of the DER SubjectPublicKeyInfo of an X25519 key.
  const der = key.export({ type: 'spki', format: 'der' });
  return der.subarray(der.length - 32);
}

function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(rawPublic(publicKey)).digest('hex').slice(0, 16);
}

function keyProblem(origin: string, what: string): WalvaultError {
  return new WalvaultError('CONFIG_INVALID', `${origin}: ${what}`, { fix: `create a key pair with "walvault keys create"` });
}

function readKeyFile(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw keyProblem(file, `cannot read the ${what} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

export function loadPublicKey(file: string): PublicKey {
  return publicKeyFromPem(readKeyFile(file, 'public key'), file);
}

/** A public key from its PEM text; `origin` names where the text came from, for messages. */
export function publicKeyFromPem(pem: Buffer | string, origin: string): PublicKey {
  if (pem.includes('PRIVATE KEY')) {
    throw keyProblem(origin, 'this is a private key; the backup host needs only the public key (keep the private key off it)');
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    // Never echo the text: someone may have pointed this at the private key.
    throw keyProblem(origin, 'not a PEM public key');
  }
  if (key.asymmetricKeyType !== 'x25519') throw keyProblem(origin, `a ${key.asymmetricKeyType} key, but walvault encrypts for X25519 keys`);
  return { keyId: keyIdOf(key), key, origin };
}

export function publicKeyPem(key: PublicKey): string {
  return key.key.export({ type: 'spki', format: 'pem' }) as string;
}

export function loadPrivateKey(file: string): PrivateKey {
  const pem = readKeyFile(file, 'private key');
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw keyProblem(file, 'not an unencrypted PEM private key');
  }
  if (key.asymmetricKeyType !== 'x25519') throw keyProblem(file, `a ${key.asymmetricKeyType} key, but walvault uses X25519 keys`);
  return { keyId: keyIdOf(createPublicKey(key)), key, origin: file };
}

/** Writes a new key pair; refuses to replace either file. Returns the key id. */
export async function createKeyPair(privateFile: string, publicFile: string): Promise<string> {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
  for (const f of [privateFile, publicFile]) {
    if (await fsp.stat(f).then(() => true, () => false)) {
      throw new WalvaultError('CONFIG_INVALID', `${f} already exists`, { fix: `walvault never replaces a key file (objects encrypted for it would become unreadable): choose another path` });
    }
  }
  await writeNew(privateFile, privatePem, 0o600);
  try {
    await writeNew(publicFile, publicPem, 0o644);
  } catch (err) {
    await fsp.rm(privateFile, { force: true });
    throw err;
  }
  return keyIdOf(publicKey);
}

async function writeNew(file: string, text: string, mode: number): Promise<void> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'wx', mode);
  } catch (err) {
    throw new WalvaultError('CONFIG_INVALID', `cannot create ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function kek(shared: Buffer, epkRaw: Buffer, recipientRaw: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([epkRaw, recipientRaw]), HKDF_INFO, 32));
}

/** A fresh data key and its wrapped form for the envelope extension. */
export function newDataKey(recipient: PublicKey): { dataKey: Buffer; info: WrappedKeyInfo } {
  const dataKey = randomBytes(32);
  const eph = generateKeyPairSync('x25519');
  const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: recipient.key });
  const epkRaw = rawPublic(eph.publicKey);
  // The key-encryption key is used once, so a fixed nonce is safe.
  const cipher = createCipheriv('aes-256-gcm', kek(shared, epkRaw, rawPublic(recipient.key)), Buffer.alloc(12));
  const wk = Buffer.concat([cipher.update(dataKey), cipher.final(), cipher.getAuthTag()]);
  return { dataKey, info: { alg: KEY_WRAP_ALG, kid: recipient.keyId, epk: epkRaw.toString('base64'), wk: wk.toString('base64') } };
}

/** The data key of an object, or a clear error naming the object and what to do. */
export function unwrapDataKey(ext: unknown, privateKey: PrivateKey | undefined, label: string): Buffer {
  const info = ext as Partial<WrappedKeyInfo> | undefined;
  if (!info || info.alg !== KEY_WRAP_ALG || typeof info.kid !== 'string' || typeof info.epk !== 'string' || typeof info.wk !== 'string') {
    throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: encrypted, but its header lacks a usable wrapped key`);
  }
  if (!privateKey) {
    throw new WalvaultError(
      'ARCHIVE_KEY_REQUIRED',
      `${label} is encrypted for key ${info.kid}: give its private key with --private-key FILE, or set encryption_private_key_file in the site's section of the config file`,
    );
  }
  if (privateKey.keyId !== info.kid) {
    throw new WalvaultError('ARCHIVE_KEY_MISMATCH', `${label} is encrypted for key ${info.kid}, but the private key ${privateKey.origin} is key ${privateKey.keyId}`);
  }
  const epkRaw = Buffer.from(info.epk, 'base64');
  const wk = Buffer.from(info.wk, 'base64');
  if (epkRaw.length !== 32 || wk.length !== 32 + GCM_TAG_LENGTH) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: its wrapped key has the wrong size`);
  const epk = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, epkRaw]), format: 'der', type: 'spki' });
  const shared = diffieHellman({ privateKey: privateKey.key, publicKey: epk });
  const decipher = createDecipheriv('aes-256-gcm', kek(shared, epkRaw, rawPublic(createPublicKey(privateKey.key))), Buffer.alloc(12));
  decipher.setAuthTag(wk.subarray(32));
  try {
    return Buffer.concat([decipher.update(wk.subarray(0, 32)), decipher.final()]);
  } catch {
    throw new WalvaultError('ARCHIVE_AUTH_FAILED', `${label}: its data key fails authentication: the header was altered, or the object was not encrypted for this key`);
  }
}

/** DER prefix of an X25519 SubjectPublicKeyInfo (RFC 8410), before the 32 raw key bytes. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function frameNonce(index: number, final: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(BigInt(index), 0);
  nonce.writeUInt32BE(final ? 1 : 0, 8);
  return nonce;
}

export function encryptFrame(dataKey: Buffer, index: number, final: boolean, aad: Buffer[], plaintext: Buffer): Buffer {
  return Buffer.concat(encryptFramePieces(dataKey, index, final, aad, plaintext));
}

/**
 * The same bytes as encryptFrame, as the pieces the cipher produced (ciphertext, then the tag)
 * for the write path to hand on without joining them. GCM takes additional data in several
 * calls as if it were one, so the pieces of `aad` are not joined either.
 */
export function encryptFramePieces(dataKey: Buffer, index: number, final: boolean, aad: Buffer[], plaintext: Buffer): Buffer[] {
  const cipher = createCipheriv('aes-256-gcm', dataKey, frameNonce(index, final));
  for (const a of aad) cipher.setAAD(a);
  const body = cipher.update(plaintext);
  // GCM is a stream mode: final() produces nothing, but must run to give the tag.
  const rest = cipher.final();
  return rest.length > 0 ? [body, rest, cipher.getAuthTag()] : [body, cipher.getAuthTag()];
}

export function decryptFrame(dataKey: Buffer, index: number, final: boolean, aad: Buffer[], payload: Buffer, label: string): Buffer {
  if (payload.length < GCM_TAG_LENGTH) throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: frame ${index} is too short to be encrypted`);
  const decipher = createDecipheriv('aes-256-gcm', dataKey, frameNonce(index, final));
  decipher.setAAD(Buffer.concat(aad));
  decipher.setAuthTag(payload.subarray(payload.length - GCM_TAG_LENGTH));
  try {
    const plain = decipher.update(payload.subarray(0, payload.length - GCM_TAG_LENGTH));
    // GCM is a stream mode: final() only checks the tag (no bytes), so no copy to join them.
    const rest = decipher.final();
    return rest.length === 0 ? plain : Buffer.concat([plain, rest]);
  } catch {
    throw new WalvaultError('ARCHIVE_AUTH_FAILED', `${label}: frame ${index} fails authentication: the object was altered or damaged in storage`);
  }
}
