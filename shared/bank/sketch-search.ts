// Exact nearest-neighbour search that reads few bank rows. Every bank row has a sketch (its
// leading principal coordinates, coreset/sketch.ts) whose distances bound the true distances from
// below. Per query: (1) the 16 leading sketch coordinates of all rows are scanned (float32 SIMD,
// four rows per vector); (2) the row with the smallest bound gives a first exact distance tau;
// (3) only rows whose bound does not exceed tau get the rest of their sketch checked, and only
// those still in get an exact float64 distance (tau tightens as closer rows turn up). The answer
// is exact (ties to the lower row index); margins keep every pruning step valid under float32
// rounding. On bottle (16k x 1024 bank) a few dozen rows per query need exact distances.

import { sketchBasis } from '../coreset/sketch.js';
import { F32, F64, I32, V128, assembleModule, instantiate, op, simdSupported, wasm, type Code, type WasmModule } from '../coreset/wasm-module.js';
import type { NeighbourResult } from './exact-search.js';

/** Float32 rounding of a sketch distance (at most 128 terms) stays below 1e-5 relative. */
const SUM_FACTOR = 1 - 1e-5;
const SLACK = 1 + 1e-6;
/** Queries sketched per batch. */
const QUERY_BATCH = 64;
/** Leading sketch coordinates scanned for every row. */
const HEAD = 16;

// ---- kernels -----------------------------------------------------------------------------------

const zero32 = [op.f32Const(0), op.f32x4Splat].flat();
const zero64 = [op.f64Const(0), op.f64x2Splat].flat();
const bump = (l: number, step: number): Code => [op.get(l), op.i32Const(step), op.i32Add, op.set(l)].flat();
const countDown = (l: number): Code => [op.get(l), op.i32Const(1), op.i32Sub, op.tee(l), op.brIf(0)].flat();
const addressOf = (base: number, index: number, shift: number): Code =>
  [op.get(base), op.get(index), op.i32Const(shift), op.i32Shl, op.i32Add].flat();

/**
 * scanHead(head, groups, sq, outL) -> min: head holds rows in groups of four, coordinate-major
 * (group g, coordinate i: rows 4g..4g+3 at head + 256g + 16i); outL[b] = float32 squared distance
 * of row b's first 16 sketch coordinates to sq's. Returns the smallest.
 */
function scanHeadKernel(): Code[] {
  const [HEADP, GROUPS, SQ, OUT] = [0, 1, 2, 3];
  const G = 4, A = 5, O = 6;
  const Q = Array.from({ length: HEAD }, (_, i) => 7 + i); // v128 splats of the query coordinates
  const ACC = 23, E = 24, MIN = 25;
  return [
    ...Q.map((l, i) => [op.get(SQ), op.f32Load(4 * i), op.f32x4Splat, op.set(l)].flat()),
    op.f32Const(Infinity), op.f32x4Splat, op.set(MIN),
    op.get(HEADP), op.set(A), op.get(OUT), op.set(O), op.get(GROUPS), op.set(G),
    op.block(
      op.get(G), op.i32Eqz, op.brIf(0),
      op.loop(
        zero32, op.set(ACC),
        ...Q.map((l, i) => [
          op.get(A), op.v128Load(16 * i), op.get(l), op.f32x4Sub, op.tee(E), op.get(E), op.f32x4Mul, op.get(ACC), op.f32x4Add, op.set(ACC),
        ].flat()),
        op.get(O), op.get(ACC), op.v128Store(0),
        op.get(MIN), op.get(ACC), op.f32x4Min, op.set(MIN),
        bump(A, 256), bump(O, 16), countDown(G),
      ),
    ),
    op.get(MIN), op.f32x4ExtractLane(0), op.get(MIN), op.f32x4ExtractLane(1), op.f32Min,
    op.get(MIN), op.f32x4ExtractLane(2), op.f32Min, op.get(MIN), op.f32x4ExtractLane(3), op.f32Min,
  ];
}

/** findFirst(L, count, value) -> the first b with L[b] == value, or -1. */
function findFirstKernel(): Code[] {
  const [L, COUNT, VALUE] = [0, 1, 2];
  const B = 3;
  return [
    op.block(
      op.loop(
        op.get(B), op.get(COUNT), op.i32GeS, op.brIf(1),
        addressOf(L, B, 2), op.f32Load(0), op.get(VALUE), op.f32Eq, op.if(op.get(B), op.ret),
        bump(B, 1), op.br(0),
      ),
    ),
    op.i32Const(-1),
  ];
}

