// Stable descending argsort of float32 scores by LSD radix sort on the bit patterns.
// Pixel metrics sort millions of scores; a comparison sort through Array.prototype.sort
// is an order of magnitude slower and allocates a boxed array.

const DIGIT_BITS = 11;
const BUCKETS = 1 << DIGIT_BITS;
const DIGIT_MASK = BUCKETS - 1;
const PASSES = 3; // 11 + 11 + 10 bits cover the 32-bit key
const SIGN = 0x80000000;

/**
 * Indices of `scores` ordered by decreasing value; equal values keep their original order
 * (stable). -0 and +0 are equal. Infinities are allowed; NaN is an error.
 */
export function argsortDescending(scores: Float32Array): Uint32Array {
  const n = scores.length;
  const bits = new Uint32Array(scores.buffer, scores.byteOffset, n);
  let keys = new Uint32Array(n);
  const histograms = new Uint32Array(PASSES * BUCKETS);

  for (let i = 0; i < n; i++) {
    let u = bits[i];
    if ((u & 0x7fffffff) > 0x7f800000) throw new Error(`argsortDescending: scores[${i}] is NaN`);
    if (u === SIGN) u = 0; // -0 sorts together with +0
    // Map so that ascending unsigned key order is descending numeric order:
    // positives (largest first) get the inverted magnitude, negatives keep their bits
    // (a larger magnitude negative already has a larger unsigned pattern).
    const key = (u & SIGN) !== 0 ? u : ~u & 0x7fffffff;
    keys[i] = key;
    histograms[key & DIGIT_MASK]++;
    histograms[BUCKETS + ((key >>> DIGIT_BITS) & DIGIT_MASK)]++;
    histograms[2 * BUCKETS + (key >>> (2 * DIGIT_BITS))]++;
  }

  let order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (n < 2) return order;

  let keysOut = new Uint32Array(n);
  let orderOut = new Uint32Array(n);
  const offsets = new Uint32Array(BUCKETS);

  for (let pass = 0; pass < PASSES; pass++) {
    const shift = pass * DIGIT_BITS;
    const base = pass * BUCKETS;
    // A digit shared by every key leaves the order unchanged: skip the scatter.
    let skip = false;
    let running = 0;
    for (let b = 0; b < BUCKETS; b++) {
      const c = histograms[base + b];
      if (c === n) skip = true;
      offsets[b] = running;
      running += c;
    }
    if (skip) continue;

    for (let i = 0; i < n; i++) {
      const key = keys[i];
      const dest = offsets[(key >>> shift) & DIGIT_MASK]++;
      keysOut[dest] = key;
      orderOut[dest] = order[i];
    }
    [keys, keysOut] = [keysOut, keys];
    [order, orderOut] = [orderOut, order];
  }
  return order;
}
