/**
 * Installs the bench's byte counter (../../bench/byte-counter.ts) in this thread when first
 * imported: import it before anything else, so modules that keep a reference to a counted
 * function (crypto.createHash, say) get the counted one.
 */
import { installByteCounter } from '../../bench/byte-counter';

export const counterReady = installByteCounter();