/** exact(row, q, dim) -> float64 squared distance of two rows of dim floats (dim a multiple of 8). */
function exactKernel(): Code[] {
  const [ROW, Q, DIM] = [0, 1, 2];
  const G = 3, ACC = [4, 5, 6, 7], T = 8;
  const pair = (acc: number, off: number): Code => [
    op.get(ROW), op.v128Load64Zero(off), op.f64x2PromoteLowF32x4,
    op.get(Q), op.v128Load64Zero(off), op.f64x2PromoteLowF32x4, op.f64x2Sub, op.tee(T),
    op.get(T), op.f64x2Mul, op.get(acc), op.f64x2Add, op.set(acc),
  ].flat();
  const lanes = (a: number): Code => [op.get(a), op.f64x2ExtractLane(0), op.get(a), op.f64x2ExtractLane(1), op.f64Add].flat();
  return [
    ...ACC.map((a) => [zero64, op.set(a)].flat()),
    op.get(DIM), op.i32Const(8), op.i32Sub, op.set(G),
    op.loop(
      pair(ACC[0], 0), pair(ACC[1], 8), pair(ACC[2], 16), pair(ACC[3], 24),
      bump(ROW, 32), bump(Q, 32),
      op.get(G), op.i32Const(8), op.i32Sub, op.tee(G), op.i32Const(0), op.i32GeS, op.brIf(0),
    ),
    lanes(ACC[0]), lanes(ACC[1]), op.f64Add, lanes(ACC[2]), lanes(ACC[3]), op.f64Add, op.f64Add,
  ];
}

const EXACT_FN = 2; // function index of `exact` in the module below

/**
 * sketch32(x, rows, dim, basis, width, out): out[r][o] = float32 dot product of row r of x with row
 * o of basis (width x dim), four lanes of dim / 4 terms each. Its rounding error is at most
 * (dim / 4 + 2) 2^-24 sum_j |x_j b_oj| <= (dim / 4 + 2) 2^-24 sigma ||x|| per coordinate.
 */
function sketch32Kernel(): Code[] {
  const [X, ROWS, DIM, BASIS, WIDTH, OUT] = [0, 1, 2, 3, 4, 5];
  const R = 6, O = 7, J = 8, OA = 9, XA = [10, 11], BR = [12, 13, 14, 15];
  const ACC = [16, 17, 18, 19, 20, 21, 22, 23], XV = [24, 25], BV = 26; // row k, output i: ACC[4k + i]
  const rowBytes = [op.get(DIM), op.i32Const(2), op.i32Shl].flat();
  const hsum = (v: number): Code => [
    op.get(v), op.f32x4ExtractLane(0), op.get(v), op.f32x4ExtractLane(1), op.f32Add,
    op.get(v), op.f32x4ExtractLane(2), op.get(v), op.f32x4ExtractLane(3), op.f32Add, op.f32Add,
  ].flat();
  // `rows` rows (1 or 2) from row R against basis rows O..O+3; each basis vector loaded once serves every row.
  const block = (rows: number): Code => [
    op.i32Const(0), op.set(O),
    op.block(op.loop(
      op.get(O), op.get(WIDTH), op.i32GeS, op.brIf(1),
      ...BR.map((b, i) => [op.get(BASIS), op.get(O), op.i32Const(i), op.i32Add, rowBytes, op.i32Mul, op.i32Add, op.set(b)].flat()),
      ...XA.slice(0, rows).map((xa, k) => [op.get(X), op.get(R), op.i32Const(k), op.i32Add, rowBytes, op.i32Mul, op.i32Add, op.set(xa)].flat()),
      ...ACC.slice(0, 4 * rows).map((a) => [zero32, op.set(a)].flat()),
      op.get(DIM), op.i32Const(2), op.i32ShrU, op.set(J),
      op.loop(
        ...XA.slice(0, rows).map((xa, k) => [op.get(xa), op.v128Load(0), op.set(XV[k])].flat()),
        ...BR.flatMap((b, i) => [
          [op.get(b), op.v128Load(0), op.set(BV)].flat(),
          ...Array.from({ length: rows }, (_, k) => [
            op.get(XV[k]), op.get(BV), op.f32x4Mul, op.get(ACC[4 * k + i]), op.f32x4Add, op.set(ACC[4 * k + i]),
          ].flat()),
        ]),
        ...XA.slice(0, rows).map((xa) => bump(xa, 16)), ...BR.map((b) => bump(b, 16)), countDown(J),
      ),
      ...Array.from({ length: rows }, (_, k) => [
        op.get(OUT), op.get(R), op.i32Const(k), op.i32Add, op.get(WIDTH), op.i32Mul, op.get(O), op.i32Add, op.i32Const(2), op.i32Shl, op.i32Add, op.set(OA),
        ...[0, 1, 2, 3].map((i) => [op.get(OA), hsum(ACC[4 * k + i]), op.f32Store(4 * i)].flat()),
      ].flat()),
      bump(O, 4), op.br(0),
    )),
  ].flat();
  return [
    op.block(op.loop(
      op.get(R), op.i32Const(2), op.i32Add, op.get(ROWS), op.i32GtS, op.brIf(1),
      block(2), bump(R, 2), op.br(0),
    )),
    op.get(R), op.get(ROWS), op.i32LtS, op.if(block(1)),
  ];
}

