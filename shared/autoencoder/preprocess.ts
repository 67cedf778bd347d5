// Decoded image -> autoencoder input: framed exactly like the PatchCore model input (resize the shorter side, centre
// crop, PIL-style bilinear), then resized to size x size and scaled to RGB 0..1. The Frame is the model frame, so the
// autoencoder's maps are brought back to the same frame.height x frame.width grid as PatchCore's.
import { planFrame, resizeBilinear, type DecodedImage, type Frame, type FrameSpec } from '../image/index.js';

export interface AutoencoderInput {
  /** HWC RGB in 0..1, size x size x 3. */
  input: Float32Array;
  frame: Frame;
}

export function toAutoencoderInput(img: DecodedImage, spec: FrameSpec, size: number): AutoencoderInput {
  if (!Number.isInteger(size) || size < 1) throw new Error(`autoencoder input size must be a positive integer, got ${size}`);
  if (img.data.length !== img.width * img.height * 3) {
    throw new Error(`image data has ${img.data.length} values, expected ${img.width}x${img.height}x3`);
  }
  const frame = planFrame(img.width, img.height, spec);
  const resized =
    frame.resizedWidth === img.width && frame.resizedHeight === img.height
      ? img.data
      : resizeBilinear(img.data, img.width, img.height, 3, frame.resizedWidth, frame.resizedHeight, { roundTo8Bit: img.eightBit ?? false });
  const crop = new Float32Array(frame.width * frame.height * 3);
  for (let y = 0; y < frame.height; y++) {
    const s = ((frame.cropTop + y) * frame.resizedWidth + frame.cropLeft) * 3;
    crop.set(resized.subarray(s, s + frame.width * 3), y * frame.width * 3);
  }
  // A frame that is not square (no crop) is squeezed to the square input; maps are stretched back the same way.
  const small = frame.width === size && frame.height === size ? crop : resizeBilinear(crop, frame.width, frame.height, 3, size, size);
  const input = new Float32Array(size * size * 3);
  for (let i = 0; i < input.length; i++) input[i] = Math.min(1, Math.max(0, small[i] / 255));
  return { input, frame };
}
