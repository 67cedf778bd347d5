import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeImage, decodeMask, sniffFormat } from './decode.js';
import { defaultDatasetDir } from '../paths.js';
import { encodeBmp, encodePng, encodeTiff, pngDeclaringSize } from './test-images.js';

const bottle = defaultDatasetDir('bottle');
const goodPng = () => readFile(join(bottle, 'train', 'good', '000.png'));

/** Expected decoder output: values as float32, grey replicated. */
function rgbOf(values: ArrayLike<number>, channels: 1 | 3, scale = 1): Float32Array {
  const n = values.length / channels;
  const out = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = values[i * channels + (channels === 1 ? 0 : c)] * scale;
  return out;
}

async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail('expected the promise to reject');
}

test('real MVTec PNG decodes to the exact 8-bit RGB samples', async () => {
  const buf = await goodPng();
  const img = await decodeImage(buf, 'train/good/000.png');
  assert.equal(img.width, 900);
  assert.equal(img.height, 900);
  assert.equal(img.eightBit, true);
  const { data } = await sharp(buf).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual(img.data, Float32Array.from(data));
});

test('sniffFormat reads magic bytes', () => {
  assert.equal(sniffFormat(encodePng({ width: 1, height: 1, colorType: 0, bitDepth: 8, samples: [0] })), 'png');
  assert.equal(sniffFormat(encodeBmp({ width: 1, height: 1, bitsPerPixel: 24, pixels: [1, 2, 3] })), 'bmp');
  assert.equal(sniffFormat(encodeTiff(1, 1, 1, 8, [0])), 'tiff');
  assert.equal(sniffFormat(Buffer.from([0xff, 0xd8, 0xff, 0xe0])), 'jpeg');
  assert.equal(sniffFormat(Buffer.from('GIF89a')), 'gif');
  assert.equal(sniffFormat(Buffer.from('%PDF-1.4')), null);
});

test('greyscale PNG (8-bit and 1-bit) is replicated to three channels', async () => {
  const grey = [0, 1, 2, 100, 200, 255];
  const img = await decodeImage(encodePng({ width: 3, height: 2, colorType: 0, bitDepth: 8, samples: grey }), 'g.png');
  assert.deepEqual(img.data, rgbOf(grey, 1));
  assert.equal(img.eightBit, true);
  const bits = [1, 0, 1, 0, 0, 1];
  const bilevel = await decodeImage(encodePng({ width: 3, height: 2, colorType: 0, bitDepth: 1, samples: bits }), 'b.png');
  assert.deepEqual(bilevel.data, rgbOf(bits, 1, 255));
});

test('RGBA and grey+alpha PNG drop alpha without premultiplying', async () => {
  const rgba = [10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255, 1, 2, 3, 7];
  const img = await decodeImage(encodePng({ width: 2, height: 2, colorType: 6, bitDepth: 8, samples: rgba }), 'rgba.png');
  assert.deepEqual(img.data, Float32Array.from([10, 20, 30, 40, 50, 60, 70, 80, 90, 1, 2, 3]));
  const ga = [10, 0, 200, 255, 30, 9];
  const grey = await decodeImage(encodePng({ width: 3, height: 1, colorType: 4, bitDepth: 8, samples: ga }), 'ga.png');
  assert.deepEqual(grey.data, rgbOf([10, 200, 30], 1));
});

test('palette PNG expands to its colours', async () => {
  const palette = [255, 0, 0, 0, 128, 0, 1, 2, 3];
  const img = await decodeImage(
    encodePng({ width: 4, height: 1, colorType: 3, bitDepth: 4, samples: [0, 1, 2, 1], palette }),
    'pal.png',
  );
  assert.deepEqual(img.data, Float32Array.from([255, 0, 0, 0, 128, 0, 1, 2, 3, 0, 128, 0]));
});

