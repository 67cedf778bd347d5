// Test helpers: tiny encoders that write images in an exact, chosen layout (colour type, bit
// depth, header variant), which sharp cannot always be told to produce. Used by the tests only.
import { crc32, deflateSync } from 'node:zlib';

function pngChunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), 8 + data.length);
  return out;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

function ihdr(width: number, height: number, bitDepth: number, colorType: number): Buffer {
  const h = Buffer.alloc(13);
  h.writeUInt32BE(width, 0);
  h.writeUInt32BE(height, 4);
  h[8] = bitDepth;
  h[9] = colorType;
  return pngChunk('IHDR', h);
}

export interface PngSpec {
  width: number;
  height: number;
  /** 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA. */
  colorType: 0 | 2 | 3 | 4 | 6;
  bitDepth: 1 | 2 | 4 | 8 | 16;
  /** Sample values (or palette indices), row-major, interleaved. */
  samples: ArrayLike<number>;
  /** RGB triplets, for colour type 3. */
  palette?: ArrayLike<number>;
}

export function encodePng(spec: PngSpec): Buffer {
  const { width, height, colorType, bitDepth, samples } = spec;
  const perRow = width * PNG_CHANNELS[colorType];
  if (samples.length !== perRow * height) throw new Error(`encodePng: ${samples.length} samples for ${width}x${height}`);
  const rowBytes = Math.ceil((perRow * bitDepth) / 8);
  const raw = Buffer.alloc((rowBytes + 1) * height); // filter byte 0 (None) on each row
  for (let y = 0; y < height; y++) {
    const row = y * (rowBytes + 1) + 1;
    for (let i = 0; i < perRow; i++) {
      const v = samples[y * perRow + i];
      if (bitDepth === 16) raw.writeUInt16BE(v, row + i * 2);
      else if (bitDepth === 8) raw[row + i] = v;
      else {
        const bit = i * bitDepth;
        raw[row + (bit >> 3)] |= v << (8 - bitDepth - (bit & 7));
      }
    }
  }
  const chunks = [PNG_SIGNATURE, ihdr(width, height, bitDepth, colorType)];
  if (spec.palette) chunks.push(pngChunk('PLTE', Uint8Array.from(spec.palette)));
  chunks.push(pngChunk('IDAT', deflateSync(raw)), pngChunk('IEND', new Uint8Array(0)));
  return Buffer.concat(chunks);
}

/** A PNG whose header declares width x height but which holds one row of pixel data (a bomb's shape). */
export function pngDeclaringSize(width: number, height: number): Buffer {
  const firstRow = deflateSync(Buffer.alloc(1 + width * 3));
  return Buffer.concat([PNG_SIGNATURE, ihdr(width, height, 8, 2), pngChunk('IDAT', firstRow), pngChunk('IEND', new Uint8Array(0))]);
}

export interface BmpSpec {
  width: number;
  height: number;
  bitsPerPixel: 1 | 4 | 8 | 16 | 24 | 32;
  /** Palette indices (<= 8 bpp), R,G,B triplets (24 bpp), or whole pixel values (16/32 bpp). */
  pixels: ArrayLike<number>;
  /** R,G,B triplets. */
  palette?: ArrayLike<number>;
  topDown?: boolean;
  /** 0 BI_RGB (default), 1 BI_RLE8, 3 BI_BITFIELDS. */
  compression?: 0 | 1 | 3;
  /** R, G, B masks for BI_BITFIELDS. */
  masks?: [number, number, number];
  /** 40 (BITMAPINFOHEADER, default), 108 (V4) or 124 (V5). */
  headerSize?: 40 | 108 | 124;
}

