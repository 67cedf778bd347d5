// Exact nearest-neighbour search that reads few bank rows. Every bank row has a sketch (its
// leading principal coordinates, coreset/sketch.ts) whose distances bound the true distances from
// below. Per query: (1) the 16 leading sketch coordinates of all rows are scanned (float32 SIMD,
// four rows per vector); (2) the row with the smallest bound gives a first exact distance tau;
// (3) only rows whose bound does not exceed tau get the rest of their sketch checked, and only
// those still in get an exact float64 distance (tau tightens as closer rows turn up). The answer
// is exact (ties to the lower row index); margins keep every pruning step valid under float32
// rounding. On bottle (16k x 1024 bank) a few dozen rows per query need exact distances.

import { sketchBasis } from '../coreset/sketch.js';
import { kernelModule, SEARCH_HEAD as HEAD, SEARCH_SLACK as SLACK, type Kernels } from '../wasm/kernels.js';
import { createMemory, instantiate } from '../wasm/runtime.js';
import type { NeighbourResult } from './exact-search.js';

/** Queries sketched per batch. */
const QUERY_BATCH = 64;

/** Per unit of sigma * ||x||, the rounding bound of a sketch32 sketch in norm (50% margin on the kernel's bound). */
function sketchRounding(dim: number, width: number): number {
  return Math.sqrt(width) * (dim / 4 + 2) * 2 ** -24 * 1.5 + 2 ** -23;
}

/** Sketch width for dim-wide rows: wider sketches prune more, and cost more per row. */
function sketchWidth(dim: number): number {
  return dim >= 512 ? 128 : dim >= 256 ? 64 : 32;
}

export class SketchSearch {
  private constructor(
    private readonly k: Kernels,
    private readonly buf: ArrayBuffer | SharedArrayBuffer,
    private readonly at: Record<string, number>,
    readonly count: number,
    readonly dim: number,
    readonly width: number,
    private readonly sigma: number,
    private readonly maxRowNorm: number,
    private readonly rounding: number,
  ) {}

  /**
   * A searcher over a copy of `bank` (count x dim), or null where it does not apply (no
   * WebAssembly SIMD, dim not a multiple of 16 or below 64): callers then search by brute force.
   */
  static create(bank: Float32Array, count: number, dim: number): SketchSearch | null {
    if (dim % 16 !== 0 || dim < 64 || count < 1) return null;
    const module = kernelModule();
    if (!module) return null;
    const width = sketchWidth(dim);
    const groups = Math.ceil(count / 4);
    const sizes: Record<string, number> = {
      bank: count * dim * 4,
      full: count * width * 4,
      head: groups * 256,
      l: groups * 16,
      queries: QUERY_BATCH * dim * 4,
      querySketches: QUERY_BATCH * width * 4,
      basis: width * dim * 4,
      outIdx: count * 4,
      outD2: count * 8,
    };
    const at: Record<string, number> = {};
    let end = 64;
    for (const [name, bytes] of Object.entries(sizes)) {
      at[name] = end;
      end += Math.ceil(bytes / 64) * 64;
    }
    if (end > 2 ** 31) return null;
    const memory = createMemory(end);
    if (!memory) return null;
    const buf = memory.buffer;
    const k = instantiate<Kernels>(module, memory);
    const rows = new Float32Array(buf, at.bank, count * dim);
    rows.set(bank);

    const b = sketchBasis(rows, count, dim, width);
    new Float32Array(buf, at.basis, width * dim).set(b.basis);
    const full = new Float32Array(buf, at.full, count * width);
    k.sketch32(at.bank, count, dim, at.basis, width, at.full);
    // Head coordinates regrouped four rows per vector; padding rows sit infinitely far.
    const head = new Float32Array(buf, at.head, groups * 64);
    head.fill(3.4e38);
    for (let r = 0; r < count; r++) {
      const g = r >> 2;
      const lane = r & 3;
      for (let i = 0; i < HEAD; i++) head[g * 64 + i * 4 + lane] = full[r * width + i];
    }
    let maxNorm = 0;
    for (let r = 0; r < count; r++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += rows[r * dim + j] * rows[r * dim + j];
      maxNorm = Math.max(maxNorm, s);
    }
    return new SketchSearch(k, buf, at, count, dim, width, b.sigmaMax * SLACK, Math.sqrt(maxNorm), sketchRounding(dim, width));
  }

