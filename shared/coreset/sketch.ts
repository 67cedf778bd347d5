// Low-dimensional sketches that bound distances from below: s(x) = B x with B's rows orthonormal,
// so ||s(x) - s(y)|| <= sigma_max(B) ||x - y||. B spans the leading principal directions of the
// data (subspace iteration on a sample's covariance, then Rayleigh-Ritz to order them), so a few
// floats keep most of a typical distance: a cheap, cache-resident test that rules out most "is
// this point closer to the new centre?" questions without reading the full rows.
// The bound holds for any B; rounding is covered by sigmaMax (computed from the float32 basis)
// and by sketchErrorNorm.

import { multiplyTransposed } from './matmul.js';
import { SeededRandom } from './random.js';

/** Sample rows for the covariance: more for narrow data, fewer for wide (the cost is dim^2 per row). */
function defaultSample(dim: number): number {
  return Math.max(1024, Math.min(4096, Math.floor(2 ** 19 / dim)));
}

export interface SketchBasis {
  /** Floats per sketch. */
  width: number;
  /** width x dim, row-major, float32: the matrix actually applied; leading directions first. */
  basis: Float32Array;
  /** Upper bound of the largest singular value of `basis` (1 up to rounding). */
  sigmaMax: number;
}

/**
 * A `width`-row orthonormal basis of the leading principal subspace of `points` (n x dim), from
 * an evenly spaced sample of at most `sample` rows. Deterministic: a fixed internal seed,
 * independent of any caller's random stream.
 */
export function sketchBasis(points: Float32Array, n: number, dim: number, width: number, sample = defaultSample(dim)): SketchBasis {
  const k = Math.min(width, dim);
  const take = Math.min(n, sample);
  const mean = new Float64Array(dim);
  const rows = new Int32Array(take);
  for (let i = 0; i < take; i++) rows[i] = Math.floor((i * n) / take);
  for (const r of rows) for (let j = 0; j < dim; j++) mean[j] += points[r * dim + j];
  for (let j = 0; j < dim; j++) mean[j] /= take;
  // Covariance (up to a factor) = Xc^T Xc, with Xc the centred sample.
  const xT = new Float32Array(dim * take);
  for (let i = 0; i < take; i++) {
    const o = rows[i] * dim;
    for (let j = 0; j < dim; j++) xT[j * take + i] = points[o + j] - mean[j];
  }
  const cov = multiplyTransposed(xT, dim, take, xT, dim);

  // Subspace iteration V <- orth(V C): a good subspace is all that is needed, not exact eigenvectors.
  const rng = new SeededRandom(0x5eed);
  const v = Float64Array.from({ length: k * dim }, () => rng.gaussian());
  orthonormalise(v, k, dim);
  for (let iter = 0; iter < 4; iter++) {
    v.set(multiplyTransposed(Float32Array.from(v), k, dim, cov, dim));
    orthonormalise(v, k, dim);
  }
  // Rayleigh-Ritz: rotate within the subspace so the rows come in decreasing variance.
  const vF = Float32Array.from(v);
  const h = Float64Array.from(multiplyTransposed(vF, k, dim, multiplyTransposed(vF, k, dim, cov, dim), k));
  for (let a = 0; a < k; a++) for (let b = 0; b < a; b++) h[a * k + b] = h[b * k + a] = (h[a * k + b] + h[b * k + a]) / 2;
  const { vectors, order } = symmetricEigen(h, k);
  const rotated = new Float64Array(k * dim);
  for (let r = 0; r < k; r++) {
    const e = order[r];
    for (let a = 0; a < k; a++) {
      const w = vectors[a * k + e];
      for (let j = 0; j < dim; j++) rotated[r * dim + j] += w * v[a * dim + j];
    }
  }
  orthonormalise(rotated, k, dim);
  const basis = Float32Array.from(rotated);

  // sigma_max^2 = largest eigenvalue of G = B B^T (from the float32 values), at most G's largest
  // absolute row sum; the factor covers the float64 rounding of G.
  let sigma2 = 0;
  for (let a = 0; a < k; a++) {
    let rowSum = 0;
    for (let b = 0; b < k; b++) {
      let g = 0;
      for (let j = 0; j < dim; j++) g += basis[a * dim + j] * basis[b * dim + j];
      rowSum += Math.abs(g);
    }
    sigma2 = Math.max(sigma2, rowSum);
  }
  return { width: k, basis, sigmaMax: Math.sqrt(sigma2) * (1 + 1e-12) };
}

