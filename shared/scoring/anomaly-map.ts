// Pixel anomaly maps as the official PatchCore code makes them: the patch-score grid is upsampled
// bilinearly (PyTorch F.interpolate, align_corners=False) and smoothed with
// scipy.ndimage.gaussian_filter (truncate 4, mode 'reflect'). All maps are row-major (H x W).

/** Bilinear resize with half-pixel centres: source coordinate = (dst + 0.5) * in / out - 0.5, clamped. */
export function resizeBilinear(src: Float32Array, inH: number, inW: number, outH: number, outW: number): Float32Array {
  checkSize('resizeBilinear input', inH, inW);
  checkSize('resizeBilinear output', outH, outW);
  if (src.length !== inH * inW) {
    throw new Error(`resizeBilinear: input has ${src.length} values, expected ${inH}x${inW} = ${inH * inW}`);
  }
  const y0 = new Int32Array(outH);
  const y1 = new Int32Array(outH);
  const fy = new Float64Array(outH);
  axisWeights(inH, outH, y0, y1, fy);
  const x0 = new Int32Array(outW);
  const x1 = new Int32Array(outW);
  const fx = new Float64Array(outW);
  axisWeights(inW, outW, x0, x1, fx);
  const out = new Float32Array(outH * outW);
  for (let y = 0; y < outH; y++) {
    const r0 = y0[y] * inW;
    const r1 = y1[y] * inW;
    const wy = fy[y];
    for (let x = 0; x < outW; x++) {
      const wx = fx[x];
      const top = src[r0 + x0[x]] * (1 - wx) + src[r0 + x1[x]] * wx;
      const bottom = src[r1 + x0[x]] * (1 - wx) + src[r1 + x1[x]] * wx;
      out[y * outW + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return out;
}

/** PyTorch's align_corners=False source indices and weights along one axis. */
function axisWeights(inSize: number, outSize: number, i0: Int32Array, i1: Int32Array, frac: Float64Array): void {
  const scale = inSize / outSize;
  for (let d = 0; d < outSize; d++) {
    const s = Math.max(0, (d + 0.5) * scale - 0.5);
    const lo = Math.min(Math.floor(s), inSize - 1);
    i0[d] = lo;
    i1[d] = lo < inSize - 1 ? lo + 1 : lo;
    frac[d] = s - lo;
  }
}

/** scipy's 1-D Gaussian weights: radius int(4 * sigma + 0.5), exp(-x^2 / (2 sigma^2)), normalised to sum 1. */
export function gaussianKernel(sigma: number): Float64Array {
  if (!Number.isFinite(sigma) || sigma <= 0) throw new Error(`gaussianKernel: sigma must be positive, got ${sigma}`);
  const radius = Math.trunc(4 * sigma + 0.5);
  const w = new Float64Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    const v = Math.exp((-0.5 / (sigma * sigma)) * (i * i));
    w[i + radius] = v;
    sum += v;
  }
  for (let i = 0; i < w.length; i++) w[i] /= sum;
  return w;
}

/** scipy 'reflect' boundary (d c b a | a b c d | d c b a), periodic with period 2n for any offset. */
export function reflectIndex(i: number, n: number): number {
  const period = 2 * n;
  const m = ((i % period) + period) % period;
  return m < n ? m : period - 1 - m;
}

/**
 * Separable Gaussian blur equal to scipy.ndimage.gaussian_filter(map, sigma) on a float32 H x W
 * map: rows axis first, then columns, each pass rounded to float32 like scipy's output array.
 * sigma = 0 returns a copy.
 */
export function gaussianBlur(map: Float32Array, h: number, w: number, sigma: number): Float32Array {
  checkSize('gaussianBlur', h, w);
  if (map.length !== h * w) throw new Error(`gaussianBlur: map has ${map.length} values, expected ${h}x${w} = ${h * w}`);
  if (!Number.isFinite(sigma) || sigma < 0) throw new Error(`gaussianBlur: sigma must be >= 0, got ${sigma}`);
  if (sigma === 0) return map.slice();
  const kernel = gaussianKernel(sigma);
  const radius = (kernel.length - 1) / 2;
  const tmp = new Float32Array(h * w);
  const out = new Float32Array(h * w);
  // Along axis 0: each column, padded by reflection.
  const colPad = new Float64Array(h + 2 * radius);
  for (let x = 0; x < w; x++) {
    for (let i = 0; i < colPad.length; i++) colPad[i] = map[reflectIndex(i - radius, h) * w + x];
    for (let y = 0; y < h; y++) {
      let s = 0;
      for (let k = 0; k < kernel.length; k++) s += kernel[k] * colPad[y + k];
      tmp[y * w + x] = s;
    }
  }
  // Along axis 1: each row.
  const rowPad = new Float64Array(w + 2 * radius);
  for (let y = 0; y < h; y++) {
    const r = y * w;
    for (let i = 0; i < rowPad.length; i++) rowPad[i] = tmp[r + reflectIndex(i - radius, w)];
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = 0; k < kernel.length; k++) s += kernel[k] * rowPad[x + k];
      out[r + x] = s;
    }
  }
  return out;
}

/** Patch scores (gridH x gridW) -> outH x outW pixel anomaly map: bilinear upsampling, then Gaussian blur. */
export function anomalyMap(
  patchScores: Float32Array,
  gridH: number,
  gridW: number,
  outH: number,
  outW: number,
  sigma = 4,
): Float32Array {
  if (patchScores.length !== gridH * gridW) {
    throw new Error(`anomalyMap: patchScores has ${patchScores.length} values, expected gridH x gridW = ${gridH}x${gridW} = ${gridH * gridW}`);
  }
  return gaussianBlur(resizeBilinear(patchScores, gridH, gridW, outH, outW), outH, outW, sigma);
}

function checkSize(what: string, h: number, w: number): void {
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) {
    throw new Error(`${what}: size must be positive integers, got ${h}x${w}`);
  }
}
