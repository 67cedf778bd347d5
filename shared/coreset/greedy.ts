// Approximate greedy k-center coreset, as in the official PatchCore sampler: features are reduced
// by a seeded Gaussian random projection, every point starts at its mean distance to a few random
// start points, then each step picks the point farthest from everything chosen so far.
//
// The selection equals the plain O(N*k*d) loop ("distances = min(distances, dist(x, picked))"),
// but points are kept in lists by the centre that last lowered their distance, and a whole list
// is skipped when the triangle inequality proves the new centre cannot lower any of its members
// (dist(centre, picked) > 2 * list radius). That centre-to-picked distance is first bounded from
// below through the distances of both to the first few centres (pivots), which settles almost
// every list without touching its vectors. When too many points still need a look (early steps,
// structureless data) one sequential pass is used instead. Memory: the projection, O(N) and
// O(k * pivots); never N x N.

import { SeededRandom } from './random.js';

export interface GreedyCoresetOptions {
  /** Fraction of points to keep, in (0, 1]; ignored when `target` is given. */
  ratio?: number;
  /** Exact number of points to keep. */
  target?: number;
  /** Dimension of the random projection (default 128); skipped when dim <= projectionDim. */
  projectionDim?: number;
  /** PRNG seed for the projection and the start points (default 0). */
  seed?: number;
  /** Random points whose mean distance initialises every point's distance (default 10). */
  startPoints?: number;
  /** Called about every 1% of the selection, and once at the end. */
  onProgress?: (done: number, total: number) => void;
}

/** Number of points a coreset of `count` features keeps: `target`, else max(1, round(ratio * count)). */
export function coresetTarget(count: number, opts: { ratio?: number; target?: number }): number {
  if (opts.target !== undefined) {
    const t = opts.target;
    if (!Number.isInteger(t) || t < 1) throw new Error(`coreset target must be a positive integer, got ${t}`);
    if (t > count) throw new Error(`coreset target ${t} exceeds the number of features (${count})`);
    return t;
  }
  if (opts.ratio === undefined) throw new Error('coreset needs either a ratio or a target');
  const r = opts.ratio;
  if (!Number.isFinite(r) || r <= 0 || r > 1) throw new Error(`coreset ratio must be in (0, 1], got ${r}`);
  return Math.min(count, Math.max(1, Math.round(r * count)));
}

/**
 * Projects row-major `features` (count x dim) with a seeded Gaussian matrix, entries
 * N(0, 1) / sqrt(projectionDim), to count x projectionDim.
 */
export function randomProjection(
  features: Float32Array,
  count: number,
  dim: number,
  projectionDim: number,
  rng: SeededRandom,
): Float32Array {
  const pd = projectionDim;
  const scale = 1 / Math.sqrt(pd);
  // Drawn input-major (w[j][o]) but stored output-major, so each output is a contiguous dot product.
  const wT = new Float32Array(dim * pd);
  for (let j = 0; j < dim; j++) {
    for (let o = 0; o < pd; o++) wT[o * dim + j] = rng.gaussian() * scale;
  }
  const out = new Float32Array(count * pd);
  // 4 points x 4 outputs per pass keep 16 sums in registers: 8 loads feed 16 multiply-adds.
  let i = 0;
  for (; i + 4 <= count; i += 4) {
    const x0 = i * dim;
    const x1 = x0 + dim;
    const x2 = x1 + dim;
    const x3 = x2 + dim;
    let o = 0;
    for (; o + 4 <= pd; o += 4) {
      const w0 = o * dim;
      const w1 = w0 + dim;
      const w2 = w1 + dim;
      const w3 = w2 + dim;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let j = 0; j < dim; j++) {
        const a = wT[w0 + j];
        const b = wT[w1 + j];
        const c = wT[w2 + j];
        const e = wT[w3 + j];
        const v0 = features[x0 + j];
        const v1 = features[x1 + j];
        const v2 = features[x2 + j];
        const v3 = features[x3 + j];
        s00 += v0 * a; s01 += v0 * b; s02 += v0 * c; s03 += v0 * e;
        s10 += v1 * a; s11 += v1 * b; s12 += v1 * c; s13 += v1 * e;
        s20 += v2 * a; s21 += v2 * b; s22 += v2 * c; s23 += v2 * e;
        s30 += v3 * a; s31 += v3 * b; s32 += v3 * c; s33 += v3 * e;
      }
      const r = i * pd + o;
      out[r] = s00; out[r + 1] = s01; out[r + 2] = s02; out[r + 3] = s03;
      out[r + pd] = s10; out[r + pd + 1] = s11; out[r + pd + 2] = s12; out[r + pd + 3] = s13;
      out[r + 2 * pd] = s20; out[r + 2 * pd + 1] = s21; out[r + 2 * pd + 2] = s22; out[r + 2 * pd + 3] = s23;
      out[r + 3 * pd] = s30; out[r + 3 * pd + 1] = s31; out[r + 3 * pd + 2] = s32; out[r + 3 * pd + 3] = s33;
    }
    for (; o < pd; o++) {
      for (let k = 0; k < 4; k++) out[(i + k) * pd + o] = dot(features, x0 + k * dim, wT, o * dim, dim);
    }
  }
  for (; i < count; i++) {
    for (let o = 0; o < pd; o++) out[i * pd + o] = dot(features, i * dim, wT, o * dim, dim);
  }
  return out;
}

