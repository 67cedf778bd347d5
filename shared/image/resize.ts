// Bilinear resampling that behaves like PIL's Image.resize(size, Image.BILINEAR): separable (a
// horizontal pass, then a vertical one), a triangle filter whose support grows with the scale factor
// when downscaling (antialiasing), pixel centres at +0.5, weights renormalised at the borders.
// For 8-bit sources PIL works in fixed point (22 fractional bits) and rounds/clamps to uint8 after
// each pass; `roundTo8Bit` reproduces that so preprocessing matches a PIL-based reference exactly.
// Otherwise the arithmetic is double precision with float32 storage, like PIL's float ('F') mode.

export interface ResizeOptions {
  /** Reproduce PIL's 8-bit path: fixed-point weights, uint8 rounding and clamping after each pass. */
  roundTo8Bit?: boolean;
  /**
   * Compute only this window of the outW x outH result (e.g. the centre crop that follows): the
   * values equal the full resize cropped, at a fraction of the work.
   */
  window?: { left: number; top: number; width: number; height: number };
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

/** Horizontal pass over source rows [y0, y1), output columns [x0, x1) of outW: (y1 - y0) x (x1 - x0) pixels. */
function resampleRows(
  src: Float32Array, w: number, c: number, outW: number, round: boolean, y0: number, y1: number, x0: number, x1: number,
): Float32Array {
  const ax = axisWeights(w, outW, round);
  const rows = y1 - y0;
  const cols = x1 - x0;
  const out = new Float32Array(cols * rows * c);
  const { taps, starts, counts, weights } = ax;
  const init = round ? FIXED_HALF : 0;
  if (c === 3) {
    // RGB: the three channels share each weight, so one pass over the taps serves all of them.
    // Each channel's sum runs over the taps in the same order as the general loop below.
    for (let y = y0; y < y1; y++) {
      const rowIn = y * w * 3;
      let o = (y - y0) * cols * 3;
      for (let x = x0; x < x1; x++) {
        const k = x * taps;
        const n = counts[x];
        let at = rowIn + starts[x] * 3;
        let s0 = init;
        let s1 = init;
        let s2 = init;
        for (let j = 0; j < n; j++, at += 3) {
          const wj = weights[k + j];
          s0 += src[at] * wj;
          s1 += src[at + 1] * wj;
          s2 += src[at + 2] * wj;
        }
        if (round) {
          out[o++] = clampToByte(s0);
          out[o++] = clampToByte(s1);
          out[o++] = clampToByte(s2);
        } else {
          out[o++] = s0;
          out[o++] = s1;
          out[o++] = s2;
        }
      }
    }
    return out;
  }
  for (let y = y0; y < y1; y++) {
    const rowIn = y * w * c;
    const rowOut = (y - y0) * cols * c;
    for (let x = x0; x < x1; x++) {
      const k = x * taps;
      const first = rowIn + starts[x] * c;
      const n = counts[x];
      for (let ch = 0; ch < c; ch++) {
        let sum = init;
        for (let j = 0, at = first + ch; j < n; j++, at += c) sum += src[at] * weights[k + j];
        out[rowOut + (x - x0) * c + ch] = round ? clampToByte(sum) : sum;
      }
    }
  }
  return out;
}

/** Rows [y0, y1) and pixels [x0, x1) of each, unchanged: a dimension that is not resampled. */
function cropRows(src: Float32Array, w: number, c: number, y0: number, y1: number, x0: number, x1: number): Float32Array {
  const cols = x1 - x0;
  const out = new Float32Array((y1 - y0) * cols * c);
  for (let y = y0; y < y1; y++) out.set(src.subarray((y * w + x0) * c, (y * w + x1) * c), (y - y0) * cols * c);
  return out;
}

/** Vertical pass for output rows [y0, y1) of outH; `src` holds source rows from `firstRow` on, w pixels wide. */
function resampleColumns(
  src: Float32Array, w: number, h: number, c: number, outH: number, round: boolean, y0: number, y1: number, firstRow: number,
): Float32Array {
  const ax = axisWeights(h, outH, round);
  const rowLen = w * c;
  const out = new Float32Array(rowLen * (y1 - y0));
  const acc = new Float64Array(rowLen);
  const { taps, starts, counts, weights } = ax;
  for (let y = y0; y < y1; y++) {
    acc.fill(round ? FIXED_HALF : 0);
    const k = y * taps;
    for (let j = 0; j < counts[y]; j++) {
      const wgt = weights[k + j];
      const rowIn = (starts[y] + j - firstRow) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] += src[rowIn + i] * wgt;
    }
    const rowOut = (y - y0) * rowLen;
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
  const win = opts.window ?? { left: 0, top: 0, width: outW, height: outH };
  const { left, top, width, height } = win;
  for (const [name, v] of Object.entries(win)) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`resizeBilinear: window ${name} must be a non-negative integer, got ${v}`);
  }
  if (width < 1 || height < 1 || left + width > outW || top + height > outH) {
    throw new Error(`resizeBilinear: window ${width}x${height} at (${left}, ${top}) is not inside the ${outW}x${outH} output`);
  }
  // Source rows the window needs: those under its vertical filter windows (or its own rows).
  let rowLo = top;
  let rowHi = top + height;
  if (outH !== h) {
    const ay = axisWeights(h, outH, round);
    rowLo = ay.starts[top];
    rowHi = 0;
    for (let y = top; y < top + height; y++) rowHi = Math.max(rowHi, ay.starts[y] + ay.counts[y]);
  }
  const rows = outW !== w
    ? resampleRows(src, w, channels, outW, round, rowLo, rowHi, left, left + width)
    : cropRows(src, w, channels, rowLo, rowHi, left, left + width);
  return outH !== h ? resampleColumns(rows, width, h, channels, outH, round, top, top + height, rowLo) : rows;
}
