// The inner loops of the greedy coreset, in two interchangeable forms: WebAssembly SIMD kernels
// (shared/wasm/kernels.ts, WAT text) and portable JS loops. Exact distances are
// bit-identical in both, and the filters only ever skip work they prove useless, so the selection
// does not depend on which form ran.
//
// Exact squared distances are float64 sums of float64 squares of float32 differences, in four
// lanes (element j goes to lane j % 4) combined as (s0 + s1) + (s2 + s3): f64x2 vectors hold lanes
// (0, 1) and (2, 3). Filters run in float32 with margins. The SIMD form also keeps a sketch of
// every point (sketch.ts: 16 or 32 leading principal coordinates, about 20 MB for bottle) whose
// distances bound the true ones from below; it settles most questions from cache. Steps that scan
// every point read a second copy of the sketches rounded to int16 (half the bytes; the integer
// test is widened by the rounding bound, so it too only skips points it proves no closer).

import { sketchBasis, sketchErrorNorm } from './sketch.js';
import { HEAD_LEVELS, HEAD_SUM_FACTOR, kernelModule, ROW_FLOOR, ROW_MARGIN, SCAN_QUARTER, SKETCH_SLACK, SKETCH_SUM_FACTOR, type Kernels } from '../wasm/kernels.js';
import { createMemory, instantiate } from '../wasm/runtime.js';
import { startKernelThreads, type KernelThreads } from '../wasm/threads.js';

/** Relative margin covering float32 rounding in the centre filter (its error is below 3e-6). */
export const FILTER_MARGIN = 1e-4;

export interface GreedyKernels {
  readonly kind: 'simd' | 'js';
  /** The points (count x dim). */
  readonly points: Float32Array;
  /** Point indices to measure, and the results. */
  readonly candidates: Int32Array;
  readonly candidateD2: Float64Array;
  /** Output of nearCentres: centre indices and their float32 squared distances. */
  readonly near: Int32Array;
  readonly nearD2: Float32Array;
  /** candidateD2[i] = exact squared distance from point candidates[i] to point p, for i < count. */
  exactDistances(count: number, p: number): void;
  /**
   * As exactDistances, except that a candidate proved to be at least as far from p as its bound
   * (setPointBound) gets +Infinity instead of its distance.
   */
  screenedDistances(count: number, p: number): void;
  /** Records x's current squared distance to the chosen set (the bound screenedDistances tests against). */
  setPointBound(x: number, d2: number): void;
  /** Point p becomes centre c. */
  addCentre(c: number, p: number): void;
  /** Centre c's list radius squared (its members' largest squared distance), or -1 when the list is empty. */
  setCentreRadius(c: number, r2: number): void;
  /**
   * Centres c < count, except `exclude`, not proved farther than twice their radius from point p,
   * into near/nearD2 (float32 squared distances, within FILTER_MARGIN). Returns how many.
   */
  nearCentres(count: number, p: number, exclude: number): number;
  /**
   * The greedy state scanAll works on: per point its squared distance to the chosen set (-1 once
   * chosen) and its list; per list (target + 1 of them) the skip bound.
   */
  readonly val: Float64Array;
  readonly owner: Int32Array;
  readonly skipBelow: Float64Array;
  /** Output of scanAll: the points that moved, and the lists they left. */
  readonly movedIdx: Int32Array;
  readonly movedFrom: Int32Array;
  /**
   * One step over every point (count of them) for new centre `centre` at point p: each unchosen x
   * with val[x] >= skipBelow[owner[x]] that p brings closer gets val[x] = its exact squared
   * distance, owner[x] = centre and its bound (setPointBound), and is listed in movedIdx (its old
   * list in movedFrom), in increasing order. Returns how many points moved.
   */
  scanAll(count: number, p: number, centre: number): number;
  /** Candidates the last scanAll tested, and of those the ones given an exact distance. */
  readonly scanCounters: Int32Array;
  /** Threads the kernels run on (the caller included). */
  readonly threads: number;
  /** Releases the kernel threads, if any; the kernels are not used afterwards. */
  close(): void;
}

