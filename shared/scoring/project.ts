// Maps an anomaly map from the model frame (the resized-and-cropped input) back onto the original
// image grid, so it can be compared with full-size ground-truth masks or drawn over the image.

import type { Frame } from '../image/preprocess.js';

/** How an image became the model input (resized, then cropped): the preprocessing's Frame. */
export type ImageFrame = Frame;

/**
 * The model-frame `map` (frame.height x frame.width) on the source grid (sourceHeight x
 * sourceWidth). Pixel centres map with half-pixel alignment (resized = (source + 0.5) * scale - 0.5,
 * as in the resize); source pixels whose centre falls inside the crop sample the map bilinearly,
 * the others get `fill`.
 */
export function projectToImage(map: Float32Array, frame: ImageFrame, fill = 0): Float32Array {
  const { sourceWidth, sourceHeight, resizedWidth, resizedHeight, cropLeft, cropTop, width, height } = frame;
  for (const [name, v] of Object.entries({ sourceWidth, sourceHeight, resizedWidth, resizedHeight, width, height })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`projectToImage: frame.${name} must be a positive integer, got ${v}`);
  }
  if (!Number.isFinite(cropLeft) || !Number.isFinite(cropTop)) {
    throw new Error(`projectToImage: frame crop offset must be finite, got (${cropLeft}, ${cropTop})`);
  }
  if (map.length !== width * height) {
    throw new Error(`projectToImage: map has ${map.length} values, expected frame width x height = ${width}x${height} = ${width * height}`);
  }
  const cols = axisSamples(sourceWidth, resizedWidth, cropLeft, width);
  const rows = axisSamples(sourceHeight, resizedHeight, cropTop, height);
  const out = new Float32Array(sourceWidth * sourceHeight).fill(fill);
  for (let y = 0; y < sourceHeight; y++) {
    if (!rows.inside[y]) continue;
    const r0 = rows.i0[y] * width;
    const r1 = rows.i1[y] * width;
    const wy = rows.frac[y];
    for (let x = 0; x < sourceWidth; x++) {
      if (!cols.inside[x]) continue;
      const wx = cols.frac[x];
      const a = cols.i0[x];
      const b = cols.i1[x];
      const top = map[r0 + a] * (1 - wx) + map[r0 + b] * wx;
      const bottom = map[r1 + a] * (1 - wx) + map[r1 + b] * wx;
      out[y * sourceWidth + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return out;
}

/** Per source index along one axis: whether it lands in the crop, and its bilinear taps in the map. */
function axisSamples(source: number, resized: number, cropStart: number, size: number) {
  const inside = new Uint8Array(source);
  const i0 = new Int32Array(source);
  const i1 = new Int32Array(source);
  const frac = new Float64Array(source);
  const scale = resized / source;
  for (let s = 0; s < source; s++) {
    const u = (s + 0.5) * scale - 0.5 - cropStart; // pixel centre in map coordinates
    if (u < -0.5 || u > size - 0.5) continue;
    inside[s] = 1;
    const c = Math.min(Math.max(u, 0), size - 1);
    const lo = Math.min(Math.floor(c), size - 1);
    i0[s] = lo;
    i1[s] = lo < size - 1 ? lo + 1 : lo;
    frac[s] = c - lo;
  }
  return { inside, i0, i1, frac };
}
