// Dense products for the sketch basis (covariance, subspace iteration): out = A B^T with every
// output summed in float64 in input order and rounded to float32, on the SIMD projection kernel
// when the runtime has it (and cols is a multiple of 8), else in plain loops with the same result.

import { kernelModule, type Kernels } from '../wasm/kernels.js';
import { createMemory, instantiate } from '../wasm/runtime.js';

/** out (rows x cols) = a (rows x inner) times bT (cols x inner, i.e. B stored output-major) transposed. */
export function multiplyTransposed(a: Float32Array, rows: number, inner: number, bT: Float32Array, cols: number): Float32Array {
  if (a.length !== rows * inner || bT.length !== cols * inner) {
    throw new Error(`multiplyTransposed: got ${a.length} and ${bT.length} values for ${rows}x${inner} and ${cols}x${inner}`);
  }
  const module = cols % 8 === 0 && rows >= 2 ? kernelModule() : null;
  if (!module) return multiplyScalar(a, rows, inner, bT, cols);
  const aBytes = rows * inner * 4;
  const wBytes = inner * cols * 8;
  const outBytes = rows * cols * 4;
  const aAt = 64;
  const wAt = aAt + Math.ceil(aBytes / 64) * 64;
  const outAt = wAt + Math.ceil(wBytes / 64) * 64;
  const total = outAt + outBytes;
  if (total > 2 ** 31) return multiplyScalar(a, rows, inner, bT, cols);
  const memory = createMemory(total);
  if (!memory) return multiplyScalar(a, rows, inner, bT, cols);
  const k = instantiate<Kernels>(module, memory);
  new Float32Array(memory.buffer, aAt, rows * inner).set(a);
  // Weights blocked by 8 outputs: block b holds B[j][8b .. 8b + 7] for every j, as float64.
  const w = new Float64Array(memory.buffer, wAt, inner * cols);
  for (let b = 0; b < cols / 8; b++) {
    for (let j = 0; j < inner; j++) {
      for (let o = 0; o < 8; o++) w[(b * inner + j) * 8 + o] = bT[(b * 8 + o) * inner + j];
    }
  }
  k.project(aAt, rows >> 1, inner, wAt, cols / 8, cols * 4, outAt);
  const out = new Float32Array(memory.buffer, outAt, rows * cols).slice();
  if (rows % 2 === 1) {
    const r = rows - 1;
    for (let c = 0; c < cols; c++) out[r * cols + c] = dotRow(a, r * inner, bT, c * inner, inner);
  }
  return out;
}

function dotRow(a: Float32Array, aOff: number, b: Float32Array, bOff: number, n: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s += a[aOff + j] * b[bOff + j];
  return s;
}

function multiplyScalar(a: Float32Array, rows: number, inner: number, bT: Float32Array, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = dotRow(a, r * inner, bT, c * inner, inner);
  }
  return out;
}
