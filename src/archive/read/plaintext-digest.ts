/**
 * The last check of every read: the plaintext's size and SHA-256 against the envelope
 * header's, the object's identity. The chunk that completes the header's size is passed on
 * only once the digest matches, so a consumer that acts on chunks as they come never gets the
 * end of an object that fails; and the iteration ends without an error only when every
 * stage before this one has finished its checks too. Consumers commit (rename a file into
 * place, call a part good) only after that.
 */
import { WalvaultError } from '../../errors';
import type { EnvelopeHeader } from '../envelope';
import type { HasherFactory } from './hashers';

export async function* checkPlaintext(chunks: AsyncIterable<Buffer>, header: EnvelopeHeader, newHasher: HasherFactory, label: string): AsyncGenerator<Buffer> {
  const hasher = newHasher();
  const size = header.plaintextSize;
  let seen = 0;
  let checked = false;
  const verdict = async () => {
    const digest = await hasher.digest();
    checked = true;
    if (!digest.equals(header.sha256)) {
      throw new WalvaultError('ARCHIVE_CORRUPT', `${label}: checksum mismatch: content has sha256 ${digest.toString('hex')}, the header says ${header.sha256.toString('hex')}`);
    }
  };
  try {
    for await (const chunk of chunks) {
      if (checked ? chunk.length > 0 : seen + chunk.length > size) throw sizeMismatch(label, `more than the ${size} bytes the header says`);
      if (checked) continue;
      await hasher.update(chunk);
      seen += chunk.length;
      if (seen === size) await verdict();
      yield chunk;
    }
    if (seen !== size) throw sizeMismatch(label, `${seen} bytes, the header says ${size}`);
    if (!checked) await verdict();
  } finally {
    hasher.dispose();
  }
}

function sizeMismatch(label: string, what: string): WalvaultError {
  return new WalvaultError('ARCHIVE_CORRUPT', `${label}: size mismatch: the content is ${what}`);
}
