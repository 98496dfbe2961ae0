/**
 * mulberry32: a small seeded PRNG, uniform in [0, 1). Tests that draw random values take them
 * from it so that a failing run can be replayed with the same seed (WALVAULT_TEST_SEED).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * xorshift32: seeded pseudo-random uint32s, cheap enough to fill megabytes (synthetic WAL
 * bodies), the same bytes for the same seed on every run.
 */
export function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}
