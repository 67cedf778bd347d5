// Approximate greedy k-center coreset, as in the official PatchCore sampler: features are reduced
// by a seeded Gaussian random projection, every point starts at its mean distance to a few random
// start points, then each step picks the point farthest from everything chosen so far.
//
// The selection equals the plain O(N*k*d) loop ("distances = min(distances, dist(x, picked))"),
// but points are kept in lists by the centre that last lowered their distance, and work is skipped
// only where the triangle inequality proves the new centre cannot lower a distance:
// - a whole list, when dist(centre, picked) > 2 * list radius (a float32 bound with a margin);
// - a member x, when dist(centre, picked) > 2 * dist(x, centre), which is x's current distance;
// - a candidate, when its sketch distance to the picked point already exceeds its current distance.
// What remains is computed exactly (float64 sums in the scalar code's order) by WebAssembly SIMD
// kernels, or by portable JS loops with identical results (greedy-kernels.ts). The projection, the
// steps that scan every point and the centre filter are split among kernel threads (worker threads
// over one shared memory, shared/wasm/threads.ts); every chunk writes only its own points, so the
// selection is the same for any thread count.
// Memory: the projection, its sketch, O(N) and the centres (k x projectionDim floats); never N x N.

import { createJsKernels, createSimdKernels, FILTER_MARGIN, type GreedyKernels } from './greedy-kernels.js';
import { rowsInMemory, type RowSource } from './row-source.js';
import { SeededRandom } from './random.js';
import { defaultThreads, MAX_THREADS } from '../wasm/threads.js';

/** Width of the Gaussian projection the selection runs in (the official sampler's 128). */
export const DEFAULT_PROJECTION_DIM = 128;

export interface GreedyCoresetOptions {
  /** Fraction of points to keep, in (0, 1]; ignored when `target` is given. */
  ratio?: number;
  /** Exact number of points to keep. */
  target?: number;
  /** Dimension of the random projection (default DEFAULT_PROJECTION_DIM); skipped when dim <= projectionDim. */
  projectionDim?: number;
  /** PRNG seed for the projection and the start points (default 0). */
  seed?: number;
  /** Random points whose mean distance initialises every point's distance (default 10). */
  startPoints?: number;
  /** Called about every 1% of the selection, and once at the end. */
  onProgress?: (done: number, total: number) => void;
  /** Use the WebAssembly SIMD kernels where the runtime has them (default true); the JS loops select the same points. */
  simd?: boolean;
  /**
   * Threads for the projection, the whole-point steps and the centre filter of the SIMD kernels
   * (default: every core available up to 8, or 1 below THREADS_FROM_POINTS points); any count
   * selects the same points.
   */
  threads?: number;
  /** Filled with how much work the pruning left (for benchmarks); costs one extra pass per step. */
  stats?: GreedyCoresetStats;
}

