// A small BMP reader: the prebuilt sharp (libvips) has no BMP loader, and users do have BMP files.
// Supports the Windows headers (BITMAPCOREHEADER, BITMAPINFOHEADER and the later V2..V5 headers),
// 1/2/4/8-bit palettes, 16/24/32-bit direct colour incl. BI_BITFIELDS / BI_ALPHABITFIELDS, bottom-up
// and top-down rows. RLE and embedded JPEG/PNG are rejected. Alpha is ignored (like PIL's convert('RGB')).
//
// Errors carry only the reason; the caller prefixes the input's name.

const BI_RGB = 0;
const BI_RLE8 = 1;
const BI_RLE4 = 2;
const BI_BITFIELDS = 3;
const BI_JPEG = 4;
const BI_PNG = 5;
const BI_ALPHABITFIELDS = 6;

const FILE_HEADER_SIZE = 14;

/** Everything needed to decode the pixels, read from the headers alone (no pixel work yet). */
export interface BmpHeader {
  width: number;
  height: number;
  topDown: boolean;
  bitsPerPixel: number;
  pixelOffset: number;
  rowStride: number;
  /** RGB triplets (0..255) for bitsPerPixel <= 8, else empty. */
  palette: Uint8Array;
  paletteSize: number;
  /** Channel masks for 16/32-bit direct colour (R, G, B); empty for other depths. */
  masks: Uint32Array;
}

/** True when the buffer starts like a Windows bitmap. */
export function looksLikeBmp(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x42 && buf[1] === 0x4d; // "BM"
}

function corrupt(why: string): Error {
  return new Error(`truncated or corrupt: ${why}`);
}

function unsupported(why: string): Error {
  return new Error(`unsupported BMP: ${why}`);
}