test('16-bit PNG and TIFF keep full precision (scaled by 255/65535)', async () => {
  const rgb16 = [0, 1, 257, 1000, 32768, 65535, 65534, 12345, 40000];
  const png = await decodeImage(encodePng({ width: 3, height: 1, colorType: 2, bitDepth: 16, samples: rgb16 }), 'deep.png');
  const expected = Float32Array.from(rgb16, (v) => (v * 255) / 65535);
  assert.equal(png.eightBit, false);
  assert.deepEqual(png.data, expected);
  assert.notEqual(png.data[3], Math.floor(png.data[3])); // 1000 -> 3.89, not truncated to 3
  const tiff = await decodeImage(encodeTiff(3, 1, 3, 16, rgb16), 'deep.tif');
  assert.deepEqual(tiff.data, expected);
  const grey16 = [0, 300, 65535];
  const g = await decodeImage(encodePng({ width: 3, height: 1, colorType: 0, bitDepth: 16, samples: grey16 }), 'g16.png');
  assert.deepEqual(g.data, rgbOf(grey16, 1, 255 / 65535));
});

test('8-bit TIFF decodes exactly', async () => {
  const rgb = [0, 1, 2, 250, 251, 252];
  const img = await decodeImage(encodeTiff(2, 1, 3, 8, rgb), 'rgb.tif');
  assert.deepEqual(img.data, Float32Array.from(rgb));
  assert.equal(img.eightBit, true);
});

test('JPEG (colour and greyscale) decodes close to its source', async () => {
  const w = 32;
  const h = 16;
  const src = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) src.set([x * 8, y * 16, 128], (y * w + x) * 3);
  const jpeg = await sharp(src, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).toBuffer();
  const img = await decodeImage(jpeg, 'photo.jpg');
  assert.equal(img.width, w);
  assert.equal(img.height, h);
  let worst = 0;
  for (let i = 0; i < src.length; i++) worst = Math.max(worst, Math.abs(img.data[i] - src[i]));
  assert.ok(worst <= 4, `JPEG round trip differs by ${worst}`);
  const greyJpeg = await sharp(src, { raw: { width: w, height: h, channels: 3 } }).toColourspace('b-w').jpeg().toBuffer();
  assert.equal((await sharp(greyJpeg).metadata()).channels, 1);
  const grey = await decodeImage(greyJpeg, 'grey.jpg');
  for (let i = 0; i < w * h; i++) {
    assert.equal(grey.data[i * 3], grey.data[i * 3 + 1]);
    assert.equal(grey.data[i * 3], grey.data[i * 3 + 2]);
  }
});

test('BMP: 24-bit bottom-up with row padding, and top-down', async () => {
  const rgb = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]; // 3x2, 9-byte rows padded to 12
  for (const topDown of [false, true]) {
    const img = await decodeImage(encodeBmp({ width: 3, height: 2, bitsPerPixel: 24, pixels: rgb, topDown }), 'x.bmp');
    assert.deepEqual(img.data, Float32Array.from(rgb), `topDown=${topDown}`);
    assert.equal(img.eightBit, true);
  }
});

test('BMP: 1/4/8-bit palettes', async () => {
  const palette = [0, 0, 0, 255, 255, 255, 200, 100, 50];
  const expected = Float32Array.from([255, 255, 255, 0, 0, 0, 200, 100, 50, 255, 255, 255, 0, 0, 0]);
  for (const bpp of [4, 8] as const) {
    const img = await decodeImage(encodeBmp({ width: 5, height: 1, bitsPerPixel: bpp, pixels: [1, 0, 2, 1, 0], palette }), 'p.bmp');
    assert.deepEqual(img.data, expected, `${bpp}-bit`);
  }
  const mono = await decodeImage(
    encodeBmp({ width: 10, height: 2, bitsPerPixel: 1, pixels: [1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1], palette: [0, 0, 0, 9, 9, 9] }),
    'mono.bmp',
  );
  assert.deepEqual(Array.from(mono.data.filter((_, i) => i % 3 === 0)), [9, 0, 0, 9, 9, 9, 0, 0, 0, 9, 0, 9, 0, 9, 0, 9, 0, 9, 0, 9]);
});