/** Per-point and per-list greedy state (see GreedyKernels.val). */
interface GreedyState {
  val: Float64Array;
  owner: Int32Array;
  skipBelow: Float64Array;
  movedIdx: Int32Array;
  movedFrom: Int32Array;
  scanCounters: Int32Array;
}

/** Squared distance between rows at offsets a and b of m: the reference arithmetic of the exact kernels. */
export function dist2(m: Float32Array, a: number, b: number, d: number): number {
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

/** Float32 threshold of a centre: its squared distance to a new point must exceed 4 r^2. */
function centreThreshold(r2: number): number {
  return r2 < 0 ? -1 : Math.fround(4 * r2 * (1 + FILTER_MARGIN));
}

/**
 * Float32 threshold of a point's row test: a float32 squared distance above it proves the exact
 * one is at least d2. The float32 sum of dim <= 1024 squared differences is within (dim / 4 + 8)
 * 2^-24 < 2e-5 relative of the true value (all terms are non-negative), far inside ROW_MARGIN;
 * the absolute term covers subnormal rounding. +Infinity (never prune) where d2 is not finite.
 */
function rowThreshold(d2: number): number {
  const t = Math.fround(d2 * (1 + ROW_MARGIN) + ROW_FLOOR);
  return Number.isFinite(t) ? t : Infinity;
}

/** Dimensions summed before the JS centre filter first tries to prune. */
const JS_EARLY_DIMS = 32;

export function createJsKernels(points: Float32Array, count: number, dim: number, target: number): GreedyKernels {
  const centres = new Float32Array(target * dim);
  const thresholds = new Float32Array(target);
  const candidates = new Int32Array(count);
  const candidateD2 = new Float64Array(count);
  const near = new Int32Array(target);
  const nearD2 = new Float32Array(target);
  const early = Math.min(JS_EARLY_DIMS, dim);
  const exactDistances = (n: number, p: number): void => {
    const pOff = p * dim;
    for (let i = 0; i < n; i++) candidateD2[i] = dist2(points, candidates[i] * dim, pOff, dim);
  };
  const state: GreedyState = {
    val: new Float64Array(count),
    owner: new Int32Array(count),
    skipBelow: new Float64Array(target + 1),
    movedIdx: new Int32Array(count),
    movedFrom: new Int32Array(count),
    scanCounters: new Int32Array(2),
  };
  const { val, owner, skipBelow, movedIdx, movedFrom, scanCounters } = state;
  return {
    kind: 'js', points, candidates, candidateD2, near, nearD2, ...state,
    threads: 1,
    close(): void {},
    exactDistances,
    scanAll(n: number, p: number, centre: number): number {
      const pOff = p * dim;
      let moved = 0;
      scanCounters.fill(0);
      for (let x = 0; x < n; x++) {
        const v = val[x];
        if (!(v >= 0) || v < skipBelow[owner[x]]) continue;
        scanCounters[0]++;
        scanCounters[1]++;
        const d = dist2(points, x * dim, pOff, dim);
        if (d < v) {
          movedIdx[moved] = x;
          movedFrom[moved++] = owner[x];
          val[x] = d;
          owner[x] = centre;
        }
      }
      return moved;
    },
    screenedDistances: exactDistances,
    setPointBound(): void {},
    addCentre(c: number, p: number): void {
      centres.set(points.subarray(p * dim, (p + 1) * dim), c * dim);
    },
    setCentreRadius(c: number, r2: number): void {
      thresholds[c] = centreThreshold(r2);
    },
    nearCentres(n: number, p: number, exclude: number): number {
      const pOff = p * dim;
      let found = 0;
      for (let c = 0; c < n; c++) {
        const th = thresholds[c];
        if (th < 0 || c === exclude) continue;
        const cOff = c * dim;
        let s = 0;
        let j = 0;
        for (; j < early; j++) {
          const e = centres[cOff + j] - points[pOff + j];
          s += e * e;
        }
        if (s > th) continue;
        for (; j < dim; j++) {
          const e = centres[cOff + j] - points[pOff + j];
          s += e * e;
        }
        if (s > th) continue;
        near[found] = c;
        nearD2[found++] = s;
      }
      return found;
    },
  };
}


/** Rows of features copied into kernel memory per projection round (split among the threads). */
const PROJECT_CHUNK_ROWS = 512;
/** Chunks per thread of a whole-point step or a projection round: a thread that falls behind costs a small share. */
const CHUNKS_PER_THREAD = 4;
/** Centres from which nearCentres is split among the threads (below, waking them costs more than it saves). */
const THREADS_FROM_CENTRES = 4096;
/** Linear memory above this is not attempted (the JS kernels take over). */
const MAX_KERNEL_BYTES = 2 ** 31;

/** Bump allocator over byte offsets, 64-byte aligned. */
function layout<K extends string>(sizes: Record<K, number>): { offsets: Record<K, number>; total: number } {
  const offsets = {} as Record<K, number>;
  let at = 64;
  for (const k of Object.keys(sizes) as K[]) {
    offsets[k] = at;
    at += Math.ceil(sizes[k] / 64) * 64;
  }
  return { offsets, total: at };
}

export interface SimdGreedyKernels extends GreedyKernels {
  /**
   * Fills `points` from row `firstRow` on with `features` (rows x inDim) times wT (dim x inDim,
   * output-major), each output summed in float64 in input order and rounded to float32, like the
   * scalar projection; so rows projected chunk by chunk equal rows projected at once.
   */
  projectInto(features: Float32Array, inDim: number, wT: Float32Array, firstRow?: number): void;
  /** Builds the point sketches; call once `points` holds its final values, before the kernels are used. */
  buildSketches(): void;
}

/**
 * SIMD kernels over a fresh linear memory sized for `count` points of `dim` floats (and, for
 * projectInto, inputs of `projectFromDim` floats), or null when SIMD is unavailable, dim is not a
 * multiple of 8, or the memory would be too large. With threads > 1 the memory is shared and
 * whole-point steps and projections are split among that many threads; results are the same.
 */
export function createSimdKernels(count: number, dim: number, target: number, projectFromDim = 0, threads = 1): SimdGreedyKernels | null {
  if (dim % 8 !== 0 || dim < 8) return null;
  const shared = threads > 1;
  const module = kernelModule(shared);
  if (!module) return null;
  const chunks = shared ? threads * CHUNKS_PER_THREAD : 1;
  const stages = dim >= 64 ? 2 : dim >= 32 ? 1 : 0;
  const width = 16 * stages;
  const { offsets, total } = layout({
    points: count * dim * 4,
    centres: target * dim * 4,
    thresholds: target * 4,
    sketches: count * width * 4,
    heads: Math.ceil(count / 4) * 4 * width * 2,
    headThr: (count + 4) * 4,
    pHead: width * 2,
    pointSketchThr: (count + 4) * 4,
    pointRowThr: count * 4,
    val: (count + 4) * 8, // scanAll reads whole groups of four: padded
    owner: (count + 4) * 4,
    skipBelow: (target + 1) * 8,
    movedIdx: count * 4,
    movedFrom: count * 4,
    scanCounters: 8 * chunks,
    candidates: count * 4,
    candidateD2: count * 8,
    near: target * 4,
    nearD2: target * 4,
    weights: Math.max(projectFromDim, width) * dim * 8,
    chunk: projectFromDim * PROJECT_CHUNK_ROWS * 4,
  });
  if (total > MAX_KERNEL_BYTES) return null;
  // Without the address space the JS kernels take over: they need no extra memory.
  const memory = createMemory(total, shared);
  if (!memory) return null;
  const k = instantiate<Kernels>(module, memory);
  const pool: KernelThreads | null = shared ? startKernelThreads(module, memory, ['scanAll', 'project', 'near'], threads, k as unknown as Record<string, unknown>) : null;
  const buf = memory.buffer;
  const f32 = (at: number, n: number) => new Float32Array(buf, at, n);
  const points = f32(offsets.points, count * dim);
  const centres = f32(offsets.centres, target * dim);
  const thresholds = f32(offsets.thresholds, target);
  const sketches = f32(offsets.sketches, count * width);
  const pointSketchThr = f32(offsets.pointSketchThr, count);
  const headThr = new Int32Array(buf, offsets.headThr, count);
  const pHead = new Int16Array(buf, offsets.pHead, width);
  const pointRowThr = f32(offsets.pointRowThr, count);
  const state: GreedyState = {
    val: new Float64Array(buf, offsets.val, count),
    owner: new Int32Array(buf, offsets.owner, count),
    skipBelow: new Float64Array(buf, offsets.skipBelow, target + 1),
    movedIdx: new Int32Array(buf, offsets.movedIdx, count),
    movedFrom: new Int32Array(buf, offsets.movedFrom, count),
    scanCounters: new Int32Array(buf, offsets.scanCounters, 2),
  };
  const chunkCounters = new Int32Array(buf, offsets.scanCounters, 2 * chunks);
  const candidates = new Int32Array(buf, offsets.candidates, count);
  const candidateD2 = new Float64Array(buf, offsets.candidateD2, count);
  const nearIdx = new Int32Array(buf, offsets.near, target);
  const nearD2 = f32(offsets.nearD2, target);
  const rowBytes = dim * 4;
  const quarterBytes = Math.ceil(count / 4) * 4 * SCAN_QUARTER * 2;
  const sketchBytes = width * 4;
  // Set by buildSketches: sketch thresholds are (S sqrt(bound) + E)^2 / K, see sketch.ts.
  let sigma = 1;
  let errorNorm = 0;
  const sketchThreshold = (boundD2: number): number =>
    boundD2 < 0 ? -1 : Math.fround(((sigma * Math.sqrt(boundD2) + errorNorm) ** 2 / SKETCH_SUM_FACTOR) * SKETCH_SLACK);
  // Set by buildSketches: heads are the sketches in steps of 1 / headScale, rounded (see scanAll in kernels.ts).
  let headScale = 1;
  let headSlack = 0;
  const quantise = (v: number): number => Math.round(v * headScale);
  /** The integer bound of the head test, as the scan kernel computes it (sums are at most 2^31 - 1: no pruning). */
  const headThreshold = (boundD2: number): number => {
    if (boundD2 < 0) return -1;
    const h = (sigma * Math.sqrt(boundD2) + errorNorm) * headScale + headSlack;
    const t = Math.floor(h * h * HEAD_SUM_FACTOR + 1);
    return Number.isFinite(t) ? Math.min(t, 2 ** 31 - 1) : 2 ** 31 - 1;
  };

  /** rows x outDim at byte dst = rows x inDim (JS array `src`, or rows already at byte srcAt) times wT. */
  const projectRows = (rows: number, inDim: number, outDim: number, wT: Float32Array, dst: number, src: Float32Array | number): void => {
    const blocks = outDim / 8;
    const w = new Float64Array(buf, offsets.weights, inDim * outDim);
    for (let b = 0; b < blocks; b++) {
      for (let j = 0; j < inDim; j++) {
        for (let o = 0; o < 8; o++) w[(b * inDim + j) * 8 + o] = wT[(b * 8 + o) * inDim + j];
      }
    }
    const outRowBytes = outDim * 4;
    const pairs = rows >> 1;
    // `n` pairs of rows at byte `at` into `to`: split into row pairs per chunk across the threads.
    const projectPairs = (at: number, n: number, to: number): void => {
      if (!pool) {
        k.project(at, n, inDim, offsets.weights, blocks, outRowBytes, to);
        return;
      }
      const per = Math.ceil(n / chunks);
      const args: number[][] = [];
      for (let q = 0; q < n; q += per) {
        args.push([at + 2 * q * inDim * 4, Math.min(per, n - q), inDim, offsets.weights, blocks, outRowBytes, to + 2 * q * outRowBytes]);
      }
      pool.run('project', args);
    };
    if (typeof src === 'number') {
      for (let r = 0; r < 2 * pairs; r += PROJECT_CHUNK_ROWS) {
        const n = Math.min(PROJECT_CHUNK_ROWS, 2 * pairs - r);
        projectPairs(src + r * inDim * 4, n >> 1, dst + r * outRowBytes);
      }
    } else {
      const chunk = f32(offsets.chunk, PROJECT_CHUNK_ROWS * inDim);
      for (let r = 0; r < 2 * pairs; r += PROJECT_CHUNK_ROWS) {
        const n = Math.min(PROJECT_CHUNK_ROWS, 2 * pairs - r);
        chunk.set(src.subarray(r * inDim, (r + n) * inDim));
        projectPairs(offsets.chunk, n >> 1, dst + r * outRowBytes);
      }
    }
    if (rows % 2 === 1) {
      // The odd last row: the same float64 sums in JS.
      const r = rows - 1;
      const input = typeof src === 'number' ? f32(src, rows * inDim) : src;
      const out = f32(dst, rows * outDim);
      for (let o = 0; o < outDim; o++) {
        let s = 0;
        for (let j = 0; j < inDim; j++) s += input[r * inDim + j] * wT[o * inDim + j];
        out[r * outDim + o] = s;
      }
    }
  };

  return {
    kind: 'simd', points, candidates, candidateD2, near: nearIdx, nearD2, ...state,
    threads,
    close(): void {
      pool?.close();
    },
    scanAll(n: number, p: number, centre: number): number {
      // Points from..to - 1 of one chunk; their moves are written from movedIdx[from] on.
      for (let i = 0; i < width; i++) pHead[i] = quantise(sketches[p * width + i]);
      const scanArgs = (from: number, to: number, c: number): number[] => [
        offsets.points, offsets.heads, quarterBytes, offsets.pointSketchThr, offsets.headThr, offsets.pointRowThr,
        offsets.val, offsets.owner, offsets.skipBelow,
        from, to, offsets.points + p * rowBytes, offsets.pHead, dim / 4, rowBytes, stages,
        centre, sigma, errorNorm, headScale, headSlack,
        offsets.movedIdx + 4 * from, offsets.movedFrom + 4 * from, offsets.scanCounters + 8 * c,
      ];
      if (!pool) return k.scanAll(...scanArgs(0, n, 0));
      // Chunk bounds are multiples of four (the kernel's groups); the moves are compacted in chunk order.
      const per = Math.ceil(n / chunks / 4) * 4;
      const args: number[][] = [];
      for (let from = 0; from < n; from += per) args.push(scanArgs(from, Math.min(n, from + per), args.length));
      const moved = pool.run('scanAll', args);
      let total = 0;
      let tested = 0;
      let exact = 0;
      for (let c = 0; c < args.length; c++) {
        const from = c * per;
        if (from !== total) {
          state.movedIdx.copyWithin(total, from, from + moved[c]);
          state.movedFrom.copyWithin(total, from, from + moved[c]);
        }
        total += moved[c];
        tested += chunkCounters[2 * c];
        exact += chunkCounters[2 * c + 1];
      }
      chunkCounters[0] = tested;
      chunkCounters[1] = exact;
      return total;
    },
    exactDistances(n: number, p: number): void {
      k.dist2Many(offsets.points, offsets.candidates, n, offsets.points + p * rowBytes, dim / 4, rowBytes, offsets.candidateD2);
    },
    screenedDistances(n: number, p: number): void {
      k.screened(
        offsets.points, offsets.sketches, offsets.pointSketchThr, offsets.pointRowThr, offsets.candidates, n,
        offsets.points + p * rowBytes, offsets.sketches + p * sketchBytes, offsets.candidateD2, dim / 4, rowBytes, stages,
      );
    },
    setPointBound(x: number, d2: number): void {
      if (stages > 0) {
        pointSketchThr[x] = sketchThreshold(d2);
        headThr[x] = headThreshold(d2);
      }
      pointRowThr[x] = rowThreshold(d2);
    },
    addCentre(c: number, p: number): void {
      centres.set(points.subarray(p * dim, (p + 1) * dim), c * dim);
    },
    setCentreRadius(c: number, r2: number): void {
      thresholds[c] = centreThreshold(r2);
    },
    nearCentres(n: number, p: number, exclude: number): number {
      const saved = exclude >= 0 && exclude < n ? thresholds[exclude] : null;
      if (saved !== null) thresholds[exclude] = -1;
      // Centres from..to - 1 of one chunk; their finds are written from near[from] on, relative to from.
      const nearArgs = (from: number, to: number): number[] => [
        offsets.centres + from * rowBytes, offsets.thresholds + 4 * from, to - from, offsets.points + p * rowBytes, dim / 8,
        offsets.near + 4 * from, offsets.nearD2 + 4 * from,
      ];
      let found = 0;
      if (!pool || n < THREADS_FROM_CENTRES) {
        found = k.near(...nearArgs(0, n));
      } else {
        const per = Math.ceil(n / chunks);
        const args: number[][] = [];
        for (let from = 0; from < n; from += per) args.push(nearArgs(from, Math.min(n, from + per)));
        const counts = pool.run('near', args);
        for (let c = 0; c < args.length; c++) {
          const from = c * per;
          for (let i = 0; i < counts[c]; i++) {
            nearIdx[found + i] = nearIdx[from + i] + from;
            nearD2[found + i] = nearD2[from + i];
          }
          found += counts[c];
        }
      }
      if (saved !== null) thresholds[exclude] = saved;
      return found;
    },
    projectInto(features: Float32Array, inDim: number, wT: Float32Array, firstRow = 0): void {
      if (inDim !== projectFromDim) throw new Error(`projectInto: kernels were sized for input dim ${projectFromDim}, got ${inDim}`);
      const rows = features.length / inDim;
      if (!Number.isInteger(rows) || firstRow < 0 || firstRow + rows > count) {
        throw new Error(`projectInto: ${features.length} values from row ${firstRow} do not fit ${count} rows of ${inDim}`);
      }
      projectRows(rows, inDim, dim, wT, offsets.points + firstRow * rowBytes, features);
    },
    buildSketches(): void {
      if (stages === 0) return;
      const b = sketchBasis(points, count, dim, width);
      projectRows(count, dim, width, b.basis, offsets.sketches, offsets.points);
      sigma = b.sigmaMax * SKETCH_SLACK;
      errorNorm = sketchErrorNorm(points, count, dim, b.sigmaMax);
      // The sketches again, quantised to int16 steps (at most HEAD_LEVELS of them, so the scan's
      // integer sums cannot overflow), four points per copy, SCAN_QUARTER coordinates per copy (see scanAll).
      let maxAbs = 0;
      for (let i = 0; i < count * width; i++) maxAbs = Math.max(maxAbs, Math.abs(sketches[i]));
      headScale = maxAbs > 0 ? HEAD_LEVELS / maxAbs / (1 + 1e-9) : 1;
      // Rounding moves each coordinate by at most half a step (plus float64 rounding of v * headScale).
      headSlack = Math.sqrt(width) * (1 + 1e-6);
      const heads = new Int16Array(buf, offsets.heads, Math.ceil(count / 4) * 4 * width);
      const perQuarter = quarterBytes / 2;
      for (let q = 0; q < width / SCAN_QUARTER; q++) {
        for (let x = 0; x < count; x++) {
          const at = q * perQuarter + (x >> 2) * 4 * SCAN_QUARTER + 2 * (x & 3);
          for (let i = 0; i < SCAN_QUARTER; i += 2) {
            heads[at + 4 * i] = quantise(sketches[x * width + q * SCAN_QUARTER + i]);
            heads[at + 4 * i + 1] = quantise(sketches[x * width + q * SCAN_QUARTER + i + 1]);
          }
        }
      }
    },
  };
}