function dot(a: Float32Array, aOff: number, b: Float32Array, bOff: number, n: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s += a[aOff + j] * b[bOff + j];
  return s;
}

const PIVOTS = 16;
/** Above this share of points to revisit, one sequential pass beats following the lists. */
const SCAN_FRACTION = 0.25;

function dist2(m: Float32Array, a: number, b: number, d: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let j = 0;
  for (; j + 4 <= d; j += 4) {
    const e0 = m[a + j] - m[b + j];
    const e1 = m[a + j + 1] - m[b + j + 1];
    const e2 = m[a + j + 2] - m[b + j + 2];
    const e3 = m[a + j + 3] - m[b + j + 3];
    s0 += e0 * e0;
    s1 += e1 * e1;
    s2 += e2 * e2;
    s3 += e3 * e3;
  }
  for (; j < d; j++) {
    const e = m[a + j] - m[b + j];
    s0 += e * e;
  }
  return s0 + s1 + (s2 + s3);
}

/**
 * Indices (distinct, in selection order) of the approximate greedy k-center coreset of row-major
 * `features` (count x dim).
 */
export function greedyCoreset(
  features: Float32Array,
  count: number,
  dim: number,
  opts: GreedyCoresetOptions = {},
): Uint32Array {
  if (!Number.isInteger(count) || count < 1) throw new Error(`greedyCoreset: count must be a positive integer, got ${count}`);
  if (!Number.isInteger(dim) || dim < 1) throw new Error(`greedyCoreset: dim must be a positive integer, got ${dim}`);
  if (features.length !== count * dim) {
    throw new Error(`greedyCoreset: features has ${features.length} values, expected count x dim = ${count}x${dim} = ${count * dim}`);
  }
  const target = coresetTarget(count, opts);
  const projectionDim = opts.projectionDim ?? 128;
  if (!Number.isInteger(projectionDim) || projectionDim < 1) {
    throw new Error(`greedyCoreset: projectionDim must be a positive integer, got ${projectionDim}`);
  }
  const startPoints = opts.startPoints ?? 10;
  if (!Number.isInteger(startPoints) || startPoints < 1) {
    throw new Error(`greedyCoreset: startPoints must be a positive integer, got ${startPoints}`);
  }
  const rng = new SeededRandom(opts.seed ?? 0);
  let points = features;
  let d = dim;
  if (dim > projectionDim) {
    points = randomProjection(features, count, dim, projectionDim, rng);
    d = projectionDim;
  }
  const starts = rng.sampleWithoutReplacement(count, Math.min(startPoints, count));
  return kCenterGreedy(points, count, d, target, starts, opts.onProgress);
}