  /** Exact k nearest rows per query row: Euclidean distances (nearest first) and row indices, ties to the lower index. */
  nearest(queries: Float32Array, n: number, k: number): NeighbourResult {
    const { dim, width, count, buf, at } = this;
    const distances = new Float32Array(n * k);
    const indices = new Uint32Array(n * k);
    const qChunk = new Float32Array(buf, at.queries, QUERY_BATCH * dim);
    const l = new Float32Array(buf, at.l, count);
    const outIdx = new Int32Array(buf, at.outIdx, count);
    const outD2 = new Float64Array(buf, at.outD2, count);
    const groups = Math.ceil(count / 4);
    const rowBytes = dim * 4;
    for (let q0 = 0; q0 < n; q0 += QUERY_BATCH) {
      const batch = Math.min(QUERY_BATCH, n - q0);
      qChunk.set(queries.subarray(q0 * dim, (q0 + batch) * dim));
      this.k.sketch32(at.queries, batch, dim, at.basis, width, at.querySketches);
      for (let i = 0; i < batch; i++) {
        const qAt = at.queries + i * rowBytes;
        const sqAt = at.querySketches + i * width * 4;
        let qNorm = 0;
        for (let j = 0; j < dim; j++) qNorm += qChunk[i * dim + j] * qChunk[i * dim + j];
        // Rounding of the two sketches, in norm.
        const err = this.rounding * this.sigma * (this.maxRowNorm + Math.sqrt(qNorm)) + 1e-30;
        const least = this.k.scanHead(at.head, groups, sqAt, at.l);
        const first = this.k.findFirst(at.l, count, least);
        const out = (q0 + i) * k;
        if (first < 0 || !Number.isFinite(least)) {
          this.bruteForce(i, k, distances, indices, out);
          continue;
        }
        let tau: number;
        let update = 1;
        if (k === 1) {
          tau = this.k.exact(at.bank + first * rowBytes, qAt, dim);
          // A first pass over the rows with the smallest bounds usually finds the nearest row, so
          // the full pass starts with a tight tau.
          const found = this.k.refine(
            at.l, count, at.full, width, sqAt, at.bank, qAt, dim, tau, this.sigma, err, at.outIdx, at.outD2, 1, 2 * least,
          );
          for (let c = 0; c < found; c++) tau = Math.min(tau, outD2[c]);
        } else {
          // tau = the largest exact distance among the k rows with the smallest bounds.
          update = 0;
          tau = 0;
          for (const r of smallestK(l, count, k)) tau = Math.max(tau, this.k.exact(at.bank + r * rowBytes, qAt, dim));
        }
        const found = this.k.refine(
          at.l, count, at.full, width, sqAt, at.bank, qAt, dim, tau, this.sigma, err, at.outIdx, at.outD2, update, Infinity,
        );
        takeBest(outIdx, outD2, found, k, distances, indices, out);
      }
    }
    return { distances, indices };
  }

  /** Every row exactly: the fallback when the bounds are unusable (NaN or infinite values). */
  private bruteForce(i: number, k: number, distances: Float32Array, indices: Uint32Array, out: number): void {
    const { at, dim, count } = this;
    const outIdx = new Int32Array(this.buf, at.outIdx, count);
    const outD2 = new Float64Array(this.buf, at.outD2, count);
    for (let r = 0; r < count; r++) {
      outIdx[r] = r;
      outD2[r] = this.k.exact(at.bank + r * dim * 4, at.queries + i * dim * 4, dim);
    }
    takeBest(outIdx, outD2, count, k, distances, indices, out);
  }
}

/** The k (distance, index) smallest of `found` candidates, ascending, ties to the lower index. */
function takeBest(
  idx: Int32Array, d2: Float64Array, found: number, k: number, distances: Float32Array, indices: Uint32Array, out: number,
): void {
  const bestD = new Float64Array(k).fill(Infinity);
  // Unfilled slots (only possible with NaN distances) stay at row 0, distance Infinity, as in exactKnn.
  const bestI = new Int32Array(k);
  for (let c = 0; c < found; c++) {
    const d = d2[c];
    const r = idx[c];
    if (!(d < bestD[k - 1] || (d === bestD[k - 1] && r < bestI[k - 1]))) continue;
    let pos = k - 1;
    while (pos > 0 && (bestD[pos - 1] > d || (bestD[pos - 1] === d && bestI[pos - 1] > r))) {
      bestD[pos] = bestD[pos - 1];
      bestI[pos] = bestI[pos - 1];
      pos--;
    }
    bestD[pos] = d;
    bestI[pos] = r;
  }
  for (let j = 0; j < k; j++) {
    distances[out + j] = Math.sqrt(bestD[j]);
    indices[out + j] = bestI[j];
  }
}

/** Indices of the k smallest values of l[0..count). */
function smallestK(l: Float32Array, count: number, k: number): Int32Array {
  const best = new Int32Array(k).fill(-1);
  const vals = new Float64Array(k).fill(Infinity);
  for (let r = 0; r < count; r++) {
    const v = l[r];
    if (!(v < vals[k - 1]) && best[k - 1] !== -1) continue;
    let pos = k - 1;
    while (pos > 0 && vals[pos - 1] > v) {
      vals[pos] = vals[pos - 1];
      best[pos] = best[pos - 1];
      pos--;
    }
    vals[pos] = v;
    best[pos] = r;
  }
  return best;
}
