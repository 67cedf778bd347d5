// Image and mask decoding. The format is sniffed from the content, never from the file name. sharp
// (libvips) decodes PNG / JPEG / TIFF (and GIF / WebP); BMP goes through our own reader because the
// prebuilt sharp has no BMP loader. Pixels come out as stored: embedded ICC profiles and EXIF
// orientation are ignored, as PIL's Image.open(...).convert('RGB') does.
import sharp, { type Metadata } from 'sharp';
import { bmpIsEightBit, decodeBmpPixels, looksLikeBmp, readBmpHeader } from './bmp.js';

/** RGB interleaved, row-major, values on the 0..255 scale. */
export interface DecodedImage {
  width: number;
  height: number;
  data: Float32Array;
  /**
   * True when the source had 8 bits per channel, so every value is an integer 0..255 (decodeImage
   * always sets it). Preprocessing then reproduces PIL's 8-bit resampling exactly.
   */
  eightBit?: boolean;
}

/** A binary mask: 1 where the source mask is non-zero, 0 elsewhere. */
export interface DecodedMask {
  width: number;
  height: number;
  data: Uint8Array;
}

export interface DecodeOptions {
  /** Refuse images with more pixels than this (decompression bombs). Default 40 megapixels. */
  maxPixels?: number;
}

// 40 MP (e.g. 7300x5500) covers industrial line cameras; decoded as RGB it is 120 MB, so a few decodes in
// parallel fit a worker's memory. The check reads the header only, before any pixel is decoded.
export const DEFAULT_MAX_PIXELS = 40_000_000;

export type ImageFormat = 'png' | 'jpeg' | 'tiff' | 'bmp' | 'gif' | 'webp';

/** The format from the leading magic bytes, or null when it is none we decode. */
export function sniffFormat(buf: Uint8Array): ImageFormat | null {
  const starts = (...bytes: number[]) => buf.length >= bytes.length && bytes.every((b, i) => buf[i] === b);
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'png';
  if (starts(0xff, 0xd8, 0xff)) return 'jpeg';
  // Classic TIFF (42) and BigTIFF (43), either byte order.
  if (starts(0x49, 0x49, 0x2a, 0x00) || starts(0x4d, 0x4d, 0x00, 0x2a)) return 'tiff';
  if (starts(0x49, 0x49, 0x2b, 0x00) || starts(0x4d, 0x4d, 0x00, 0x2b)) return 'tiff';
  if (looksLikeBmp(buf)) return 'bmp';
  if (starts(0x47, 0x49, 0x46, 0x38)) return 'gif';
  if (starts(0x52, 0x49, 0x46, 0x46) && buf.length >= 12 && String.fromCharCode(...buf.subarray(8, 12)) === 'WEBP') {
    return 'webp';
  }
  return null;
}

/** A decoding failure; the message names the input and what is wrong with it. */
export class ImageDecodeError extends Error {
  constructor(
    readonly input: string,
    readonly reason: string,
    kind: 'image' | 'mask' = 'image',
  ) {
    super(`Cannot decode ${kind} "${input}": ${reason}`);
    this.name = 'ImageDecodeError';
  }
}

/** Raw RGB samples before scaling: 8-bit, 16-bit, or already-scaled floats (BMP bitfields). */
interface RawRgb {
  width: number;
  height: number;
  samples: Uint8Array | Uint16Array | Float32Array;
  /** The sample value that means full intensity (255 for Uint8/Float32, 65535 for Uint16). */
  fullScale: number;
  eightBit: boolean;
}

/** sharp/libvips messages can span lines or end in a dangling ':'; keep one clean line. */
function decoderMessage(e: unknown): string {
  const text = (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim().replace(/[:\s]+$/, '');
  return text || 'the decoder gave no reason';
}

function pixelLimit(opts: DecodeOptions | undefined, name: string): number {
  const limit = opts?.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!(limit > 0)) throw new Error(`maxPixels for "${name}" must be a positive number, got ${limit}`);
  return limit;
}