/** Per unit of sigma * ||x||, the rounding bound of a sketch32 sketch in norm (50% margin on the kernel's bound). */
function sketchRounding(dim: number, width: number): number {
  return Math.sqrt(width) * (dim / 4 + 2) * 2 ** -24 * 1.5 + 2 ** -23;
}

/**
 * refine(L, count, full, width, sq, bank, q, dim, tau, sigma, err, outIdx, outD2, update) -> found:
 * for rows b with L[b] within the threshold of tau, adds the rest of the sketch (full rows of
 * `width` floats; the first 16 are already in L) and, still within, computes the exact distance;
 * rows at most tau are written out. With `update`, tau follows the smallest distance found.
 */
function refineKernel(): Code[] {
  const [L, COUNT, FULL, WIDTH, SQ, BANK, Q, DIM, TAU, SIGMA, ERR, OIDX, OD2, UPDATE, LMAX] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
  const B = 15, R = 16, A = 17, P = 18, G = 19, FOUND = 20, THR = 21, LV = 22, ACC0 = 23, ACC1 = 24, E = 25, D2 = 26, LTHR = 27;
  // THR = float32(((sigma * sqrt(tau) + err)^2 / SUM_FACTOR) * SLACK): the sketch distance above
  // which the true distance provably exceeds tau.
  // LTHR = min(THR, LMAX): the test on the head bound L.
  const setThreshold = [
    op.get(SIGMA), op.get(TAU), op.f64Sqrt, op.f64Mul, op.get(ERR), op.f64Add, op.tee(D2), op.get(D2), op.f64Mul,
    op.f64Const(SLACK / SUM_FACTOR), op.f64Mul, op.f32DemoteF64, op.tee(THR), op.get(LMAX), op.f32Min, op.set(LTHR),
  ].flat();

  const step = (acc: number, off: number): Code => [
    op.get(A), op.v128Load(off), op.get(P), op.v128Load(off), op.f32x4Sub, op.tee(E), op.get(E), op.f32x4Mul, op.get(acc), op.f32x4Add, op.set(acc),
  ].flat();
  const hsum = (v: number): Code => [
    op.get(v), op.f32x4ExtractLane(0), op.get(v), op.f32x4ExtractLane(1), op.f32Add,
    op.get(v), op.f32x4ExtractLane(2), op.get(v), op.f32x4ExtractLane(3), op.f32Add, op.f32Add,
  ].flat();
  const rowBytes = [op.get(WIDTH), op.i32Const(2), op.i32Shl].flat();
  // Adds G more sketch coordinates (a multiple of 8) to ACC0/ACC1, then leaves the candidate
  // ($skip) when L + the partial sum exceeds THR.
  const tailStage = [
    op.block(op.get(G), op.i32Eqz, op.brIf(0), op.loop(step(ACC0, 0), step(ACC1, 16), bump(A, 32), bump(P, 32),
      op.get(G), op.i32Const(8), op.i32Sub, op.tee(G), op.brIf(0))),
    op.get(LV), op.get(ACC0), op.get(ACC1), op.f32x4Add, op.set(ACC0), zero32, op.set(ACC1), hsum(ACC0), op.f32Add,
    op.get(THR), op.f32Gt, op.brIf(0),
  ].flat();
  return [
    setThreshold,
    op.block( // $exit
      op.loop( // $group
        op.get(B), op.get(COUNT), op.i32GeS, op.brIf(1),
        // No lane of this group of four within the threshold: skip it whole.
        addressOf(L, B, 2), op.v128Load(0), op.get(LTHR), op.f32x4Splat, op.f32x4Le, op.v128AnyTrue, op.i32Eqz,
        op.if(bump(B, 4), op.br(1)),
        op.i32Const(4), op.set(R),
        op.loop( // $lane
          op.block( // $skip
            op.get(B), op.get(COUNT), op.i32GeS, op.brIf(3),
            addressOf(L, B, 2), op.f32Load(0), op.tee(LV), op.get(LTHR), op.f32Gt, op.brIf(0),
            zero32, op.set(ACC0), zero32, op.set(ACC1),
            op.get(FULL), op.get(B), rowBytes, op.i32Mul, op.i32Add, op.i32Const(4 * HEAD), op.i32Add, op.set(A),
            op.get(SQ), op.i32Const(4 * HEAD), op.i32Add, op.set(P),
            // Two stages: the next (up to) 32 coordinates, then the rest.
            op.get(WIDTH), op.i32Const(HEAD), op.i32Sub, op.tee(G), op.i32Const(32), op.get(G), op.i32Const(32), op.i32LtS,
            op.select, op.set(G), tailStage,
            op.get(WIDTH), op.i32Const(HEAD + 32), op.i32Sub, op.tee(G), op.i32Const(0), op.get(G), op.i32Const(0), op.i32GtS,
            op.select, op.set(G), tailStage,
            op.get(BANK), op.get(B), op.get(DIM), op.i32Const(2), op.i32Shl, op.i32Mul, op.i32Add, op.get(Q), op.get(DIM), op.call(EXACT_FN), op.tee(D2),
            op.get(TAU), op.f64Gt, op.brIf(0),
            addressOf(OIDX, FOUND, 2), op.get(B), op.i32Store(0),
            addressOf(OD2, FOUND, 3), op.get(D2), op.f64Store(0),
            bump(FOUND, 1),
            op.get(UPDATE), op.get(D2), op.get(TAU), op.f64Lt, op.i32And,
            op.if(op.get(D2), op.set(TAU), setThreshold),
          ),
          bump(B, 1),
          op.get(R), op.i32Const(1), op.i32Sub, op.tee(R), op.brIf(0),
        ),
        op.br(0),
      ),
    ),
    op.get(FOUND),
  ];
}