export function encodeBmp(spec: BmpSpec): Buffer {
  const { width, height, bitsPerPixel: bpp, pixels } = spec;
  const headerSize = spec.headerSize ?? 40;
  const compression = spec.compression ?? 0;
  const masksAfterHeader = compression === 3 && headerSize === 40 ? 12 : 0;
  const palette = spec.palette ?? [];
  const paletteEntries = palette.length / 3;
  const stride = Math.floor((bpp * width + 31) / 32) * 4;
  const pixelOffset = 14 + headerSize + masksAfterHeader + paletteEntries * 4;
  const out = Buffer.alloc(pixelOffset + stride * height);
  out.write('BM', 0, 'latin1');
  out.writeUInt32LE(out.length, 2);
  out.writeUInt32LE(pixelOffset, 10);
  out.writeUInt32LE(headerSize, 14);
  out.writeInt32LE(width, 18);
  out.writeInt32LE(spec.topDown ? -height : height, 22);
  out.writeUInt16LE(1, 26);
  out.writeUInt16LE(bpp, 28);
  out.writeUInt32LE(compression, 30);
  out.writeUInt32LE(stride * height, 34);
  out.writeUInt32LE(paletteEntries, 46);
  if (spec.masks) spec.masks.forEach((m, i) => out.writeUInt32LE(m >>> 0, 54 + i * 4));
  for (let i = 0; i < paletteEntries; i++) {
    const at = 14 + headerSize + masksAfterHeader + i * 4;
    out[at] = palette[i * 3 + 2];
    out[at + 1] = palette[i * 3 + 1];
    out[at + 2] = palette[i * 3];
  }
  for (let y = 0; y < height; y++) {
    const row = pixelOffset + (spec.topDown ? y : height - 1 - y) * stride;
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (bpp === 24) {
        out[row + x * 3] = pixels[i * 3 + 2];
        out[row + x * 3 + 1] = pixels[i * 3 + 1];
        out[row + x * 3 + 2] = pixels[i * 3];
      } else if (bpp === 32) out.writeUInt32LE(pixels[i] >>> 0, row + x * 4);
      else if (bpp === 16) out.writeUInt16LE(pixels[i], row + x * 2);
      else {
        const bit = x * bpp;
        out[row + (bit >> 3)] |= pixels[i] << (8 - bpp - (bit & 7));
      }
    }
  }
  return out;
}

/** An uncompressed little-endian TIFF, grey (1 sample) or RGB (3), 8 or 16 bits per sample. */
export function encodeTiff(width: number, height: number, samplesPerPixel: 1 | 3, bits: 8 | 16, samples: ArrayLike<number>): Buffer {
  const bytes = bits / 8;
  const dataBytes = width * height * samplesPerPixel * bytes;
  const entries: [tag: number, type: number, count: number, value: number][] = [];
  const SHORT = 3;
  const LONG = 4;
  const ifdSize = 2 + 10 * 12 + 4;
  const bitsAt = 8 + ifdSize; // BitsPerSample array (only stored out of line when 3 values)
  const dataAt = bitsAt + 8;
  entries.push(
    [256, LONG, 1, width],
    [257, LONG, 1, height],
    [258, SHORT, samplesPerPixel, samplesPerPixel === 3 ? bitsAt : bits],
    [259, SHORT, 1, 1], // no compression
    [262, SHORT, 1, samplesPerPixel === 3 ? 2 : 1], // RGB or BlackIsZero
    [273, LONG, 1, dataAt],
    [277, SHORT, 1, samplesPerPixel],
    [278, LONG, 1, height],
    [279, LONG, 1, dataBytes],
    [284, SHORT, 1, 1], // chunky
  );
  const out = Buffer.alloc(dataAt + dataBytes);
  out.write('II', 0, 'latin1');
  out.writeUInt16LE(42, 2);
  out.writeUInt32LE(8, 4);
  out.writeUInt16LE(entries.length, 8);
  entries.forEach(([tag, type, count, value], i) => {
    const at = 10 + i * 12;
    out.writeUInt16LE(tag, at);
    out.writeUInt16LE(type, at + 2);
    out.writeUInt32LE(count, at + 4);
    if (type === SHORT && count === 1) out.writeUInt16LE(value, at + 8);
    else out.writeUInt32LE(value, at + 8);
  });
  for (let i = 0; i < 3; i++) out.writeUInt16LE(bits, bitsAt + i * 2);
  for (let i = 0; i < samples.length; i++) {
    if (bytes === 2) out.writeUInt16LE(samples[i], dataAt + i * 2);
    else out[dataAt + i] = samples[i];
  }
  return out;
}
