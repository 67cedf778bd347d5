// int8 calibration input: preprocessed images (e.g. the first N training images, as loadModelInput gives
// them) stacked into the NHWC batches the engine takes.
import { nhwc, type NhwcTensor } from '../tensor.js';

/** How many training images calibrate an int8 backbone by default (the first N). */
export const DEFAULT_CALIBRATION_IMAGES = 16;

/** Stacks consecutive images of the same size into batches of up to `batchSize`. */
export function calibrationBatches(
  images: readonly { input: Float32Array; frame: { width: number; height: number } }[],
  batchSize = 8,
): NhwcTensor[] {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  const out: NhwcTensor[] = [];
  let i = 0;
  while (i < images.length) {
    const { width, height } = images[i].frame;
    let j = i;
    while (j < images.length && j - i < batchSize && images[j].frame.width === width && images[j].frame.height === height) j++;
    const size = width * height * 3;
    const data = new Float32Array((j - i) * size);
    for (let k = i; k < j; k++) {
      if (images[k].input.length !== size) {
        throw new Error(`calibration image ${k} has ${images[k].input.length} values, expected ${height}x${width}x3`);
      }
      data.set(images[k].input, (k - i) * size);
    }
    out.push(nhwc(data, j - i, height, width, 3));
    i = j;
  }
  return out;
}
