/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and final xor
 * 0xFFFFFFFF, as @node-rs/crc32 computes it) of a concatenation from the CRCs of its parts:
 * crc(A || B) = shift(crc(A), |B|) xor crc(B), where shift appends |B| zero bytes to A's
 * register (the conditioning constants cancel out). The shift is a linear map over GF(2):
 * a 32x32 bit matrix, here one per power of two of the length, squared from the one-byte
 * operator once, so a combine costs one matrix-vector product per set bit of the length.
 *
 * Why: a restored file rebuilt out of order (blocks from several backups) gets the checksum
 * its new manifest states from the CRCs of the pieces as they were written, without reading
 * it back.
 */

const POLY = 0x82f63b78;

/** mat x vec over GF(2): mat[i] is the image of bit i. */
function times(mat: Uint32Array, vec: number): number {
  let sum = 0;
  for (let i = 0; vec !== 0; i++, vec >>>= 1) if (vec & 1) sum ^= mat[i];
  return sum >>> 0;
}

function square(mat: Uint32Array): Uint32Array {
  const out = new Uint32Array(32);
  for (let n = 0; n < 32; n++) out[n] = times(mat, mat[n]);
  return out;
}

/** ZEROS[k]: the register after 2^k zero bytes (lengths up to 2^48). */
const ZEROS: Uint32Array[] = (() => {
  // One zero bit: shift right, folding the polynomial in when the low bit falls out.
  const bit = new Uint32Array(32);
  bit[0] = POLY;
  for (let n = 1; n < 32; n++) bit[n] = (1 << (n - 1)) >>> 0;
  let op = square(square(square(bit))); // 8 bits: one byte
  const out = [op];
  for (let k = 1; k < 48; k++) out.push((op = square(op)));
  return out;
})();

/** The CRC register `crc` after `length` more zero bytes (no conditioning). */
function shift(crc: number, length: number): number {
  for (let k = 0; length > 0; k++, length = Math.floor(length / 2)) if (length % 2 === 1) crc = times(ZEROS[k], crc);
  return crc;
}

/** CRC-32C of A || B, given crcA, crcB and the length of B in bytes. */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB <= 0) return crcA >>> 0;
  return (shift(crcA >>> 0, lengthB) ^ crcB) >>> 0;
}

/** CRC-32C of `length` zero bytes. */
export function crc32cOfZeros(length: number): number {
  // crc(0^n) = shift(crc(empty) conditioned...) : computed as the combine of the empty
  // string's CRC (0) with a register that starts at all ones and sees n zeros.
  if (length <= 0) return 0;
  return (shift(0xffffffff, length) ^ 0xffffffff) >>> 0;
}

/**
 * crc32cCombine for one length of B, tabulated: the shift is linear, so it is the xor of the
 * shifts of the register's four bytes, each looked up (where crc32cCombine walks a matrix per
 * set bit of the length). For many combines of one length: a delta restore folds each file's
 * CRC out of one per 8 KiB block.
 */
export function crc32cCombiner(lengthB: number): (crcA: number, crcB: number) => number {
  if (lengthB <= 0) return (crcA) => crcA >>> 0;
  const [t0, t1, t2, t3] = [0, 8, 16, 24].map((bits) => {
    const table = new Uint32Array(256);
    for (let v = 0; v < 256; v++) table[v] = shift((v << bits) >>> 0, lengthB);
    return table;
  });
  return (crcA, crcB) => (t0[crcA & 0xff] ^ t1[(crcA >>> 8) & 0xff] ^ t2[(crcA >>> 16) & 0xff] ^ t3[crcA >>> 24] ^ crcB) >>> 0;
}
