// Anomaly heatmap overlay thumbnails for the report gallery: the anomaly map over the whole image coloured with
// an inferno colormap over a shared [min, max] range (so colours compare across images), alpha-blended
// over the image, with the ground-truth outline drawn in cyan; the parts the model did not see (map value
// -Infinity) are shown darkened, without colour. Everything is done at thumbnail resolution so the outline
// stays one crisp pixel wide.
import sharp from 'sharp';

/** Inferno at 9 evenly spaced positions (0, 1/8, ..., 1); the LUT interpolates linearly between them. */
const INFERNO_STOPS: readonly (readonly [number, number, number])[] = [
  [0, 0, 4],
  [27, 12, 65],
  [74, 12, 107],
  [120, 28, 109],
  [165, 44, 96],
  [207, 68, 70],
  [237, 105, 37],
  [251, 155, 6],
  [252, 255, 164],
];

/** 256 RGB entries of the inferno colormap, dark (low) to pale yellow (high). */
export const INFERNO_LUT: Uint8Array = (() => {
  const lut = new Uint8Array(256 * 3);
  const segments = INFERNO_STOPS.length - 1;
  for (let i = 0; i < 256; i++) {
    const pos = (i / 255) * segments;
    const k = Math.min(Math.floor(pos), segments - 1);
    const f = pos - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(INFERNO_STOPS[k][c] * (1 - f) + INFERNO_STOPS[k + 1][c] * f);
  }
  return lut;
})();

/** CSS linear-gradient stops of the colormap, for a colour bar next to the gallery. */
export function colormapCssGradient(): string {
  const stops = INFERNO_STOPS.map(([r, g, b], i) => `rgb(${r},${g},${b}) ${Math.round((i * 100) / (INFERNO_STOPS.length - 1))}%`);
  return `linear-gradient(to right, ${stops.join(', ')})`;
}

export const DEFAULT_OUTLINE_COLOUR: readonly [number, number, number] = [0, 255, 255];
export const DEFAULT_THUMBNAIL_SIZE = 224;

export interface OverlayInput {
  /** Names the image in error messages. */
  id: string;
  /** Anomaly map over the whole image (height x width; -Infinity where the model did not look), or null to show the image alone. */
  map: Float32Array | null;
  /** 0/1 ground truth over the whole image, or null/absent when unknown. */
  mask?: Uint8Array | null;
  height: number;
  width: number;
  /** The original image file; without it the map is blended over mid grey. */
  image?: Buffer | null;
}

export interface OverlayOptions {
  /** Map values mapped to the colormap's ends; values outside are clamped. */
  range: readonly [number, number];
  /** Longest side of the thumbnail in pixels (default 224). */
  size?: number;
  /** Weight of the heatmap colour over the image, 0..1 (default 0.5). */
  alpha?: number;
  outlineColour?: readonly [number, number, number];
}

export interface Overlay {
  png: Buffer;
  width: number;
  height: number;
}

/** Thumbnail size with the longest side `size`, keeping the aspect ratio. */
export function thumbnailSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width >= height) return { width: size, height: Math.max(1, Math.round((size * height) / width)) };
  return { width: Math.max(1, Math.round((size * width) / height)), height: size };
}

/** Boundary pixels of a 0/1 mask: set pixels with an unset 4-neighbour (outside the image counts as unset). */
export function maskOutline(mask: Uint8Array, width: number, height: number): Uint8Array {
  if (mask.length !== width * height) {
    throw new Error(`maskOutline: mask has ${mask.length} values, expected ${width}x${height} = ${width * height}`);
  }
  const out = new Uint8Array(mask.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (mask[i] === 0) continue;
      const edge =
        x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        mask[i - 1] === 0 || mask[i + 1] === 0 || mask[i - width] === 0 || mask[i + width] === 0;
      if (edge) out[i] = 1;
    }
  }
  return out;
}

function checkOverlayInput(input: OverlayInput, opts: OverlayOptions): void {
  const { id, width, height } = input;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new Error(`heatmap for "${id}": width and height must be positive integers, got ${width}x${height}`);
  }
  const n = width * height;
  if (input.map && input.map.length !== n) {
    throw new Error(`heatmap for "${id}": map has ${input.map.length} values, expected ${width}x${height} = ${n}`);
  }
  if (input.mask && input.mask.length !== n) {
    throw new Error(`heatmap for "${id}": mask has ${input.mask.length} values, expected ${width}x${height} = ${n}`);
  }
  const [lo, hi] = opts.range;
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(hi > lo)) {
    throw new Error(`heatmap for "${id}": range must be two finite numbers with max > min, got [${lo}, ${hi}]`);
  }
  const size = opts.size ?? DEFAULT_THUMBNAIL_SIZE;
  if (!Number.isInteger(size) || size < 8 || size > 4096) {
    throw new Error(`heatmap for "${id}": size must be an integer in [8, 4096], got ${size}`);
  }
  const alpha = opts.alpha ?? 0.5;
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`heatmap for "${id}": alpha must be in [0, 1], got ${alpha}`);
}

