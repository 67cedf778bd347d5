// Brute-force k-nearest-neighbour search over a row-major float32 matrix. Squared distances come
// from ||q||^2 + ||b||^2 - 2 q.b (one multiply-add per element instead of three operations), summed
// in doubles; blocks of bank rows are reused by groups of four queries while still in cache.

export interface NeighbourResult {
  /** Euclidean distances, k per query, nearest first. */
  distances: Float32Array;
  /** Row indices into the bank, k per query; ties go to the lower index. */
  indices: Uint32Array;
}

/** Rows of bank per block: 64 x 1024 floats = 256 KiB, sized to stay in L2 across a query group. */
const BANK_BLOCK = 64;

/** Squared Euclidean norm of each row. */
export function squaredNorms(data: Float32Array, count: number, dim: number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    let s = 0;
    const o = i * dim;
    for (let j = 0; j < dim; j++) s += data[o + j] * data[o + j];
    out[i] = s;
  }
  return out;
}

/**
 * Exact k nearest bank rows for every query row. `bankNorms` must be squaredNorms(bank).
 * Callers validate shapes; this is the hot loop.
 */
export function exactKnn(
  bank: Float32Array,
  bankNorms: Float64Array,
  bankCount: number,
  dim: number,
  queries: Float32Array,
  queryCount: number,
  k: number,
): NeighbourResult {
  const bestD = new Float64Array(queryCount * k).fill(Infinity);
  const bestI = new Uint32Array(queryCount * k);
  const qNorms = squaredNorms(queries, queryCount, dim);
  const insert = (q: number, d2: number, b: number): void => {
    const base = q * k;
    if (!(d2 < bestD[base + k - 1])) return;
    // Bank rows arrive in increasing order, so inserting after equal distances keeps ties by index.
    let pos = k - 1;
    while (pos > 0 && bestD[base + pos - 1] > d2) {
      bestD[base + pos] = bestD[base + pos - 1];
      bestI[base + pos] = bestI[base + pos - 1];
      pos--;
    }
    bestD[base + pos] = d2;
    bestI[base + pos] = b;
  };

  for (let b0 = 0; b0 < bankCount; b0 += BANK_BLOCK) {
    const b1 = Math.min(bankCount, b0 + BANK_BLOCK);
    let q = 0;
    for (; q + 4 <= queryCount; q += 4) {
      const o0 = q * dim;
      const o1 = o0 + dim;
      const o2 = o1 + dim;
      const o3 = o2 + dim;
      let b = b0;
      // Two bank rows at a time: 6 loads feed 8 multiply-adds.
      for (; b + 2 <= b1; b += 2) {
        const oa = b * dim;
        const ob = oa + dim;
        let a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        for (let j = 0; j < dim; j++) {
          const va = bank[oa + j];
          const vb = bank[ob + j];
          const x0 = queries[o0 + j];
          const x1 = queries[o1 + j];
          const x2 = queries[o2 + j];
          const x3 = queries[o3 + j];
          a0 += x0 * va; a1 += x1 * va; a2 += x2 * va; a3 += x3 * va;
          c0 += x0 * vb; c1 += x1 * vb; c2 += x2 * vb; c3 += x3 * vb;
        }
        // Rounding can push a true zero slightly negative, hence the clamps.
        const na = bankNorms[b];
        const nb = bankNorms[b + 1];
        insert(q, Math.max(0, qNorms[q] + na - 2 * a0), b);
        insert(q + 1, Math.max(0, qNorms[q + 1] + na - 2 * a1), b);
        insert(q + 2, Math.max(0, qNorms[q + 2] + na - 2 * a2), b);
        insert(q + 3, Math.max(0, qNorms[q + 3] + na - 2 * a3), b);
        insert(q, Math.max(0, qNorms[q] + nb - 2 * c0), b + 1);
        insert(q + 1, Math.max(0, qNorms[q + 1] + nb - 2 * c1), b + 1);
        insert(q + 2, Math.max(0, qNorms[q + 2] + nb - 2 * c2), b + 1);
        insert(q + 3, Math.max(0, qNorms[q + 3] + nb - 2 * c3), b + 1);
      }
      for (; b < b1; b++) {
        const ob = b * dim;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        for (let j = 0; j < dim; j++) {
          const v = bank[ob + j];
          s0 += queries[o0 + j] * v;
          s1 += queries[o1 + j] * v;
          s2 += queries[o2 + j] * v;
          s3 += queries[o3 + j] * v;
        }
        const nb = bankNorms[b];
        insert(q, Math.max(0, qNorms[q] + nb - 2 * s0), b);
        insert(q + 1, Math.max(0, qNorms[q + 1] + nb - 2 * s1), b);
        insert(q + 2, Math.max(0, qNorms[q + 2] + nb - 2 * s2), b);
        insert(q + 3, Math.max(0, qNorms[q + 3] + nb - 2 * s3), b);
      }
    }
    for (; q < queryCount; q++) {
      const oq = q * dim;
      for (let b = b0; b < b1; b++) {
        const ob = b * dim;
        let s = 0;
        for (let j = 0; j < dim; j++) s += queries[oq + j] * bank[ob + j];
        insert(q, Math.max(0, qNorms[q] + bankNorms[b] - 2 * s), b);
      }
    }
  }

  const distances = new Float32Array(queryCount * k);
  for (let i = 0; i < distances.length; i++) distances[i] = Math.sqrt(bestD[i]);
  return { distances, indices: bestI };
}
