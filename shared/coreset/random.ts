// A small seeded PRNG (xoshiro128**, seeded through splitmix32) so that coreset selection is
// reproducible across runs and machines; Math.random cannot be seeded.

export class SeededRandom {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  /** Second Box-Muller output, kept for the next gaussian() call. */
  private spare = 0;
  private hasSpare = false;

  constructor(seed: number) {
    if (!Number.isFinite(seed) || !Number.isInteger(seed)) {
      throw new Error(`seed must be a finite integer, got ${seed}`);
    }
    // splitmix32 spreads even tiny seeds (0, 1, 2) over the whole state; an all-zero state would be stuck.
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** Uniform 32-bit unsigned integer. */
  uint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  float(): number {
    const hi = this.uint32() >>> 5; // 27 bits
    const lo = this.uint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`int(n): n must be a positive integer, got ${n}`);
    return Math.floor(this.float() * n);
  }

  /** Standard normal N(0, 1) by the Box-Muller transform. */
  gaussian(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    let u = 0;
    while (u === 0) u = this.float(); // log(0) would be -Infinity
    const v = this.float();
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * v;
    this.spare = r * Math.sin(theta);
    this.hasSpare = true;
    return r * Math.cos(theta);
  }

  /** `k` distinct integers from [0, n), in draw order. */
  sampleWithoutReplacement(n: number, k: number): Uint32Array {
    if (!Number.isInteger(k) || k < 0 || k > n) {
      throw new Error(`sampleWithoutReplacement: k must be an integer in [0, ${n}], got ${k}`);
    }
    const out = new Uint32Array(k);
    if (k * 4 > n) {
      // Dense: partial Fisher-Yates over a full permutation.
      const perm = new Uint32Array(n);
      for (let i = 0; i < n; i++) perm[i] = i;
      for (let i = 0; i < k; i++) {
        const j = i + this.int(n - i);
        const tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
        out[i] = perm[i];
      }
      return out;
    }
    // Sparse: rejection, cheap when k is much smaller than n (the usual 10 start points).
    const seen = new Set<number>();
    for (let i = 0; i < k; ) {
      const j = this.int(n);
      if (seen.has(j)) continue;
      seen.add(j);
      out[i++] = j;
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