test('BMP: OS/2 BITMAPCOREHEADER with a 3-byte palette', async () => {
  const bmp = Buffer.alloc(36);
  bmp.write('BM', 0, 'latin1');
  bmp.writeUInt32LE(bmp.length, 2);
  bmp.writeUInt32LE(32, 10); // 14 + 12 header + 2 palette entries of 3 bytes
  bmp.writeUInt32LE(12, 14);
  bmp.writeUInt16LE(2, 18); // width
  bmp.writeUInt16LE(1, 20); // height
  bmp.writeUInt16LE(1, 22); // planes
  bmp.writeUInt16LE(8, 24); // bits per pixel
  bmp.set([30, 20, 10, 3, 2, 1], 26); // B, G, R entries
  bmp.set([1, 0], 32);
  const img = await decodeImage(bmp, 'core.bmp');
  assert.deepEqual(img.data, Float32Array.from([1, 2, 3, 10, 20, 30]));
});

test('BMP: 16/32-bit direct colour, default and BI_BITFIELDS masks, V4/V5 headers', async () => {
  const rgb565 = (r: number, g: number, b: number) => (r << 11) | (g << 5) | b;
  const img565 = await decodeImage(
    encodeBmp({ width: 2, height: 1, bitsPerPixel: 16, compression: 3, masks: [0xf800, 0x07e0, 0x001f], pixels: [rgb565(31, 63, 0), rgb565(1, 32, 16)] }),
    '565.bmp',
  );
  assert.deepEqual(img565.data, Float32Array.from([255, 255, 0, 255 / 31, (32 * 255) / 63, (16 * 255) / 31]));
  assert.equal(img565.eightBit, false);
  const img555 = await decodeImage(encodeBmp({ width: 1, height: 1, bitsPerPixel: 16, pixels: [(31 << 10) | 1] }), '555.bmp');
  assert.deepEqual(img555.data, Float32Array.from([255, 0, 255 / 31]));
  const argb = 0x80c86432; // alpha 0x80, R 200, G 100, B 50
  const plain32 = await decodeImage(encodeBmp({ width: 1, height: 1, bitsPerPixel: 32, pixels: [argb] }), '32.bmp');
  assert.deepEqual(plain32.data, Float32Array.from([200, 100, 50]));
  for (const headerSize of [40, 108, 124] as const) {
    const rgbaOrder = await decodeImage(
      encodeBmp({ width: 1, height: 1, bitsPerPixel: 32, compression: 3, headerSize, masks: [0xff000000, 0xff0000, 0xff00], pixels: [0xc8643280] }),
      `v${headerSize}.bmp`,
    );
    assert.deepEqual(rgbaOrder.data, Float32Array.from([200, 100, 50]), `header ${headerSize}`);
    assert.equal(rgbaOrder.eightBit, true);
  }
});