/**
 * Reference sketches (n x width): each coordinate summed in float64 in input order and rounded
 * to float32, as the SIMD projection kernel computes them.
 */
export function sketchRows(points: Float32Array, n: number, dim: number, b: SketchBasis): Float32Array {
  const out = new Float32Array(n * b.width);
  for (let i = 0; i < n; i++) {
    for (let q = 0; q < b.width; q++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += points[i * dim + j] * b.basis[q * dim + j];
      out[i * b.width + q] = s;
    }
  }
  return out;
}

/**
 * Per unit of sigmaMax * ||x||, a bound on the rounding error (in norm) of a stored sketch: each
 * coordinate is a float64 sum (error ~dim * 2^-53 of its magnitude) rounded to float32 (2^-24
 * relative), so at most ~2^-24 * sigmaMax * ||x||; 5e-7 is about eight times that. The difference
 * of two sketches is then within SKETCH_ROUNDING * sigmaMax * (||x|| + ||y||) of B (x - y).
 */
export const SKETCH_ROUNDING = 5e-7;

/** That bound for any two of the rows of `points`. */
export function sketchErrorNorm(points: Float32Array, n: number, dim: number, sigmaMax: number): number {
  let max = 0;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += points[i * dim + j] * points[i * dim + j];
    if (s > max) max = s;
  }
  return 2 * SKETCH_ROUNDING * sigmaMax * Math.sqrt(max) + 1e-30;
}

/** Modified Gram-Schmidt, twice, on the k rows of v (k x dim); a row that vanishes (rank-deficient
 * data) is replaced by the first unit vector independent of the rows before it. */
function orthonormalise(v: Float64Array, k: number, dim: number): void {
  const reduce = (a: number): number => {
    const ra = a * dim;
    for (let pass = 0; pass < 2; pass++) {
      for (let b = 0; b < a; b++) {
        const rb = b * dim;
        let dot = 0;
        for (let j = 0; j < dim; j++) dot += v[ra + j] * v[rb + j];
        for (let j = 0; j < dim; j++) v[ra + j] -= dot * v[rb + j];
      }
    }
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += v[ra + j] * v[ra + j];
    return Math.sqrt(norm);
  };
  for (let a = 0; a < k; a++) {
    const ra = a * dim;
    let scale = 0;
    for (let j = 0; j < dim; j++) scale = Math.max(scale, Math.abs(v[ra + j]));
    let norm = reduce(a);
    for (let unit = 0; !(norm > 1e-9 * scale) && unit < dim; unit++) {
      v.fill(0, ra, ra + dim);
      v[ra + unit] = 1;
      scale = 1;
      norm = reduce(a);
    }
    for (let j = 0; j < dim; j++) v[ra + j] /= norm;
  }
}

/** Cyclic Jacobi eigen-decomposition of a symmetric k x k matrix: eigenvectors as columns, and the
 * column order by decreasing eigenvalue. */
function symmetricEigen(m: Float64Array, k: number): { vectors: Float64Array; order: number[] } {
  const a = Float64Array.from(m);
  const vec = new Float64Array(k * k);
  for (let i = 0; i < k; i++) vec[i * k + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    let total = 0;
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        total += a[i * k + j] ** 2;
        if (i !== j) off += a[i * k + j] ** 2;
      }
    }
    if (off <= 1e-24 * total) break;
    for (let p = 0; p < k; p++) {
      for (let q = p + 1; q < k; q++) {
        const apq = a[p * k + q];
        if (apq === 0) continue;
        const theta = (a[q * k + q] - a[p * k + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < k; r++) {
          const arp = a[r * k + p];
          const arq = a[r * k + q];
          a[r * k + p] = c * arp - s * arq;
          a[r * k + q] = s * arp + c * arq;
        }
        for (let r = 0; r < k; r++) {
          const apr = a[p * k + r];
          const aqr = a[q * k + r];
          a[p * k + r] = c * apr - s * aqr;
          a[q * k + r] = s * apr + c * aqr;
        }
        for (let r = 0; r < k; r++) {
          const vrp = vec[r * k + p];
          const vrq = vec[r * k + q];
          vec[r * k + p] = c * vrp - s * vrq;
          vec[r * k + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  const order = Array.from({ length: k }, (_, i) => i).sort((x, y) => a[y * k + y] - a[x * k + x] || x - y);
  return { vectors: vec, order };
}
