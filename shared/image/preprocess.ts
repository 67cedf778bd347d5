// From a decoded image to the backbone's input, the way the reference pipeline does it:
// torchvision Resize(shorter side) with PIL bilinear, CenterCrop, then Keras "caffe" mode
// (RGB -> BGR, minus the ImageNet BGR means, no std division). Frame records the geometry so that
// anomaly maps and ground-truth masks can be mapped between the model grid and the original image.
import { readFile } from 'node:fs/promises';
import { decodeImage, type DecodeOptions, type DecodedImage, type DecodedMask } from './decode.js';
import { resizeBilinear } from './resize.js';

/**
 * How an image is framed for the model. `resize`: the shorter side is resized to this many pixels,
 * keeping the aspect ratio (torchvision Resize(int)); null keeps the original size. `crop`: a
 * centred crop x crop square (torchvision CenterCrop); null keeps the whole resized image.
 * Without a crop the model sees the whole (possibly non-square) image; the backbone's feature grid
 * follows the input size (1/8 and 1/16 of it for the layers PatchCore uses).
 * `tile`: the frame is cut into overlapping tile x tile pieces (at least `tileOverlap` pixels shared
 * by neighbours), each run through the backbone on its own; absent or null = the frame in one piece.
 */
export interface FrameSpec {
  resize: number | null;
  crop: number | null;
  tile?: number | null;
  tileOverlap?: number;
}

/** The whole image, aspect ratio kept: the shorter side to 256, no crop. The default. */
export const WHOLE_FRAME_SPEC: Readonly<FrameSpec> = Object.freeze({ resize: 256, crop: null });
/** The MVTec AD paper protocol: the shorter side to 256, then the centred 224x224. */
export const PAPER_FRAME_SPEC: Readonly<FrameSpec> = Object.freeze({ resize: 256, crop: 224 });
export const FRAME_PRESETS = { whole: WHOLE_FRAME_SPEC, paper: PAPER_FRAME_SPEC } as const;
export type FramePreset = keyof typeof FRAME_PRESETS;
export const DEFAULT_FRAME_SPEC: Readonly<FrameSpec> = WHOLE_FRAME_SPEC;

/** Default overlap of neighbouring tiles, in pixels of the frame. */
export const DEFAULT_TILE_OVERLAP = 32;

/** Where the model's view sits in the original image: source -> resized -> crop window. */
export interface Frame {
  sourceWidth: number;
  sourceHeight: number;
  resizedWidth: number;
  resizedHeight: number;
  /** Crop window offset inside the resized image. */
  cropLeft: number;
  cropTop: number;
  /** What the model sees. */
  width: number;
  height: number;
}

/** Keras "caffe" preprocessing means, in B, G, R order. */
export const CAFFE_BGR_MEANS: readonly [number, number, number] = [103.939, 116.779, 123.68];