test('BMP of a real image equals the PNG decode, also when named .png', async () => {
  const buf = await goodPng();
  const png = await decodeImage(buf, 'train/good/000.png');
  const bmp = encodeBmp({ width: 900, height: 900, bitsPerPixel: 24, pixels: png.data });
  const dir = await mkdtemp(join(tmpdir(), 'image-decode-'));
  try {
    const path = join(dir, 'really-a-bmp.png');
    await writeFile(path, bmp);
    const decoded = await decodeImage(await readFile(path), path);
    assert.deepEqual(decoded.data, png.data);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('errors name the input and say what is wrong', async () => {
  const name = 'train/good/007.png';
  assert.equal(await rejection(decodeImage(Buffer.alloc(0), name)), `Cannot decode image "${name}": zero-byte file`);
  assert.equal(
    await rejection(decodeImage(Buffer.from('just some notes, not a picture\n'), 'notes.png')),
    'Cannot decode image "notes.png": not an image (unknown format)',
  );
  const buf = await goodPng();
  assert.match(
    await rejection(decodeImage(buf.subarray(0, buf.length >> 1), 'cut.png')),
    /^Cannot decode image "cut\.png": truncated or corrupt: \S.*\S$/,
  );
  assert.match(await rejection(decodeImage(buf.subarray(0, 30), 'stub.png')), /^Cannot decode image "stub\.png": truncated or corrupt: \S/);
  const bmp = encodeBmp({ width: 4, height: 4, bitsPerPixel: 24, pixels: new Array(48).fill(7) });
  assert.equal(
    await rejection(decodeImage(bmp.subarray(0, bmp.length - 5), 'cut.bmp')),
    'Cannot decode image "cut.bmp": truncated or corrupt: BMP pixel data needs 102 bytes, file has 97',
  );
  const rle = encodeBmp({ width: 2, height: 1, bitsPerPixel: 8, compression: 1, pixels: [0, 0], palette: [0, 0, 0] });
  assert.equal(
    await rejection(decodeImage(rle, 'rle.bmp')),
    'Cannot decode image "rle.bmp": unsupported BMP: RLE compression (BI_RLE8) is not supported; re-save it uncompressed',
  );
  assert.equal(
    await rejection(decodeMask(Buffer.alloc(0), 'ground_truth/x/000_mask.png')),
    'Cannot decode mask "ground_truth/x/000_mask.png": zero-byte file',
  );
});

test('the pixel limit is checked from the header, before decoding', async () => {
  const limitMessage = (name: string) => `Cannot decode image "${name}": 30000x30000 exceeds the 40000000-pixel limit`;
  assert.equal(await rejection(decodeImage(pngDeclaringSize(30000, 30000), 'bomb.png')), limitMessage('bomb.png'));
  const bmpHeader = encodeBmp({ width: 1, height: 1, bitsPerPixel: 24, pixels: [0, 0, 0] });
  bmpHeader.writeInt32LE(30000, 18);
  bmpHeader.writeInt32LE(30000, 22);
  assert.equal(await rejection(decodeImage(bmpHeader, 'bomb.bmp')), limitMessage('bomb.bmp'));
  const small = encodePng({ width: 3, height: 2, colorType: 0, bitDepth: 8, samples: [0, 0, 0, 0, 0, 0] });
  assert.equal(await rejection(decodeImage(small, 's.png', { maxPixels: 5 })), 'Cannot decode image "s.png": 3x2 exceeds the 5-pixel limit');
  assert.equal((await decodeImage(small, 's.png', { maxPixels: 6 })).width, 3);
});

test('decodeMask: 1 where any colour channel is non-zero, any depth', async () => {
  const maskBuf = await readFile(join(bottle, 'ground_truth', 'broken_large', '000_mask.png'));
  const mask = await decodeMask(maskBuf, '000_mask.png');
  const { data, info } = await sharp(maskBuf).raw().toBuffer({ resolveWithObject: true });
  let nonZero = 0;
  for (let i = 0; i < info.width * info.height; i++) if (data[i * info.channels] !== 0) nonZero++;
  assert.equal(mask.width, 900);
  assert.ok(nonZero > 1000, 'the real mask has a defect region');
  assert.equal(mask.data.reduce((s, v) => s + v, 0), nonZero);
  assert.ok(mask.data.every((v) => v === 0 || v === 1));

  const deep = await decodeMask(encodePng({ width: 3, height: 1, colorType: 0, bitDepth: 16, samples: [0, 1, 65535] }), 'm16.png');
  assert.deepEqual(deep.data, Uint8Array.from([0, 1, 1]));
  const blueOnly = await decodeMask(encodePng({ width: 2, height: 1, colorType: 2, bitDepth: 8, samples: [0, 0, 3, 0, 0, 0] }), 'rgb.png');
  assert.deepEqual(blueOnly.data, Uint8Array.from([1, 0]));
  const alphaOnly = await decodeMask(encodePng({ width: 2, height: 1, colorType: 6, bitDepth: 8, samples: [0, 0, 0, 255, 9, 0, 0, 0] }), 'a.png');
  assert.deepEqual(alphaOnly.data, Uint8Array.from([0, 1]));
  const bmpMask = await decodeMask(encodeBmp({ width: 3, height: 1, bitsPerPixel: 8, pixels: [0, 1, 0], palette: [0, 0, 0, 255, 255, 255] }), 'm.bmp');
  assert.deepEqual(bmpMask.data, Uint8Array.from([0, 1, 0]));
});
