// The inner loops of the greedy coreset, in two interchangeable forms: WebAssembly SIMD kernels
// (assembled at run time, no toolchain needed) and portable JS loops. Exact distances are
// bit-identical in both, and the filters only ever skip work they prove useless, so the selection
// does not depend on which form ran.
//
// Exact squared distances are float64 sums of float64 squares of float32 differences, in four
// lanes (element j goes to lane j % 4) combined as (s0 + s1) + (s2 + s3): f64x2 vectors hold lanes
// (0, 1) and (2, 3). Filters run in float32 with margins. The SIMD form also keeps a sketch of
// every point (sketch.ts: 16 or 32 leading principal coordinates, about 20 MB for bottle) whose
// distances bound the true ones from below; it settles most questions from cache.

import { sketchBasis, sketchErrorNorm } from './sketch.js';
import { F32, I32, V128, assembleModule, instantiate, op, simdSupported, wasm, type Code, type WasmMemory, type WasmModule } from './wasm-module.js';

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
  return {
    kind: 'js', points, candidates, candidateD2, near, nearD2,
    exactDistances,
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

// ---- WebAssembly SIMD kernels ------------------------------------------------------------------

const zeroV = [op.f64Const(0), op.f64x2Splat].flat();
const zero32 = [op.f32Const(0), op.f32x4Splat].flat();

/** (lane0 + lane1) + (lane2 + lane3) of two f64x2 locals holding lanes (0, 1) and (2, 3). */
function combineLanes(lo: number, hi: number): Code {
  return [
    op.get(lo), op.f64x2ExtractLane(0), op.get(lo), op.f64x2ExtractLane(1), op.f64Add,
    op.get(hi), op.f64x2ExtractLane(0), op.get(hi), op.f64x2ExtractLane(1), op.f64Add,
    op.f64Add,
  ].flat();
}

/** acc += (promote(x[addr + off .. +8]) - pv)^2 for one f64x2 lane pair. */
function accumulatePair(acc: number, addr: number, off: number, pv: number, tmp: number): Code {
  return [
    op.get(addr), op.v128Load64Zero(off), op.f64x2PromoteLowF32x4, op.get(pv), op.f64x2Sub, op.tee(tmp),
    op.get(tmp), op.f64x2Mul, op.get(acc), op.f64x2Add, op.set(acc),
  ].flat();
}

/** Loads the query's next four floats as two f64x2 (lanes 0, 1 and 2, 3) from the address in local q. */
function loadQuery(q: number, pv0: number, pv1: number): Code {
  return [
    op.get(q), op.v128Load64Zero(0), op.f64x2PromoteLowF32x4, op.set(pv0),
    op.get(q), op.v128Load64Zero(8), op.f64x2PromoteLowF32x4, op.set(pv1),
  ].flat();
}

/** local += step; for address cursors. */
function bump(local: number, step: number): Code {
  return [op.get(local), op.i32Const(step), op.i32Add, op.set(local)].flat();
}

/** Decrements counter local g and loops (br_if 0) while it is non-zero. */
function countDown(g: number): Code {
  return [op.get(g), op.i32Const(1), op.i32Sub, op.tee(g), op.brIf(0)].flat();
}

/** base + index * 2^shift */
function addressOf(base: number, index: number, shift: number): Code {
  return [op.get(base), op.get(index), op.i32Const(shift), op.i32Shl, op.i32Add].flat();
}

/** Horizontal float32 sum (l0 + l1) + (l2 + l3) of a f32x4 local. */
function hsum32(v: number): Code {
  return [
    op.get(v), op.f32x4ExtractLane(0), op.get(v), op.f32x4ExtractLane(1), op.f32Add,
    op.get(v), op.f32x4ExtractLane(2), op.get(v), op.f32x4ExtractLane(3), op.f32Add,
    op.f32Add,
  ].flat();
}

/** acc += (a[off] - b[off])^2 over one f32x4, a and b being address locals. */
function squaredStep32(acc: number, a: number, b: number, off: number, tmp: number): Code {
  return [
    op.get(a), op.v128Load(off), op.get(b), op.v128Load(off), op.f32x4Sub, op.tee(tmp),
    op.get(tmp), op.f32x4Mul, op.get(acc), op.f32x4Add, op.set(acc),
  ].flat();
}

/** Folds acc1 into acc0 (zeroing acc1) and leaves the float32 lane sum on the stack. */
function foldSum32(acc0: number, acc1: number): Code {
  return [op.get(acc0), op.get(acc1), op.f32x4Add, op.set(acc0), zero32, op.set(acc1), hsum32(acc0)].flat();
}

/** Adds sketch stage `stage` (16 floats at byte offset 64 * stage) of (a - b)^2 into acc0/acc1. */
function sketchStage(acc0: number, acc1: number, a: number, b: number, stage: number, tmp: number): Code {
  return [0, 1, 2, 3].flatMap((q) => squaredStep32(q % 2 === 0 ? acc0 : acc1, a, b, 64 * stage + 16 * q, tmp));
}

/**
 * dist2Many(points, idx, count, p, groups, rowBytes, out): out[i] (f64) = squared distance from
 * row idx[i] to the row at byte address p; rows have groups * 4 floats. Four rows at a time keep
 * eight independent accumulator chains in flight.
 */
function dist2ManyKernel(): Code[] {
  const [PTS, IDX, COUNT, P, GROUPS, ROWB, OUT] = [0, 1, 2, 3, 4, 5, 6];
  const I = 7, Q = 8, G = 9;
  const A = [10, 11, 12, 13];
  const ACC = [14, 15, 16, 17, 18, 19, 20, 21]; // row k: lanes (0,1) at ACC[2k], (2,3) at ACC[2k+1]
  const PV0 = 22, PV1 = 23, T = 24;
  const rowAddr = (k: number): Code => [
    op.get(PTS), addressOf(IDX, I, 2), op.i32Load(4 * k), op.get(ROWB), op.i32Mul, op.i32Add, op.set(A[k]),
  ].flat();
  const storeOut = (k: number): Code => [addressOf(OUT, I, 3), combineLanes(ACC[2 * k], ACC[2 * k + 1]), op.f64Store(8 * k)].flat();
  const rows = (k: number): Code => [
    op.get(P), op.set(Q), op.get(GROUPS), op.set(G),
    op.loop(
      loadQuery(Q, PV0, PV1),
      ...Array.from({ length: k }, (_, r) => [accumulatePair(ACC[2 * r], A[r], 0, PV0, T), accumulatePair(ACC[2 * r + 1], A[r], 8, PV1, T)]).flat(),
      ...A.slice(0, k).map((a) => bump(a, 16)), bump(Q, 16), countDown(G),
    ),
  ].flat();
  const quads = op.block(
    op.loop(
      op.get(COUNT), op.get(I), op.i32Sub, op.i32Const(4), op.i32LtS, op.brIf(1),
      ...[0, 1, 2, 3].map(rowAddr),
      ...ACC.map((a) => [zeroV, op.set(a)].flat()),
      rows(4),
      ...[0, 1, 2, 3].map(storeOut),
      bump(I, 4), op.br(0),
    ),
  );
  const singles = op.block(
    op.loop(
      op.get(I), op.get(COUNT), op.i32GeS, op.brIf(1),
      rowAddr(0), zeroV, op.set(ACC[0]), zeroV, op.set(ACC[1]),
      rows(1),
      storeOut(0),
      bump(I, 1), op.br(0),
    ),
  );
  return [quads, singles];
}

/**
 * screenedN(points, sketches, sketchThr, idx, count, p, pSketch, out, groups, rowBytes): as
 * dist2Many, but first compares the float32 sketch distance (N stages of 16 floats) of each
 * candidate x with sketchThr[x]; above it, x cannot be closer to p than its bound: out = +Infinity.
 */
/** Candidates ahead whose sketch row is touched early. */
const PREFETCH = 8;

function screenedKernel(stages: number): Code[] {
  const [PTS, SK, STHR, IDX, COUNT, P, PSK, OUT, GROUPS, ROWB] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const I = 10, X = 11, A = 12, Q = 13, G = 14, SA = 15, TH = 16;
  const ACC0 = 17, ACC1 = 18, E = 19, LO = 20, HI = 21, PV0 = 22, PV1 = 23, T = 24;
  const sketchTests = stages === 0 ? [] : [
    addressOf(STHR, X, 2), op.f32Load(0), op.set(TH),
    op.get(SK), op.get(X), op.i32Const(64 * stages), op.i32Mul, op.i32Add, op.set(SA),
    zero32, op.set(ACC0), zero32, op.set(ACC1),
    ...Array.from({ length: stages }, (_, s) => [
      sketchStage(ACC0, ACC1, SA, PSK, s, E),
      foldSum32(ACC0, ACC1), op.get(TH), op.f32Gt,
      op.if(addressOf(OUT, I, 3), op.f64Const(Infinity), op.f64Store(0), op.br(1)),
    ]).flat(),
  ];
  return [
    op.block(
      op.loop(
        op.get(I), op.get(COUNT), op.i32GeS, op.brIf(1),
        op.block(
          // Touch the sketch of the candidate PREFETCH places ahead, so its cache miss overlaps this work.
          ...(stages === 0 ? [] : [
            op.get(I), op.i32Const(PREFETCH), op.i32Add, op.get(COUNT), op.i32LtS,
            op.if(op.get(SK), addressOf(IDX, I, 2), op.i32Load(4 * PREFETCH), op.i32Const(64 * stages), op.i32Mul, op.i32Add, op.i32Load(0), op.drop),
          ]),
          addressOf(IDX, I, 2), op.i32Load(0), op.set(X),
          ...sketchTests,
          op.get(PTS), op.get(X), op.get(ROWB), op.i32Mul, op.i32Add, op.set(A),
          op.get(P), op.set(Q), op.get(GROUPS), op.set(G),
          zeroV, op.set(LO), zeroV, op.set(HI),
          op.loop(loadQuery(Q, PV0, PV1), accumulatePair(LO, A, 0, PV0, T), accumulatePair(HI, A, 8, PV1, T), bump(A, 16), bump(Q, 16), countDown(G)),
          addressOf(OUT, I, 3), combineLanes(LO, HI), op.f64Store(0),
        ),
        bump(I, 1), op.br(0),
      ),
    ),
  ];
}

/**
 * nearN(centres, cSketches, cSketchThr, thr, count, p, pSketch, pairs, outIdx, outD2) -> found:
 * centres whose float32 sketch distance to p (N stages) stays within cSketchThr[c] and whose
 * float32 distance (rows of pairs * 8 floats) stays within thr[c]; negative thresholds prune.
 */
function nearKernel(stages: number): Code[] {
  const [CEN, CSK, CSTHR, THR, COUNT, P, PSK, PAIRS, OIDX, OD2] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const C = 10, A = 11, Q = 12, G = 13, FOUND = 14, ROWB = 15, SA = 16, TH = 17, S = 18, ACC0 = 19, ACC1 = 20, E = 21;
  const sketchTests = stages === 0 ? [] : [
    addressOf(CSTHR, C, 2), op.f32Load(0), op.set(TH),
    op.get(CSK), op.get(C), op.i32Const(64 * stages), op.i32Mul, op.i32Add, op.set(SA),
    zero32, op.set(ACC0), zero32, op.set(ACC1),
    ...Array.from({ length: stages }, (_, s) => [sketchStage(ACC0, ACC1, SA, PSK, s, E), foldSum32(ACC0, ACC1), op.get(TH), op.f32Gt, op.brIf(0)]).flat(),
  ];
  return [
    op.get(PAIRS), op.i32Const(5), op.i32Shl, op.set(ROWB),
    op.block(
      op.loop(
        op.get(C), op.get(COUNT), op.i32GeS, op.brIf(1),
        op.block(
          ...sketchTests,
          addressOf(THR, C, 2), op.f32Load(0), op.tee(TH), op.f32Const(0), op.f32Lt, op.brIf(0),
          zero32, op.set(ACC0), zero32, op.set(ACC1),
          op.get(CEN), op.get(C), op.get(ROWB), op.i32Mul, op.i32Add, op.set(A),
          op.get(P), op.set(Q), op.get(PAIRS), op.set(G),
          op.loop(squaredStep32(ACC0, A, Q, 0, E), squaredStep32(ACC1, A, Q, 16, E), bump(A, 32), bump(Q, 32), countDown(G)),
          foldSum32(ACC0, ACC1), op.tee(S), op.get(TH), op.f32Gt, op.brIf(0),
          addressOf(OIDX, FOUND, 2), op.get(C), op.i32Store(0),
          addressOf(OD2, FOUND, 2), op.get(S), op.f32Store(0),
          bump(FOUND, 1),
        ),
        bump(C, 1), op.br(0),
      ),
    ),
    op.get(FOUND),
  ];
}

/**
 * project(x, pairs, dim, w, blocks, outRowBytes, out): for row pairs of x (dim floats each) and
 * 8-output blocks of the blocked float64 weights (block b: dim x 8 at w + b * dim * 64), out rows
 * get float32(sum_j x[j] * w[j][o]) summed in float64 in j order, as the scalar projection does.
 */
function projectKernel(): Code[] {
  const [X, PAIRS, DIM, W, BLOCKS, OROWB, OUT] = [0, 1, 2, 3, 4, 5, 6];
  const B = 7, R = 8, X0 = 9, X1 = 10, WP = 11, J = 12, OR = 13;
  const ACC = [14, 15, 16, 17, 18, 19, 20, 21]; // row0: 14..17, row1: 18..21
  const V0 = 22, V1 = 23, WV = [24, 25, 26, 27];
  const splatRow = (addr: number, dst: number): Code => [op.get(addr), op.f32Load(0), op.f64PromoteF32, op.f64x2Splat, op.set(dst)].flat();
  const mac = (acc: number, v: number, w: number): Code => [op.get(v), op.get(w), op.f64x2Mul, op.get(acc), op.f64x2Add, op.set(acc)].flat();
  const store = (row: number, k: number, lane: number): Code => [
    op.get(OR), ...(row === 1 ? [op.get(OROWB), op.i32Add] : []),
    op.get(ACC[row * 4 + k]), op.f64x2ExtractLane(lane), op.f32DemoteF64, op.f32Store(8 * k + 4 * lane),
  ].flat();
  const rowBytesX = [op.get(DIM), op.i32Const(2), op.i32Shl].flat();
  return [
    op.block(op.loop(
      op.get(B), op.get(BLOCKS), op.i32GeS, op.brIf(1),
      op.i32Const(0), op.set(R),
      op.block(op.loop(
        op.get(R), op.get(PAIRS), op.i32GeS, op.brIf(1),
        // x rows 2r and 2r + 1
        op.get(X), op.get(R), op.i32Const(1), op.i32Shl, rowBytesX, op.i32Mul, op.i32Add, op.tee(X0),
        rowBytesX, op.i32Add, op.set(X1),
        op.get(W), op.get(B), op.get(DIM), op.i32Mul, op.i32Const(6), op.i32Shl, op.i32Add, op.set(WP),
        ...ACC.map((a) => [zeroV, op.set(a)].flat()),
        op.get(DIM), op.set(J),
        op.loop(
          splatRow(X0, V0), splatRow(X1, V1),
          ...WV.map((w, k) => [op.get(WP), op.v128Load(16 * k), op.set(w)].flat()),
          ...[0, 1, 2, 3].flatMap((k) => [mac(ACC[k], V0, WV[k]), mac(ACC[4 + k], V1, WV[k])]),
          op.get(X0), op.i32Const(4), op.i32Add, op.set(X0),
          op.get(X1), op.i32Const(4), op.i32Add, op.set(X1),
          op.get(WP), op.i32Const(64), op.i32Add, op.set(WP),
          op.get(J), op.i32Const(1), op.i32Sub, op.tee(J), op.brIf(0),
        ),
        // out address of row 2r, block b
        op.get(OUT), op.get(R), op.i32Const(1), op.i32Shl, op.get(OROWB), op.i32Mul, op.i32Add,
        op.get(B), op.i32Const(5), op.i32Shl, op.i32Add, op.set(OR),
        ...[0, 1].flatMap((row) => [0, 1, 2, 3].flatMap((k) => [store(row, k, 0), store(row, k, 1)])),
        op.get(R), op.i32Const(1), op.i32Add, op.set(R),
        op.br(0),
      )),
      op.get(B), op.i32Const(1), op.i32Add, op.set(B),
      op.br(0),
    )),
  ];
}

const i32s = (n: number): number[] => Array<number>(n).fill(I32);
const v128s = (n: number): number[] => Array<number>(n).fill(V128);
const SKETCH_STAGES = [0, 1, 2] as const;

let compiled: WasmModule | null | undefined;

/** The compiled kernel module, or null where WebAssembly SIMD is unavailable. */
export function greedyKernelModule(): WasmModule | null {
  if (compiled !== undefined) return compiled;
  if (!simdSupported()) return (compiled = null);
  const bytes = assembleModule(
    [
      { name: 'dist2Many', params: i32s(7), results: [], locals: [...i32s(7), ...v128s(11)], body: dist2ManyKernel() },
      ...SKETCH_STAGES.map((s) => ({
        name: `screened${s}`, params: i32s(10), results: [], locals: [...i32s(6), F32, ...v128s(8)], body: screenedKernel(s),
      })),
      ...SKETCH_STAGES.map((s) => ({
        name: `near${s}`, params: i32s(10), results: [I32], locals: [...i32s(7), F32, F32, ...v128s(3)], body: nearKernel(s),
      })),
      { name: 'project', params: i32s(7), results: [], locals: [...i32s(7), ...v128s(14)], body: projectKernel() },
    ],
    { initialPages: 1 },
  );
  return (compiled = new wasm.Module(bytes));
}

type Fn = (...args: number[]) => number;
type KernelExports = Record<string, Fn>;

/** Rows of features copied into kernel memory per projection call. */
const PROJECT_CHUNK_ROWS = 64;
/** Linear memory above this is not attempted (the JS kernels take over). */
const MAX_KERNEL_BYTES = 2 ** 31;
/** Sketch test margins: float32 rounding of a 32-term sum stays below 1e-6 relative. */
const SKETCH_SUM_FACTOR = 1 - 1e-5;
const SKETCH_SLACK = 1 + 1e-6;

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
   * Fills `points` with `features` (count x inDim) times wT (dim x inDim, output-major), each
   * output summed in float64 in input order and rounded to float32, like the scalar projection.
   */
  projectInto(features: Float32Array, inDim: number, wT: Float32Array): void;
  /** Builds the point sketches; call once `points` holds its final values, before the kernels are used. */
  buildSketches(): void;
}