function kCenterGreedy(
  points: Float32Array,
  n: number,
  d: number,
  target: number,
  starts: Uint32Array,
  onProgress?: (done: number, total: number) => void,
): Uint32Array {
  // Squared distance of each point to the chosen set (sqrt is monotonic, so argmax and min agree
  // with the Euclidean version); -1 marks chosen points so they are never picked twice.
  const val = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < starts.length; k++) s += Math.sqrt(dist2(points, i * d, starts[k] * d, d));
    const mean = s / starts.length;
    val[i] = mean * mean;
  }

  // List c < target holds the points whose distance centre c set last; list `target` holds points
  // still at their start value. Each list knows its size, maximum and the lowest index at it.
  const unassigned = target;
  const head = new Int32Array(target + 1);
  const size = new Int32Array(target + 1);
  const listMax = new Float64Array(target + 1);
  const listArg = new Int32Array(target + 1);
  const next = new Int32Array(n);
  const owner = new Int32Array(n).fill(unassigned);
  const selected = new Uint32Array(target);
  const toVisit = new Int32Array(target + 1);
  // Rebuilt lists run in index order, which keeps their traversal close to sequential.
  const rebuildLists = (lists: number): void => {
    head.fill(-1, 0, lists);
    size.fill(0, 0, lists);
    listMax.fill(-1, 0, lists);
    listArg.fill(-1, 0, lists);
    head[unassigned] = -1;
    size[unassigned] = 0;
    listMax[unassigned] = -1;
    listArg[unassigned] = -1;
    for (let x = n - 1; x >= 0; x--) {
      const v = val[x];
      if (v < 0) continue;
      const list = owner[x];
      next[x] = head[list];
      head[list] = x;
      size[list]++;
      if (v >= listMax[list]) {
        listMax[list] = v;
        listArg[list] = x;
      }
    }
  };
  rebuildLists(0);

  // The first `pivots` centres serve as pivots: pivotDist[c * pivots + m] = dist(centre c, centre m).
  const pivots = Math.min(PIVOTS, target);
  const pivotDist = new Float64Array(target * pivots);

  const progressStep = Math.max(1, Math.floor(target / 100));
  for (let t = 0; t < target; t++) {
    // Argmax of all distances = best list maximum; ties go to the lowest point index.
    let bestV = -Infinity;
    let p = -1;
    for (let c = 0; c <= t; c++) {
      const list = c === t ? unassigned : c;
      if (head[list] === -1) continue;
      const v = listMax[list];
      const a = listArg[list];
      if (v > bestV || (v === bestV && a < p)) {
        bestV = v;
        p = a;
      }
    }
    if (p < 0) throw new Error('greedyCoreset: internal error, no point left to select');
    selected[t] = p;
    val[p] = -1;
    const pOff = p * d;
    const ownerOfPicked = owner[p];
    const known = Math.min(t, pivots);
    const pRow = t * pivots;
    for (let m = 0; m < known; m++) pivotDist[pRow + m] = Math.sqrt(dist2(points, selected[m] * d, pOff, d));
    if (t < pivots) {
      for (let c = 0; c < t; c++) pivotDist[c * pivots + t] = pivotDist[pRow + c];
    }

    // Lists the new centre might improve: all but those proved far, i.e. dist(centre, picked) >
    // 2 * radius. The margins keep the proof valid despite rounding, so the selection is exactly
    // the plain loop's.
    let visits = 0;
    let visitMembers = 0;
    for (let c = 0; c <= t; c++) {
      const list = c === t ? unassigned : c;
      if (head[list] === -1) continue;
      if (list !== unassigned && list !== ownerOfPicked) {
        const r2 = listMax[list];
        const bound = 2 * Math.sqrt(r2) * (1 + 1e-9);
        const cRow = list * pivots;
        let provedFar = false;
        for (let m = 0; m < known; m++) {
          const a = pivotDist[cRow + m];
          const b = pivotDist[pRow + m];
          if ((a > b ? a - b : b - a) - 1e-12 * (a + b) > bound) {
            provedFar = true;
            break;
          }
        }
        if (provedFar) continue;
        if (dist2(points, selected[list] * d, pOff, d) > 4 * r2 * (1 + 1e-9)) continue;
      }
      toVisit[visits++] = list;
      visitMembers += size[list];
    }

    if (visitMembers > n * SCAN_FRACTION) {
      // Pruning failed (e.g. early on, or unstructured data): a sequential pass is cheaper than
      // chasing list links through memory.
      for (let x = 0; x < n; x++) {
        const vx = val[x];
        if (vx < 0) continue;
        const dx = dist2(points, x * d, pOff, d);
        if (dx < vx) {
          val[x] = dx;
          owner[x] = t;
        }
      }
      rebuildLists(t + 1);
    } else {
      let newHead = -1;
      let newSize = 0;
      let newMax = -1;
      let newArg = -1;
      for (let k = 0; k < visits; k++) {
        const list = toVisit[k];
        let keepHead = -1;
        let keepSize = 0;
        let keepMax = -1;
        let keepArg = -1;
        let x = head[list];
        while (x !== -1) {
          const nx = next[x];
          const vx = val[x];
          if (vx >= 0) {
            const dx = dist2(points, x * d, pOff, d);
            if (dx < vx) {
              val[x] = dx;
              owner[x] = t;
              next[x] = newHead;
              newHead = x;
              newSize++;
              if (dx > newMax || (dx === newMax && x < newArg)) {
                newMax = dx;
                newArg = x;
              }
            } else {
              next[x] = keepHead;
              keepHead = x;
              keepSize++;
              if (vx > keepMax || (vx === keepMax && x < keepArg)) {
                keepMax = vx;
                keepArg = x;
              }
            }
          }
          x = nx;
        }
        head[list] = keepHead;
        size[list] = keepSize;
        listMax[list] = keepMax;
        listArg[list] = keepArg;
      }
      head[t] = newHead;
      size[t] = newSize;
      listMax[t] = newMax;
      listArg[t] = newArg;
    }

    if (onProgress && ((t + 1) % progressStep === 0 || t + 1 === target)) onProgress(t + 1, target);
  }
  return selected;
}
