// Reconstruction -> anomaly map and image score. The per-pixel error is the squared difference averaged over the RGB
// channels at the autoencoder's size; it is upsampled bilinearly to the model frame and smoothed with the same
// Gaussian as PatchCore's maps (sigma given at the 224-pixel scale), so both methods' maps share one grid and one
// smoothing. The image score is the map's maximum.
import type { Frame } from '../image/index.js';
import { gaussianBlur, resizeBilinear } from '../scoring/anomaly-map.js';

/** size x size squared error, mean over channels, of two HWC RGB images. */
export function reconstructionError(input: Float32Array, reconstruction: Float32Array, size: number): Float32Array {
  const n = size * size;
  if (input.length !== n * 3 || reconstruction.length !== n * 3) {
    throw new Error(`reconstructionError: expected ${size}x${size}x3 values, got ${input.length} and ${reconstruction.length}`);
  }
  const out = new Float32Array(n);
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    const r = input[j] - reconstruction[j];
    const g = input[j + 1] - reconstruction[j + 1];
    const b = input[j + 2] - reconstruction[j + 2];
    out[i] = (r * r + g * g + b * b) / 3;
  }
  return out;
}

/** The error map in the model frame (frame.height x frame.width), smoothed. */
export function errorToAnomalyMap(error: Float32Array, size: number, frame: Frame, sigma: number): Float32Array {
  const up = resizeBilinear(error, size, size, frame.height, frame.width);
  return gaussianBlur(up, frame.height, frame.width, (sigma * Math.min(frame.width, frame.height)) / 224);
}

export function mapMax(map: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < map.length; i++) if (map[i] > m) m = map[i];
  return m;
}