let compiled: WasmModule | null | undefined;

function searchModule(): WasmModule | null {
  if (compiled !== undefined) return compiled;
  if (!simdSupported()) return (compiled = null);
  const i32s = (n: number): number[] => Array<number>(n).fill(I32);
  const bytes = assembleModule(
    [
      { name: 'scanHead', params: i32s(4), results: [F32], locals: [...i32s(3), ...Array<number>(HEAD + 3).fill(V128)], body: scanHeadKernel() },
      { name: 'findFirst', params: [I32, I32, F32], results: [I32], locals: [I32], body: findFirstKernel() },
      { name: 'exact', params: i32s(3), results: [F64], locals: [I32, V128, V128, V128, V128, V128], body: exactKernel() },
      {
        name: 'refine', params: [...i32s(8), F64, F64, F64, I32, I32, I32, F32], results: [I32],
        locals: [...i32s(6), F32, F32, V128, V128, V128, F64, F32], body: refineKernel(),
      },
      { name: 'sketch32', params: i32s(6), results: [], locals: [...i32s(10), ...Array<number>(11).fill(V128)], body: sketch32Kernel() },
    ],
    { initialPages: 1 },
  );
  return (compiled = new wasm.Module(bytes));
}

interface SearchExports {
  scanHead(head: number, groups: number, sq: number, outL: number): number;
  findFirst(l: number, count: number, value: number): number;
  exact(row: number, q: number, dim: number): number;
  refine(
    l: number, count: number, full: number, width: number, sq: number, bank: number, q: number, dim: number,
    tau: number, sigma: number, err: number, outIdx: number, outD2: number, update: number, lMax: number,
  ): number;
  sketch32(x: number, rows: number, dim: number, basis: number, width: number, out: number): void;
}

/** Sketch width for dim-wide rows: wider sketches prune more, and cost more per row. */
function sketchWidth(dim: number): number {
  return dim >= 512 ? 128 : dim >= 256 ? 64 : 32;
}

export class SketchSearch {
  private constructor(
    private readonly k: SearchExports,
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
    const module = searchModule();
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
    const memory = new wasm.Memory({ initial: Math.ceil(end / 65536) });
    const buf = memory.buffer;
    const k = instantiate<SearchExports>(module, memory);
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
