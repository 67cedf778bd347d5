// Ground truth of a test image over the whole image at its frame's resized resolution (the coordinates of pixel
// metrics and stored maps), read through a byte reader so it works on files and objects.
import type { DatasetImage } from '../dataset/mvtec.js';
import { decodeMask, maskToFrame, type Frame } from '../image/index.js';
import type { ByteReader } from '../run/sources.js';
import type { FailedImage } from './types.js';
import { wholeImageFrame } from './whole-image.js';

/**
 * The mask of a defect image, all zeros for a good one, null when unknown (a defect image without a mask). A read
 * failure is thrown (a storage fault: the caller fails, a job is retried); a mask that cannot be used is returned
 * as `failed`, and the image is left out of the pixel metrics.
 */
export async function readGroundTruth(
  img: DatasetImage, frame: Frame, read: ByteReader,
): Promise<{ mask: Uint8Array | null; failed?: FailedImage }> {
  const whole = wholeImageFrame(frame);
  if (!img.maskPath) return { mask: img.label === 0 ? new Uint8Array(whole.width * whole.height) : null };
  const bytes = await read(img.maskPath);
  try {
    return { mask: maskToFrame(await decodeMask(bytes, img.maskPath), whole) };
  } catch (err) {
    return { mask: null, failed: { id: img.maskPath, error: (err as Error).message } };
  }
}