function checkPositiveInt(label: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${label} must be a positive integer, got ${v}`);
}

/** Python's round(): halves go to the even neighbour (torchvision CenterCrop uses it). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision's output size for Resize(int): the shorter side becomes `size`, the longer truncates. */
function resizedSize(w: number, h: number, size: number): [number, number] {
  if (w <= h) return [size, Math.trunc((size * h) / w)];
  return [Math.trunc((size * w) / h), size];
}

/** The nearest positive multiple of `align` (halves up). */
function nearestMultiple(v: number, align: number): number {
  return Math.max(align, Math.round(v / align) * align);
}

export interface PlanOptions {
  /**
   * Without a crop, each side of the resized image is brought to the nearest multiple of `align` (a resize of at
   * most align/2 pixels per side, so the aspect ratio moves by a few percent at most): the backbone takes inputs
   * whose sides are multiples of its stride. Default 1 (no change).
   */
  align?: number;
}

export function planFrame(srcW: number, srcH: number, spec: FrameSpec = DEFAULT_FRAME_SPEC, opts: PlanOptions = {}): Frame {
  checkPositiveInt('source width', srcW);
  checkPositiveInt('source height', srcH);
  if (spec.resize !== null) checkPositiveInt('frame spec "resize"', spec.resize);
  if (spec.crop !== null) checkPositiveInt('frame spec "crop"', spec.crop);
  checkTileSpec(spec);
  const align = opts.align ?? 1;
  checkPositiveInt('frame alignment', align);
  let [resizedWidth, resizedHeight] = spec.resize === null ? [srcW, srcH] : resizedSize(srcW, srcH, spec.resize);
  if (spec.crop === null && align > 1) [resizedWidth, resizedHeight] = [nearestMultiple(resizedWidth, align), nearestMultiple(resizedHeight, align)];
  if (spec.crop === null) {
    return { sourceWidth: srcW, sourceHeight: srcH, resizedWidth, resizedHeight, cropLeft: 0, cropTop: 0, width: resizedWidth, height: resizedHeight };
  }
  const crop = spec.crop;
  if (crop > resizedWidth || crop > resizedHeight) {
    const what = spec.resize === null ? 'image' : 'resized image';
    throw new Error(
      `frame spec "crop" ${crop} is larger than the ${what} ${resizedWidth}x${resizedHeight} (source ${srcW}x${srcH}, resize ${spec.resize})`,
    );
  }
  return {
    sourceWidth: srcW,
    sourceHeight: srcH,
    resizedWidth,
    resizedHeight,
    cropLeft: roundHalfEven((resizedWidth - crop) / 2),
    cropTop: roundHalfEven((resizedHeight - crop) / 2),
    width: crop,
    height: crop,
  };
}

function checkTileSpec(spec: FrameSpec): void {
  if (spec.tile === undefined || spec.tile === null) return;
  checkPositiveInt('frame spec "tile"', spec.tile);
  if (spec.crop !== null) throw new Error(`frame spec "tile" ${spec.tile} needs the whole image: it cannot be combined with "crop" ${spec.crop}`);
  const overlap = spec.tileOverlap ?? DEFAULT_TILE_OVERLAP;
  if (!Number.isInteger(overlap) || overlap < 0 || overlap >= spec.tile) {
    throw new Error(`frame spec "tileOverlap" must be an integer in [0, tile ${spec.tile}), got ${overlap}`);
  }
}

/** One tile: its window in the model frame, in pixels. */
export interface TileWindow {
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * Tile starts along one axis of `length` pixels: evenly spread, on multiples of `step`, the last flush with the end,
 * neighbours sharing at least `overlap` pixels (or overlapping by all but one step when the tile is that short).
 */
function tileStarts(length: number, tile: number, overlap: number, step: number): number[] {
  if (tile >= length) return [0];
  const last = length - tile;
  const maxGap = Math.max(step, tile - overlap);
  // Rounding to the step can widen a gap, so take one tile more until none is too wide.
  for (let n = Math.max(2, Math.ceil((length - overlap) / (tile - overlap))); ; n++) {
    const starts = Array.from({ length: n }, (_, i) => (i === n - 1 ? last : Math.round((i * last) / (n - 1) / step) * step));
    if (starts.every((s, i) => i === 0 || s - starts[i - 1] <= maxGap)) return [...new Set(starts)];
  }
}

/**
 * Where the tiles of a tiled spec sit in a frame, row by row. Tiles are tile x tile pixels (a side shorter than the
 * tile gives tiles as long as that side), start on multiples of `step` (the feature grid's stride, so every tile's
 * patches fall on the frame's patch grid) and overlap their neighbours by about `tileOverlap` pixels or more.
 */
export function planTiles(frame: Pick<Frame, 'width' | 'height'>, spec: FrameSpec, step = 1): TileWindow[] {
  checkTileSpec(spec);
  if (spec.tile === undefined || spec.tile === null) return [{ left: 0, top: 0, width: frame.width, height: frame.height }];
  const overlap = spec.tileOverlap ?? DEFAULT_TILE_OVERLAP;
  const width = Math.min(spec.tile, frame.width);
  const height = Math.min(spec.tile, frame.height);
  const tiles: TileWindow[] = [];
  for (const top of tileStarts(frame.height, height, overlap, step)) {
    for (const left of tileStarts(frame.width, width, overlap, step)) tiles.push({ left, top, width, height });
  }
  return tiles;
}

function checkImage(label: string, w: number, h: number, length: number, channels: number): void {
  checkPositiveInt(`${label} width`, w);
  checkPositiveInt(`${label} height`, h);
  if (length !== w * h * channels) {
    throw new Error(`${label} data has ${length} values, expected ${w}x${h}x${channels} = ${w * h * channels}`);
  }
}

export interface ModelInput {
  /** HWC, BGR, mean-subtracted; frame.height x frame.width x 3. */
  input: Float32Array;
  frame: Frame;
}

/**
 * Resizes and crops an image per `spec` and applies Keras "caffe" preprocessing. `sourceIs8Bit`
 * (default: the image's `eightBit`) selects PIL's 8-bit rounding resample, matching the reference.
 */
export function toModelInput(
  img: DecodedImage,
  spec: FrameSpec = DEFAULT_FRAME_SPEC,
  opts: { sourceIs8Bit?: boolean } & PlanOptions = {},
): ModelInput {
  checkImage('image', img.width, img.height, img.data.length, 3);
  const frame = planFrame(img.width, img.height, spec, opts);
  const roundTo8Bit = opts.sourceIs8Bit ?? img.eightBit ?? false;
  // Only the crop window is resampled: the same values as resizing everything and cropping after.
  const resizes = frame.resizedWidth !== img.width || frame.resizedHeight !== img.height;
  const window = { left: frame.cropLeft, top: frame.cropTop, width: frame.width, height: frame.height };
  const source = resizes
    ? resizeBilinear(img.data, img.width, img.height, 3, frame.resizedWidth, frame.resizedHeight, { roundTo8Bit, window })
    : img.data;
  const stride = resizes ? frame.width : frame.resizedWidth;
  const left = resizes ? 0 : frame.cropLeft;
  const top = resizes ? 0 : frame.cropTop;
  const input = new Float32Array(frame.width * frame.height * 3);
  // Float32 means so the subtraction rounds like the reference's float32 arithmetic.
  const [mb, mg, mr] = CAFFE_BGR_MEANS.map(Math.fround);
  for (let y = 0; y < frame.height; y++) {
    let s = ((top + y) * stride + left) * 3;
    let o = y * frame.width * 3;
    for (let x = 0; x < frame.width; x++, s += 3) {
      input[o++] = source[s + 2] - mb;
      input[o++] = source[s + 1] - mg;
      input[o++] = source[s] - mr;
    }
  }
  return { input, frame };
}

/**
 * Brings a ground-truth mask of any size onto the model's grid exactly as its image was framed:
 * bilinear resize of the 0/1 values to the resized size, threshold at 0.5 (>= 0.5 is defect),
 * then the same crop. Returns frame.width * frame.height values of 0 or 1.
 */
export function maskToFrame(mask: DecodedMask, frame: Frame): Uint8Array {
  checkImage('mask', mask.width, mask.height, mask.data.length, 1);
  let values: Float32Array | Uint8Array = mask.data;
  if (mask.width !== frame.resizedWidth || mask.height !== frame.resizedHeight) {
    const f = new Float32Array(mask.data.length);
    for (let i = 0; i < f.length; i++) f[i] = mask.data[i] !== 0 ? 1 : 0;
    values = resizeBilinear(f, mask.width, mask.height, 1, frame.resizedWidth, frame.resizedHeight);
  }
  const out = new Uint8Array(frame.width * frame.height);
  for (let y = 0; y < frame.height; y++) {
    const s = (frame.cropTop + y) * frame.resizedWidth + frame.cropLeft;
    const o = y * frame.width;
    for (let x = 0; x < frame.width; x++) out[o + x] = values[s + x] >= 0.5 ? 1 : 0;
  }
  return out;
}

/** Reads and decodes an image file and turns it into the backbone input. */
export async function loadModelInput(
  path: string,
  spec: FrameSpec = DEFAULT_FRAME_SPEC,
  opts: DecodeOptions & PlanOptions = {},
): Promise<ModelInput> {
  const img = await decodeImage(await readFile(path), path, opts);
  return toModelInput(img, spec, { align: opts.align });
}

/** The HWC window `w` of an HWC image `width` pixels wide (a tile of a model input). */
export function cropHwc(data: Float32Array, width: number, channels: number, w: TileWindow): Float32Array {
  const out = new Float32Array(w.width * w.height * channels);
  for (let y = 0; y < w.height; y++) {
    const s = ((w.top + y) * width + w.left) * channels;
    out.set(data.subarray(s, s + w.width * channels), y * w.width * channels);
  }
  return out;
}