/** The image resized to the thumbnail, as 8-bit RGB. */
async function backgroundRgb(input: OverlayInput, tw: number, th: number): Promise<Uint8Array> {
  const { image, id } = input;
  if (!image) return new Uint8Array(tw * th * 3).fill(128);
  try {
    const pipeline = sharp(image);
    const { data, info } = await pipeline
      .resize(tw, th, { fit: 'fill' })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const rgb = new Uint8Array(tw * th * 3);
    const ch = info.channels;
    for (let i = 0, s = 0, o = 0; i < tw * th; i++, s += ch, o += 3) {
      if (ch >= 3) {
        rgb[o] = data[s];
        rgb[o + 1] = data[s + 1];
        rgb[o + 2] = data[s + 2];
      } else {
        rgb[o] = rgb[o + 1] = rgb[o + 2] = data[s];
      }
    }
    return rgb;
  } catch (err) {
    throw new Error(`heatmap for "${id}": cannot read the image: ${(err as Error).message}`);
  }
}

/** Thumbnail pixels whose nearest map pixel the model did not see (-Infinity). */
const OUT_OF_VIEW = -1;

/**
 * Map bilinearly resampled to tw x th (pixel centres aligned), normalised to 0..255 LUT indices; OUT_OF_VIEW where
 * the nearest map pixel is not finite.
 */
function mapToLutIndices(map: Float32Array, w: number, h: number, tw: number, th: number, lo: number, hi: number): Int16Array {
  const out = new Int16Array(tw * th);
  const scale = 255 / (hi - lo);
  for (let y = 0; y < th; y++) {
    const fy = Math.min(h - 1, Math.max(0, ((y + 0.5) * h) / th - 0.5));
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, h - 1);
    const dy = fy - y0;
    for (let x = 0; x < tw; x++) {
      const fx = Math.min(w - 1, Math.max(0, ((x + 0.5) * w) / tw - 0.5));
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, w - 1);
      const dx = fx - x0;
      if (!Number.isFinite(map[Math.round(fy) * w + Math.round(fx)])) {
        out[y * tw + x] = OUT_OF_VIEW;
        continue;
      }
      const top = map[y0 * w + x0] * (1 - dx) + map[y0 * w + x1] * dx;
      const bottom = map[y1 * w + x0] * (1 - dx) + map[y1 * w + x1] * dx;
      const v = (top * (1 - dy) + bottom * dy - lo) * scale;
      // A neighbour out of view makes the blend -Infinity (or NaN): the lowest colour.
      out[y * tw + x] = v >= 255 ? 255 : v > 0 ? Math.round(v) : 0;
    }
  }
  return out;
}

/** Mask nearest-sampled to tw x th. */
function maskToThumbnail(mask: Uint8Array, w: number, h: number, tw: number, th: number): Uint8Array {
  const out = new Uint8Array(tw * th);
  for (let y = 0; y < th; y++) {
    const sy = Math.min(h - 1, Math.floor(((y + 0.5) * h) / th));
    for (let x = 0; x < tw; x++) {
      const sx = Math.min(w - 1, Math.floor(((x + 0.5) * w) / tw));
      out[y * tw + x] = mask[sy * w + sx] !== 0 ? 1 : 0;
    }
  }
  return out;
}

/** Renders one overlay thumbnail as PNG. Holds only this image's pixels. */
export async function renderOverlay(input: OverlayInput, opts: OverlayOptions): Promise<Overlay> {
  checkOverlayInput(input, opts);
  const { width: w, height: h } = input;
  const { width: tw, height: th } = thumbnailSize(w, h, opts.size ?? DEFAULT_THUMBNAIL_SIZE);
  const rgb = await backgroundRgb(input, tw, th);
  if (input.map) {
    const alpha = opts.alpha ?? 0.5;
    const idx = mapToLutIndices(input.map, w, h, tw, th, opts.range[0], opts.range[1]);
    for (let i = 0, o = 0; i < idx.length; i++, o += 3) {
      if (idx[i] === OUT_OF_VIEW) {
        rgb[o] = Math.round(rgb[o] * 0.35);
        rgb[o + 1] = Math.round(rgb[o + 1] * 0.35);
        rgb[o + 2] = Math.round(rgb[o + 2] * 0.35);
        continue;
      }
      const l = idx[i] * 3;
      rgb[o] = Math.round(rgb[o] * (1 - alpha) + INFERNO_LUT[l] * alpha);
      rgb[o + 1] = Math.round(rgb[o + 1] * (1 - alpha) + INFERNO_LUT[l + 1] * alpha);
      rgb[o + 2] = Math.round(rgb[o + 2] * (1 - alpha) + INFERNO_LUT[l + 2] * alpha);
    }
  }
  if (input.mask) {
    const [r, g, b] = opts.outlineColour ?? DEFAULT_OUTLINE_COLOUR;
    const outline = maskOutline(maskToThumbnail(input.mask, w, h, tw, th), tw, th);
    for (let i = 0, o = 0; i < outline.length; i++, o += 3) {
      if (outline[i] === 0) continue;
      rgb[o] = r;
      rgb[o + 1] = g;
      rgb[o + 2] = b;
    }
  }
  const png = await sharp(rgb, { raw: { width: tw, height: th, channels: 3 } }).png().toBuffer();
  return { png, width: tw, height: th };
}