/**
 * SIMD kernels over a fresh linear memory sized for `count` points of `dim` floats (and, for
 * projectInto, inputs of `projectFromDim` floats), or null when SIMD is unavailable, dim is not a
 * multiple of 8, or the memory would be too large.
 */
export function createSimdKernels(count: number, dim: number, target: number, projectFromDim = 0): SimdGreedyKernels | null {
  if (dim % 8 !== 0 || dim < 8) return null;
  const module = greedyKernelModule();
  if (!module) return null;
  const stages = dim >= 64 ? 2 : dim >= 32 ? 1 : 0;
  const width = 16 * stages;
  const { offsets, total } = layout({
    points: count * dim * 4,
    centres: target * dim * 4,
    thresholds: target * 4,
    sketches: count * width * 4,
    pointSketchThr: count * 4,
    centreSketches: target * width * 4,
    centreSketchThr: target * 4,
    candidates: count * 4,
    candidateD2: count * 8,
    near: target * 4,
    nearD2: target * 4,
    weights: Math.max(projectFromDim, width) * dim * 8,
    chunk: projectFromDim * PROJECT_CHUNK_ROWS * 4,
  });
  if (total > MAX_KERNEL_BYTES) return null;
  let memory: WasmMemory;
  try {
    memory = new wasm.Memory({ initial: Math.ceil(total / 65536) });
  } catch {
    return null; // not enough address space: the JS kernels need no extra memory
  }
  const k = instantiate<KernelExports>(module, memory);
  const screened = k[`screened${stages}`];
  const near = k[`near${stages}`];
  const buf = memory.buffer;
  const f32 = (at: number, n: number) => new Float32Array(buf, at, n);
  const points = f32(offsets.points, count * dim);
  const centres = f32(offsets.centres, target * dim);
  const thresholds = f32(offsets.thresholds, target);
  const sketches = f32(offsets.sketches, count * width);
  const pointSketchThr = f32(offsets.pointSketchThr, count);
  const centreSketches = f32(offsets.centreSketches, target * width);
  const centreSketchThr = f32(offsets.centreSketchThr, target);
  const candidates = new Int32Array(buf, offsets.candidates, count);
  const candidateD2 = new Float64Array(buf, offsets.candidateD2, count);
  const nearIdx = new Int32Array(buf, offsets.near, target);
  const nearD2 = f32(offsets.nearD2, target);
  const rowBytes = dim * 4;
  const sketchBytes = width * 4;
  // Set by buildSketches: sketch thresholds are (S sqrt(bound) + E)^2 / K, see sketch.ts.
  let sigma = 1;
  let errorNorm = 0;
  const sketchThreshold = (boundD2: number): number =>
    boundD2 < 0 ? -1 : Math.fround(((sigma * Math.sqrt(boundD2) + errorNorm) ** 2 / SKETCH_SUM_FACTOR) * SKETCH_SLACK);

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
    if (typeof src === 'number') {
      k.project(src, pairs, inDim, offsets.weights, blocks, outRowBytes, dst);
    } else {
      const chunk = f32(offsets.chunk, PROJECT_CHUNK_ROWS * inDim);
      for (let r = 0; r < 2 * pairs; r += PROJECT_CHUNK_ROWS) {
        const n = Math.min(PROJECT_CHUNK_ROWS, 2 * pairs - r);
        chunk.set(src.subarray(r * inDim, (r + n) * inDim));
        k.project(offsets.chunk, n >> 1, inDim, offsets.weights, blocks, outRowBytes, dst + r * outRowBytes);
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
    kind: 'simd', points, candidates, candidateD2, near: nearIdx, nearD2,
    exactDistances(n: number, p: number): void {
      k.dist2Many(offsets.points, offsets.candidates, n, offsets.points + p * rowBytes, dim / 4, rowBytes, offsets.candidateD2);
    },
    screenedDistances(n: number, p: number): void {
      screened(
        offsets.points, offsets.sketches, offsets.pointSketchThr, offsets.candidates, n,
        offsets.points + p * rowBytes, offsets.sketches + p * sketchBytes, offsets.candidateD2, dim / 4, rowBytes,
      );
    },
    setPointBound(x: number, d2: number): void {
      if (stages > 0) pointSketchThr[x] = sketchThreshold(d2);
    },
    addCentre(c: number, p: number): void {
      centres.set(points.subarray(p * dim, (p + 1) * dim), c * dim);
      centreSketches.set(sketches.subarray(p * width, (p + 1) * width), c * width);
    },
    setCentreRadius(c: number, r2: number): void {
      thresholds[c] = centreThreshold(r2);
      // Proving dist(centre, p) > 2 r from the sketch: the bound is (2r)^2 = 4 r^2.
      centreSketchThr[c] = r2 < 0 ? -1 : sketchThreshold(4 * r2);
    },
    nearCentres(n: number, p: number, exclude: number): number {
      const saved = exclude >= 0 && exclude < n ? [thresholds[exclude], centreSketchThr[exclude]] : null;
      if (saved) thresholds[exclude] = centreSketchThr[exclude] = -1;
      const found = near(
        offsets.centres, offsets.centreSketches, offsets.centreSketchThr, offsets.thresholds, n,
        offsets.points + p * rowBytes, offsets.sketches + p * sketchBytes, dim / 8, offsets.near, offsets.nearD2,
      );
      if (saved) [thresholds[exclude], centreSketchThr[exclude]] = saved;
      return found;
    },
    projectInto(features: Float32Array, inDim: number, wT: Float32Array): void {
      if (inDim !== projectFromDim) throw new Error(`projectInto: kernels were sized for input dim ${projectFromDim}, got ${inDim}`);
      projectRows(count, inDim, dim, wT, offsets.points, features);
    },
    buildSketches(): void {
      if (stages === 0) return;
      const b = sketchBasis(points, count, dim, width);
      projectRows(count, dim, width, b.basis, offsets.sketches, offsets.points);
      sigma = b.sigmaMax * SKETCH_SLACK;
      errorNorm = sketchErrorNorm(points, count, dim, b.sigmaMax);
    },
  };
}
