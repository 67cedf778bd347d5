// Bilinear resampling that behaves like PIL's Image.resize(size, Image.BILINEAR): separable (a
// horizontal pass, then a vertical one), a triangle filter whose support grows with the scale factor
// when downscaling (antialiasing), pixel centres at +0.5, weights renormalised at the borders.
// For 8-bit sources PIL works in fixed point (22 fractional bits) and rounds/clamps to uint8 after
// each pass; `roundTo8Bit` reproduces that so preprocessing matches a PIL-based reference exactly.
// Otherwise the arithmetic is double precision with float32 storage, like PIL's float ('F') mode.

export interface ResizeOptions {
  /** Reproduce PIL's 8-bit path: fixed-point weights, uint8 rounding and clamping after each pass. */
  roundTo8Bit?: boolean;
}

const PRECISION_BITS = 32 - 8 - 2;
const FIXED_ONE = 2 ** PRECISION_BITS;
const FIXED_HALF = 2 ** (PRECISION_BITS - 1);

/** Per-output-pixel filter windows along one axis: window i reads `counts[i]` inputs from `starts[i]`. */
interface AxisWeights {
  taps: number;
  starts: Int32Array;
  counts: Int32Array;
  /** outSize * taps weights, window i at i * taps. */
  weights: Float64Array;
}

function triangle(x: number): number {
  const a = Math.abs(x);
  return a < 1 ? 1 - a : 0;
}

function axisWeights(inSize: number, outSize: number, fixedPoint: boolean): AxisWeights {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // triangle support 1, widened when downscaling
  const taps = Math.ceil(support) * 2 + 1;
  const starts = new Int32Array(outSize);
  const counts = new Int32Array(outSize);
  const weights = new Float64Array(outSize * taps);
  const invFilterScale = 1 / filterScale;
  for (let i = 0; i < outSize; i++) {
    const centre = (i + 0.5) * scale;
    // C casts truncate toward zero; the clamps make that the same as floor here.
    const lo = Math.max(Math.trunc(centre - support + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const count = hi - lo;
    const k = i * taps;
    let sum = 0;
    for (let j = 0; j < count; j++) {
      const w = triangle((j + lo - centre + 0.5) * invFilterScale);
      weights[k + j] = w;
      sum += w;
    }
    for (let j = 0; j < count; j++) {
      if (sum !== 0) weights[k + j] /= sum;
      if (fixedPoint) {
        const w = weights[k + j] * FIXED_ONE;
        weights[k + j] = w < 0 ? Math.trunc(w - 0.5) : Math.trunc(w + 0.5);
      }
    }
    starts[i] = lo;
    counts[i] = count;
  }
  return { taps, starts, counts, weights };
}

function clampToByte(fixedSum: number): number {
  const v = Math.floor(fixedSum / FIXED_ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function resampleRows(src: Float32Array, w: number, h: number, c: number, outW: number, round: boolean): Float32Array {
  const ax = axisWeights(w, outW, round);
  const out = new Float32Array(outW * h * c);
  const { taps, starts, counts, weights } = ax;
  const init = round ? FIXED_HALF : 0;
  for (let y = 0; y < h; y++) {
    const rowIn = y * w * c;
    const rowOut = y * outW * c;
    for (let x = 0; x < outW; x++) {
      const k = x * taps;
      const first = rowIn + starts[x] * c;
      const n = counts[x];
      for (let ch = 0; ch < c; ch++) {
        let sum = init;
        for (let j = 0, at = first + ch; j < n; j++, at += c) sum += src[at] * weights[k + j];
        out[rowOut + x * c + ch] = round ? clampToByte(sum) : sum;
      }
    }
  }
  return out;
}

function resampleColumns(src: Float32Array, w: number, h: number, c: number, outH: number, round: boolean): Float32Array {
  const ax = axisWeights(h, outH, round);
  const rowLen = w * c;
  const out = new Float32Array(rowLen * outH);
  const acc = new Float64Array(rowLen);
  const { taps, starts, counts, weights } = ax;
  for (let y = 0; y < outH; y++) {
    acc.fill(round ? FIXED_HALF : 0);
    const k = y * taps;
    for (let j = 0; j < counts[y]; j++) {
      const wgt = weights[k + j];
      const rowIn = (starts[y] + j) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] += src[rowIn + i] * wgt;
    }
    const rowOut = y * rowLen;
    if (round) for (let i = 0; i < rowLen; i++) out[rowOut + i] = clampToByte(acc[i]);
    else out.set(acc, rowOut);
  }
  return out;
}

function checkSize(label: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`resizeBilinear: ${label} must be a positive integer, got ${v}`);
}

/**
 * Resizes an interleaved image (`channels` values per pixel, row-major) to outW x outH.
 * A dimension that does not change is not resampled (as in PIL), so same-size is a copy.
 */
export function resizeBilinear(
  src: Float32Array,
  w: number,
  h: number,
  channels: number,
  outW: number,
  outH: number,
  opts: ResizeOptions = {},
): Float32Array {
  checkSize('width', w);
  checkSize('height', h);
  checkSize('channels', channels);
  checkSize('output width', outW);
  checkSize('output height', outH);
  if (src.length !== w * h * channels) {
    throw new Error(`resizeBilinear: source has ${src.length} values, expected ${w}x${h}x${channels} = ${w * h * channels}`);
  }
  const round = opts.roundTo8Bit ?? false;
  let out = src;
  if (outW !== w) out = resampleRows(out, w, h, channels, outW, round);
  if (outH !== h) out = resampleColumns(out, outW, h, channels, outH, round);
  return out === src ? src.slice() : out;
}
