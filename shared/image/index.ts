// Image decoding and preprocessing for the backbone.
export {
  decodeImage,
  decodeMask,
  sniffFormat,
  ImageDecodeError,
  DEFAULT_MAX_PIXELS,
  type DecodedImage,
  type DecodedMask,
  type DecodeOptions,
  type ImageFormat,
} from './decode.js';
export { resizeBilinear, type ResizeOptions } from './resize.js';
export {
  planFrame,
  toModelInput,
  maskToFrame,
  loadModelInput,
  planTiles,
  cropHwc,
  DEFAULT_FRAME_SPEC,
  WHOLE_FRAME_SPEC,
  PAPER_FRAME_SPEC,
  FRAME_PRESETS,
  DEFAULT_TILE_OVERLAP,
  type FramePreset,
  type PlanOptions,
  type TileWindow,
  CAFFE_BGR_MEANS,
  type FrameSpec,
  type Frame,
  type ModelInput,
} from './preprocess.js';