/** Work counters of one greedyCoreset call. */
export interface GreedyCoresetStats {
  steps: number;
  /** Candidates given to the distance kernel, summed over steps (the pruning's remainder). */
  distanceEvaluations: number;
  /** Of those, the ones the sketch ruled out before reading the full row. */
  screenedOut: number;
  /** Centre lists the filter could not rule out, summed over steps. */
  listsVisited: number;
  /** Steps that scanned every point instead of following the lists. */
  fullScans: number;
  /** Largest distance of any point to the selection: the coverage radius (in the projected space). */
  coverageRadius: number;
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

/** The projection matrix, output-major (projectionDim x dim), entries N(0, 1) / sqrt(projectionDim). */
export function drawProjection(dim: number, projectionDim: number, rng: SeededRandom): Float32Array {
  const pd = projectionDim;
  const scale = 1 / Math.sqrt(pd);
  // Drawn input-major (w[j][o]) but stored output-major, so each output is a contiguous dot product.
  const wT = new Float32Array(dim * pd);
  for (let j = 0; j < dim; j++) {
    for (let o = 0; o < pd; o++) wT[o * dim + j] = rng.gaussian() * scale;
  }
  return wT;
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
  return projectRows(features, count, dim, drawProjection(dim, projectionDim, rng), projectionDim);
}

/** features (count x dim) times wT (pd x dim, output-major), each output summed in float64 in input order. */
function projectRows(features: Float32Array, count: number, dim: number, wT: Float32Array, pd: number): Float32Array {
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


/** Largest magnitude the float32 centre filter accepts: its squares stay far from overflow. */
const FILTER_SAFE_ABS = 1e18;

function allWithin(values: Float32Array, bound: number): boolean {
  for (let i = 0; i < values.length; i++) if (!(Math.abs(values[i]) <= bound)) return false;
  return true;
}

/** Below this many points a second thread costs more to start than it saves. */
export const THREADS_FROM_POINTS = 32_768;

/** The points to select from (projected when dim > projectionDim) inside SIMD kernels when possible, else JS ones. */
function prepareKernels(
  source: RowSource, projectionDim: number, target: number, rng: SeededRandom, simd: boolean, threads: number,
): { kernels: GreedyKernels; d: number } {
  const { count, dim } = source;
  const project = dim > projectionDim;
  const d = project ? projectionDim : dim;
  const wT = project ? drawProjection(dim, projectionDim, rng) : null;
  const fast = simd ? createSimdKernels(count, d, target, project ? dim : 0, threads) : null;
  if (fast) {
    try {
      source.forEachChunk((rows, first) => {
        if (wT) fast.projectInto(rows, dim, wT, first);
        else fast.points.set(rows, first * dim);
      });
      if (allWithin(fast.points, FILTER_SAFE_ABS)) {
        fast.buildSketches();
        return { kernels: fast, d };
      }
    } catch (e) {
      fast.close();
      throw e;
    }
    fast.close();
    return { kernels: createJsKernels(fast.points, count, d, target), d };
  }
  const points = new Float32Array(count * d);
  source.forEachChunk((rows, first) => {
    points.set(wT ? projectRows(rows, rows.length / dim, dim, wT, projectionDim) : rows, first * d);
  });
  return { kernels: createJsKernels(points, count, d, target), d };
}

/**
 * Indices (distinct, in selection order) of the approximate greedy k-center coreset of row-major
 * `features` (count x dim), in memory or read chunk by chunk from a RowSource (the same selection).
 */
export function greedyCoreset(
  features: Float32Array | RowSource,
  count: number,
  dim: number,
  opts: GreedyCoresetOptions = {},
): Uint32Array {
  if (!Number.isInteger(count) || count < 1) throw new Error(`greedyCoreset: count must be a positive integer, got ${count}`);
  if (!Number.isInteger(dim) || dim < 1) throw new Error(`greedyCoreset: dim must be a positive integer, got ${dim}`);
  if (features instanceof Float32Array && features.length !== count * dim) {
    throw new Error(`greedyCoreset: features has ${features.length} values, expected count x dim = ${count}x${dim} = ${count * dim}`);
  }
  const source = features instanceof Float32Array ? rowsInMemory(features, count, dim) : features;
  if (source.count !== count || source.dim !== dim) {
    throw new Error(`greedyCoreset: the row source holds ${source.count} x ${source.dim}, expected ${count} x ${dim}`);
  }
  const target = coresetTarget(count, opts);
  const projectionDim = opts.projectionDim ?? DEFAULT_PROJECTION_DIM;
  if (!Number.isInteger(projectionDim) || projectionDim < 1) {
    throw new Error(`greedyCoreset: projectionDim must be a positive integer, got ${projectionDim}`);
  }
  const startPoints = opts.startPoints ?? 10;
  if (!Number.isInteger(startPoints) || startPoints < 1) {
    throw new Error(`greedyCoreset: startPoints must be a positive integer, got ${startPoints}`);
  }
  const threads = opts.threads ?? (count >= THREADS_FROM_POINTS ? defaultThreads() : 1);
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new Error(`greedyCoreset: threads must be an integer from 1 to ${MAX_THREADS}, got ${threads}`);
  }
  const rng = new SeededRandom(opts.seed ?? 0);
  // The projection draws from the stream before the start points do.
  const { kernels, d } = prepareKernels(source, projectionDim, target, rng, opts.simd ?? true, threads);
  try {
    const starts = rng.sampleWithoutReplacement(count, Math.min(startPoints, count));
    return kCenterGreedy(kernels, count, d, target, starts, opts.onProgress, opts.stats);
  } finally {
    kernels.close();
  }
}

/**
 * Above this share of points in lists to revisit, one sequential pass beats following the lists:
 * a member reached through the links costs 75-145 ns (bottle, capsules), a point of the pass about 6.
 */
const SCAN_FRACTION = 0.05;
/** Relative margin of the member test: rounding of the exact distances is far below it. */
const MEMBER_MARGIN = 1e-9;

function kCenterGreedy(
  kernels: GreedyKernels,
  n: number,
  d: number,
  target: number,
  starts: Uint32Array,
  onProgress?: (done: number, total: number) => void,
  stats?: GreedyCoresetStats,
): Uint32Array {
  const { candidates, candidateD2, near, nearD2, val, owner, skipBelow, movedIdx, movedFrom, scanCounters } = kernels;
  if (stats) Object.assign(stats, { steps: 0, distanceEvaluations: 0, screenedOut: 0, listsVisited: 0, fullScans: 0, coverageRadius: 0 });
  const count = (m: number, visits: number): void => {
    if (!stats) return;
    stats.steps++;
    stats.listsVisited += visits;
    stats.distanceEvaluations += m;
    for (let i = 0; i < m; i++) if (candidateD2[i] === Infinity) stats.screenedOut++;
  };
  // Squared distance of each point to the chosen set (sqrt is monotonic, so argmax and min agree
  // with the Euclidean version); -1 marks chosen points so they are never picked twice.
  for (let i = 0; i < n; i++) candidates[i] = i;
  for (let k = 0; k < starts.length; k++) {
    kernels.exactDistances(n, starts[k]);
    for (let i = 0; i < n; i++) val[i] += Math.sqrt(candidateD2[i]);
  }
  for (let i = 0; i < n; i++) {
    const mean = val[i] / starts.length;
    val[i] = mean * mean;
    kernels.setPointBound(i, val[i]);
  }

  // List c < target holds the points whose distance centre c set last; list `target` holds points
  // still at their start value. Each list knows its size, maximum and the lowest index at it.
  const unassigned = target;
  // Each list's members are doubly linked (head, next, prev), so whole-point steps can move single points.
  const head = new Int32Array(target + 1);
  const size = new Int32Array(target + 1);
  const listMax = new Float64Array(target + 1);
  const listArg = new Int32Array(target + 1);
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  owner.fill(unassigned);
  const selected = new Uint32Array(target);
  // Lists to visit this step, with a lower bound of dist(centre, picked)^2 for the member test.
  const toVisit = new Int32Array(target + 1);
  const visitBound = new Float64Array(target + 1);
  const candidateEnd = new Int32Array(target + 1);

  // A centre is skipped when it is proved farther than twice its list's radius from the picked point.
  const setThreshold = (list: number): void => kernels.setCentreRadius(list, size[list] === 0 ? -1 : listMax[list]);
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
      pushFront(list, x);
      size[list]++;
      if (v >= listMax[list]) {
        listMax[list] = v;
        listArg[list] = x;
      }
    }
  };
  // Links x in front of `list`'s members (its size and maximum are the caller's).
  const pushFront = (list: number, x: number): void => {
    const h = head[list];
    next[x] = h;
    prev[x] = -1;
    if (h !== -1) prev[h] = x;
    head[list] = x;
  };
  const unlink = (list: number, x: number): void => {
    const pv = prev[x];
    const nx = next[x];
    if (pv === -1) head[list] = nx;
    else next[pv] = nx;
    if (nx !== -1) prev[nx] = pv;
    size[list]--;
  };
  // Recomputes a list's maximum (ties to the lowest index) from its members.
  const remax = (list: number): void => {
    let max = -1;
    let arg = -1;
    for (let x = head[list]; x !== -1; x = next[x]) {
      const v = val[x];
      if (v > max || (v === max && x < arg)) {
        max = v;
        arg = x;
      }
    }
    listMax[list] = max;
    listArg[list] = arg;
  };
  const dirty = new Int32Array(target + 1);
  const dirtyMark = new Uint8Array(target + 1);
  rebuildLists(0);

  const progressStep = Math.max(1, Math.floor(target / 100));
  for (let t = 0; t < target; t++) {
    // Argmax of all distances = best list maximum; ties go to the lowest point index.
    let bestV = -Infinity;
    let p = -1;
    for (let c = 0; c <= t; c++) {
      const list = c === t ? unassigned : c;
      if (size[list] === 0) continue;
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
    kernels.addCentre(t, p);
    const ownerOfPicked = owner[p];

    // Lists the new centre might improve: the picked point's own list (its distance to that centre
    // is bestV), the unassigned points, and every centre the filter cannot prove far.
    let visits = 0;
    let visitMembers = 0;
    const visit = (list: number, bound: number): void => {
      toVisit[visits] = list;
      visitBound[visits++] = bound;
      visitMembers += size[list];
    };
    if (ownerOfPicked !== unassigned) visit(ownerOfPicked, bestV);
    if (size[unassigned] !== 0) visit(unassigned, -Infinity);
    if (t > 0) {
      const found = kernels.nearCentres(t, p, ownerOfPicked);
      for (let i = 0; i < found; i++) visit(near[i], nearD2[i] * (1 - FILTER_MARGIN));
    }

    // Members x with 4 * val[x] < dist(centre, picked)^2 keep their distance; the rest are
    // candidates, screened in one batch (a candidate the sketch proves no closer gets +Infinity).
    if (visitMembers > n * SCAN_FRACTION) {
      // Most lists are involved (early steps, or data the pruning suits badly): one pass over every
      // point beats chasing list links. Only the points that move are relinked.
      skipBelow.fill(Infinity, 0, t + 1);
      skipBelow[unassigned] = Infinity;
      for (let k = 0; k < visits; k++) skipBelow[toVisit[k]] = visitBound[k] / (4 * (1 + MEMBER_MARGIN));
      head[t] = -1;
      size[t] = 0;
      listMax[t] = -1;
      listArg[t] = -1;
      // The picked point leaves its list, whose maximum it was.
      let dirtyCount = 0;
      const markDirty = (list: number): void => {
        if (!dirtyMark[list]) {
          dirtyMark[list] = 1;
          dirty[dirtyCount++] = list;
        }
      };
      unlink(ownerOfPicked, p);
      markDirty(ownerOfPicked);
      const moved = kernels.scanAll(n, p, t);
      for (let i = 0; i < moved; i++) {
        const x = movedIdx[i];
        const from = movedFrom[i];
        unlink(from, x);
        if (listArg[from] === x) markDirty(from);
        pushFront(t, x);
        size[t]++;
        const v = val[x];
        if (v > listMax[t] || (v === listMax[t] && x < listArg[t])) {
          listMax[t] = v;
          listArg[t] = x;
        }
      }
      for (let i = 0; i < dirtyCount; i++) {
        const list = dirty[i];
        dirtyMark[list] = 0;
        remax(list);
        if (list !== unassigned) setThreshold(list);
      }
      setThreshold(t);
      if (stats) {
        stats.steps++;
        stats.fullScans++;
        stats.listsVisited += visits;
        stats.distanceEvaluations += scanCounters[0];
        stats.screenedOut += scanCounters[0] - scanCounters[1];
      }
    } else {
      // Pass 1: members proved unaffected are relinked into their list at once, the others queued.
      let m = 0;
      for (let k = 0; k < visits; k++) {
        const list = toVisit[k];
        const below = visitBound[k] / (4 * (1 + MEMBER_MARGIN));
        let keepHead = -1;
        let keepSize = 0;
        let keepMax = -1;
        let keepArg = -1;
        let x = head[list];
        while (x !== -1) {
          const nx = next[x];
          const vx = val[x];
          if (vx >= 0) {
            if (vx < below) {
              next[x] = keepHead;
              prev[x] = -1;
              if (keepHead !== -1) prev[keepHead] = x;
              keepHead = x;
              keepSize++;
              if (vx > keepMax || (vx === keepMax && x < keepArg)) {
                keepMax = vx;
                keepArg = x;
              }
            } else {
              candidates[m++] = x;
            }
          }
          x = nx;
        }
        head[list] = keepHead;
        size[list] = keepSize;
        listMax[list] = keepMax;
        listArg[list] = keepArg;
        candidateEnd[k] = m;
      }
      kernels.screenedDistances(m, p);
      count(m, visits);
      // Pass 2: each candidate moves to the new centre's list or stays in its own.
      let newHead = -1;
      let newSize = 0;
      let newMax = -1;
      let newArg = -1;
      let i = 0;
      for (let k = 0; k < visits; k++) {
        const list = toVisit[k];
        let keepHead = head[list];
        let keepSize = size[list];
        let keepMax = listMax[list];
        let keepArg = listArg[list];
        for (; i < candidateEnd[k]; i++) {
          const x = candidates[i];
          const vx = val[x];
          const dx = candidateD2[i];
          if (dx < vx) {
            val[x] = dx;
            owner[x] = t;
            kernels.setPointBound(x, dx);
            next[x] = newHead;
            prev[x] = -1;
            if (newHead !== -1) prev[newHead] = x;
            newHead = x;
            newSize++;
            if (dx > newMax || (dx === newMax && x < newArg)) {
              newMax = dx;
              newArg = x;
            }
          } else {
            next[x] = keepHead;
            prev[x] = -1;
            if (keepHead !== -1) prev[keepHead] = x;
            keepHead = x;
            keepSize++;
            if (vx > keepMax || (vx === keepMax && x < keepArg)) {
              keepMax = vx;
              keepArg = x;
            }
          }
        }
        head[list] = keepHead;
        size[list] = keepSize;
        listMax[list] = keepMax;
        listArg[list] = keepArg;
        if (list !== unassigned) setThreshold(list);
      }
      head[t] = newHead;
      size[t] = newSize;
      listMax[t] = newMax;
      listArg[t] = newArg;
      setThreshold(t);
    }

    if (onProgress && ((t + 1) % progressStep === 0 || t + 1 === target)) onProgress(t + 1, target);
  }
  if (stats) {
    let max = 0;
    for (let i = 0; i < n; i++) max = Math.max(max, val[i]);
    stats.coverageRadius = Math.sqrt(max);
  }
  return selected;
}