export function readBmpHeader(buf: Uint8Array): BmpHeader {
  if (!looksLikeBmp(buf)) throw corrupt('missing the "BM" signature');
  if (buf.length < FILE_HEADER_SIZE + 4) throw corrupt(`BMP file is only ${buf.length} bytes`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const pixelOffset = view.getUint32(10, true);
  const headerSize = view.getUint32(14, true);
  const headerEnd = FILE_HEADER_SIZE + headerSize;
  if (headerSize !== 12 && headerSize < 40) throw unsupported(`DIB header of ${headerSize} bytes`);
  if (buf.length < headerEnd) throw corrupt(`BMP header needs ${headerEnd} bytes, file has ${buf.length}`);

  let width: number;
  let height: number;
  let bitsPerPixel: number;
  let compression = BI_RGB;
  let colorsUsed = 0;
  const core = headerSize === 12; // OS/2 1.x: 16-bit sizes, 3-byte palette entries
  if (core) {
    width = view.getUint16(18, true);
    height = view.getUint16(20, true);
    bitsPerPixel = view.getUint16(24, true);
  } else {
    width = view.getInt32(18, true);
    height = view.getInt32(22, true);
    bitsPerPixel = view.getUint16(28, true);
    compression = view.getUint32(30, true);
    colorsUsed = view.getUint32(46, true);
  }
  const topDown = height < 0;
  height = Math.abs(height);
  if (width <= 0 || height <= 0) throw corrupt(`BMP declares a ${width}x${height} image`);

  if (compression === BI_RLE8 || compression === BI_RLE4) {
    throw unsupported(`RLE compression (${compression === BI_RLE8 ? 'BI_RLE8' : 'BI_RLE4'}) is not supported; re-save it uncompressed`);
  }
  if (compression === BI_JPEG || compression === BI_PNG) {
    throw unsupported(`embedded ${compression === BI_JPEG ? 'JPEG' : 'PNG'} data is not supported`);
  }
  const bitfields = compression === BI_BITFIELDS || compression === BI_ALPHABITFIELDS;
  if (compression !== BI_RGB && !bitfields) throw unsupported(`compression type ${compression}`);
  if (![1, 2, 4, 8, 16, 24, 32].includes(bitsPerPixel)) throw unsupported(`${bitsPerPixel} bits per pixel`);
  if (bitfields && bitsPerPixel !== 16 && bitsPerPixel !== 32) {
    throw unsupported(`BI_BITFIELDS with ${bitsPerPixel} bits per pixel`);
  }

  // Bitfield masks sit inside V2+ headers, or right after a 40-byte BITMAPINFOHEADER.
  let paletteStart = headerEnd;
  let masks = new Uint32Array(0);
  if (bitsPerPixel === 16 || bitsPerPixel === 32) {
    if (bitfields) {
      const maskAt = FILE_HEADER_SIZE + 40;
      if (buf.length < maskAt + 12) throw corrupt('BMP bitfield masks are cut off');
      masks = new Uint32Array([view.getUint32(maskAt, true), view.getUint32(maskAt + 4, true), view.getUint32(maskAt + 8, true)]);
      if (headerSize === 40) paletteStart += compression === BI_ALPHABITFIELDS ? 16 : 12;
    } else {
      masks = bitsPerPixel === 16 ? new Uint32Array([0x7c00, 0x03e0, 0x001f]) : new Uint32Array([0xff0000, 0xff00, 0xff]);
    }
    for (const m of masks) checkContiguous(m);
  }

  let palette = new Uint8Array(0);
  let paletteSize = 0;
  if (bitsPerPixel <= 8) {
    const entryBytes = core ? 3 : 4;
    const maxEntries = 1 << bitsPerPixel;
    paletteSize = colorsUsed > 0 && colorsUsed < maxEntries ? colorsUsed : maxEntries;
    // Some writers declare a full palette but store fewer entries before the pixels.
    const room = Math.floor((Math.min(pixelOffset, buf.length) - paletteStart) / entryBytes);
    paletteSize = Math.min(paletteSize, room);
    if (paletteSize <= 0) throw corrupt('BMP palette is missing');
    palette = new Uint8Array(maxEntries * 3); // indices past the stored palette read as black
    for (let i = 0; i < paletteSize; i++) {
      const at = paletteStart + i * entryBytes; // stored as B, G, R[, reserved]
      palette[i * 3] = buf[at + 2];
      palette[i * 3 + 1] = buf[at + 1];
      palette[i * 3 + 2] = buf[at];
    }
  }

  const rowStride = Math.floor((bitsPerPixel * width + 31) / 32) * 4;
  return { width, height, topDown, bitsPerPixel, pixelOffset, rowStride, palette, paletteSize, masks };
}

function checkContiguous(mask: number): void {
  if (mask === 0) return;
  const shifted = mask / 2 ** trailingZeros(mask);
  if (((shifted + 1) & shifted) !== 0 && shifted !== 0xffffffff) {
    throw unsupported(`non-contiguous channel mask 0x${mask.toString(16)}`);
  }
}

function trailingZeros(mask: number): number {
  return mask === 0 ? 0 : 31 - Math.clz32(mask & -mask);
}

function bitCount(mask: number): number {
  let n = 0;
  for (let m = mask >>> 0; m !== 0; m >>>= 1) n += m & 1;
  return n;
}

/** True when every decoded value is an integer 0..255 taken from an 8-bit channel. */
export function bmpIsEightBit(header: BmpHeader): boolean {
  if (header.bitsPerPixel <= 8 || header.bitsPerPixel === 24) return true;
  for (const m of header.masks) if (m !== 0 && bitCount(m) !== 8) return false;
  return true;
}

/** Decodes the pixels to interleaved RGB on the 0..255 scale, rows top to bottom. */
export function decodeBmpPixels(buf: Uint8Array, header: BmpHeader): Float32Array {
  const { width, height, topDown, bitsPerPixel: bpp, pixelOffset, rowStride } = header;
  const lastRowBytes = Math.ceil((bpp * width) / 8);
  const needed = pixelOffset + rowStride * (height - 1) + lastRowBytes;
  if (needed > buf.length) throw corrupt(`BMP pixel data needs ${needed} bytes, file has ${buf.length}`);

  const out = new Float32Array(width * height * 3);
  const palette = header.palette;
  const shifts = new Float64Array(3);
  const maxima = new Float64Array(3);
  for (let ch = 0; ch < header.masks.length; ch++) {
    const m = header.masks[ch];
    shifts[ch] = 2 ** trailingZeros(m);
    maxima[ch] = m === 0 ? 1 : 2 ** bitCount(m) - 1;
  }
  const [mr, mg, mb] = header.masks;

  for (let y = 0; y < height; y++) {
    const row = pixelOffset + (topDown ? y : height - 1 - y) * rowStride;
    let o = y * width * 3;
    if (bpp <= 8) {
      const perByte = 8 / bpp;
      const valueMask = (1 << bpp) - 1;
      for (let x = 0; x < width; x++) {
        const byte = buf[row + Math.floor(x / perByte)];
        const shift = 8 - bpp * ((x % perByte) + 1); // leftmost pixel in the high bits
        const p = ((byte >> shift) & valueMask) * 3;
        out[o++] = palette[p];
        out[o++] = palette[p + 1];
        out[o++] = palette[p + 2];
      }
    } else if (bpp === 24) {
      for (let x = 0, at = row; x < width; x++, at += 3) {
        out[o++] = buf[at + 2];
        out[o++] = buf[at + 1];
        out[o++] = buf[at];
      }
    } else {
      const bytes = bpp / 8;
      for (let x = 0, at = row; x < width; x++, at += bytes) {
        const px =
          bytes === 2 ? buf[at] | (buf[at + 1] << 8) : (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16) | (buf[at + 3] << 24)) >>> 0;
        out[o++] = (Math.floor(((px & mr) >>> 0) / shifts[0]) * 255) / maxima[0];
        out[o++] = (Math.floor(((px & mg) >>> 0) / shifts[1]) * 255) / maxima[1];
        out[o++] = (Math.floor(((px & mb) >>> 0) / shifts[2]) * 255) / maxima[2];
      }
    }
  }
  return out;
}
