// Pixel evaluation in original image coordinates: the whole image at the frame's resized resolution
// (resizedWidth x resizedHeight, the original scaled), whatever part of it the model saw. Where the frame crops, the
// pixels outside the view get the lowest score (-Infinity: never detected) and their defect pixels are counted.
import type { Frame } from '../image/index.js';
import type { PixelHistogram } from '../metrics/index.js';

/** The score of a pixel the model did not see: below every score, so no threshold detects it. */
export const OUTSIDE_VIEW_SCORE = -Infinity;

/** The frame of the whole resized image: what masks and maps are brought to for pixel metrics. */
export function wholeImageFrame(frame: Frame): Frame {
  return { ...frame, cropLeft: 0, cropTop: 0, width: frame.resizedWidth, height: frame.resizedHeight };
}

function checkMap(map: Float32Array, frame: Frame, name: string): void {
  if (map.length !== frame.width * frame.height) {
    throw new Error(`anomaly map of "${name}" has ${map.length} values, expected its frame's ${frame.width}x${frame.height}`);
  }
  if (frame.cropLeft < 0 || frame.cropTop < 0 || frame.cropLeft + frame.width > frame.resizedWidth || frame.cropTop + frame.height > frame.resizedHeight) {
    throw new Error(
      `frame of "${name}": view ${frame.width}x${frame.height} at (${frame.cropLeft}, ${frame.cropTop}) lies outside the resized image ${frame.resizedWidth}x${frame.resizedHeight}`,
    );
  }
}

/** The model-frame map placed in the whole resized image; pixels outside the view get OUTSIDE_VIEW_SCORE. */
export function wholeImageMap(map: Float32Array, frame: Frame, name: string): Float32Array {
  checkMap(map, frame, name);
  const { resizedWidth: W, resizedHeight: H } = frame;
  if (frame.width === W && frame.height === H) return map;
  const out = new Float32Array(W * H).fill(OUTSIDE_VIEW_SCORE);
  for (let y = 0; y < frame.height; y++) {
    out.set(map.subarray(y * frame.width, (y + 1) * frame.width), (frame.cropTop + y) * W + frame.cropLeft);
  }
  return out;
}

/** Defect pixels of a whole-image mask that lie outside the frame's view. */
export function defectPixelsOutsideView(mask: Uint8Array, frame: Frame): number {
  const { resizedWidth: W, resizedHeight: H } = frame;
  let outside = 0;
  for (let y = 0; y < H; y++) {
    const inRows = y >= frame.cropTop && y < frame.cropTop + frame.height;
    for (let x = 0; x < W; x++) {
      if (mask[y * W + x] === 1 && !(inRows && x >= frame.cropLeft && x < frame.cropLeft + frame.width)) outside++;
    }
  }
  return outside;
}

/**
 * Adds one scored image to a pixel summary and returns its whole-image map (for the gallery and storage). `mask` is
 * the whole-image ground truth, or null when unknown: the map then only widens the summary's value range.
 */
export function summariseImage(
  pixels: PixelHistogram, image: { id: string; map: Float32Array; frame: Frame }, mask: Uint8Array | null,
): Float32Array {
  const whole = wholeImageMap(image.map, image.frame, image.id);
  if (mask) {
    pixels.addImage(whole, mask, image.frame.resizedHeight, image.frame.resizedWidth, image.id, defectPixelsOutsideView(mask, image.frame));
  } else {
    pixels.observeRange(whole);
  }
  return whole;
}