async function decodeRgb(input: Buffer, name: string, kind: 'image' | 'mask', maxPixels: number): Promise<RawRgb> {
  const fail = (reason: string) => new ImageDecodeError(name, reason, kind);
  const checkSize = (w: number, h: number) => {
    if (w * h > maxPixels) throw fail(`${w}x${h} exceeds the ${maxPixels}-pixel limit`);
  };
  if (input.length === 0) throw fail('zero-byte file');
  const format = sniffFormat(input);
  if (format === null) throw fail('not an image (unknown format)');

  if (format === 'bmp') {
    let header;
    try {
      header = readBmpHeader(input);
    } catch (e) {
      throw fail((e as Error).message);
    }
    checkSize(header.width, header.height);
    try {
      const samples = decodeBmpPixels(input, header);
      return { width: header.width, height: header.height, samples, fullScale: 255, eightBit: bmpIsEightBit(header) };
    } catch (e) {
      throw fail((e as Error).message);
    }
  }

  // failOn 'error' rejects truncated and broken data but tolerates the harmless warnings many
  // real-world JPEGs carry (which PIL also reads).
  const sharpOptions = {
    failOn: 'error' as const,
    ignoreIcc: true,
    limitInputPixels: Number.isFinite(maxPixels) ? Math.max(1, Math.floor(maxPixels)) : false,
  };
  let meta: Metadata;
  try {
    meta = await sharp(input, { ...sharpOptions, limitInputPixels: false }).metadata();
  } catch (e) {
    throw fail(`truncated or corrupt: ${decoderMessage(e)}`);
  }
  if (meta.width === undefined || meta.height === undefined) throw fail('truncated or corrupt: no image size in the header');
  checkSize(meta.width, meta.height);
  // 8-bit sources stay 8-bit; anything deeper goes through 16-bit RGB so no precision is lost.
  const eightBit = meta.depth === 'uchar';
  try {
    let pipeline = sharp(input, sharpOptions).removeAlpha();
    pipeline = eightBit ? pipeline.toColourspace('srgb').raw() : pipeline.toColourspace('rgb16').raw({ depth: 'ushort' });
    const { data, info } = await pipeline.toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoder returned ${info.channels} channels, expected 3`);
    const samples = eightBit
      ? new Uint8Array(data.buffer, data.byteOffset, data.length)
      : new Uint16Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
    return { width: info.width, height: info.height, samples, fullScale: eightBit ? 255 : 65535, eightBit };
  } catch (e) {
    throw fail(`truncated or corrupt: ${decoderMessage(e)}`);
  }
}

/**
 * Decodes a PNG / JPEG / TIFF / BMP (also GIF, WebP; first frame) of any colour type to RGB floats
 * on the 0..255 scale: grey is replicated, alpha dropped, palettes expanded, 16-bit scaled by
 * 255/65535 without truncation. `name` is only used in error messages.
 */
export async function decodeImage(input: Buffer, name: string, opts?: DecodeOptions): Promise<DecodedImage> {
  const raw = await decodeRgb(input, name, 'image', pixelLimit(opts, name));
  const { samples, fullScale } = raw;
  let data: Float32Array;
  if (samples instanceof Float32Array) {
    data = samples;
  } else {
    data = new Float32Array(samples.length);
    if (fullScale === 255) data.set(samples);
    else for (let i = 0; i < samples.length; i++) data[i] = (samples[i] * 255) / fullScale;
  }
  return { width: raw.width, height: raw.height, data, eightBit: raw.eightBit };
}

/**
 * Decodes a ground-truth mask of any format, channel count and bit depth: 1 where any colour
 * channel is non-zero, 0 elsewhere (alpha is ignored, as for images).
 */
export async function decodeMask(input: Buffer, name: string, opts?: DecodeOptions): Promise<DecodedMask> {
  const raw = await decodeRgb(input, name, 'mask', pixelLimit(opts, name));
  const { samples } = raw;
  const n = raw.width * raw.height;
  const data = new Uint8Array(n);
  for (let i = 0, s = 0; i < n; i++, s += 3) {
    data[i] = samples[s] !== 0 || samples[s + 1] !== 0 || samples[s + 2] !== 0 ? 1 : 0;
  }
  return { width: raw.width, height: raw.height, data };
}
