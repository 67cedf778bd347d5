import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { defaultDatasetDir } from '../paths.js';
import { DEFAULT_OUTLINE_COLOUR, INFERNO_LUT, maskOutline, renderOverlay, thumbnailSize } from './heatmap.js';

async function pixels(png: Buffer): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

function pixel(p: { data: Buffer; width: number; channels: number }, x: number, y: number): number[] {
  const o = (y * p.width + x) * p.channels;
  return [p.data[o], p.data[o + 1], p.data[o + 2]];
}

test('inferno LUT runs from near black to pale yellow', () => {
  assert.deepEqual([...INFERNO_LUT.subarray(0, 3)], [0, 0, 4]);
  assert.deepEqual([...INFERNO_LUT.subarray(765, 768)], [252, 255, 164]);
});

test('maskOutline keeps only boundary pixels', () => {
  const mask = new Uint8Array(25);
  for (let y = 1; y <= 3; y++) for (let x = 1; x <= 3; x++) mask[y * 5 + x] = 1;
  const out = maskOutline(mask, 5, 5);
  assert.equal(out.reduce((s, v) => s + v, 0), 8); // the 3x3 ring without its centre
  assert.equal(out[2 * 5 + 2], 0);
  assert.equal(out[1 * 5 + 1], 1);
});

test('overlay: thumbnail size, outline colour on the mask border, heatmap colour blended', async () => {
  const w = 16;
  const h = 16;
  const map = new Float32Array(w * h); // 0 everywhere except the right column at the range max
  for (let y = 0; y < h; y++) map[y * w + w - 1] = 2;
  const mask = new Uint8Array(w * h);
  for (let y = 4; y < 12; y++) for (let x = 4; x < 12; x++) mask[y * w + x] = 1;
  const { png, width, height } = await renderOverlay({ id: 'synthetic', map, mask, height: h, width: w }, { range: [0, 2], size: 64 });
  assert.deepEqual([width, height], [64, 64]);
  const p = await pixels(png);
  assert.deepEqual([p.width, p.height], [64, 64]);
  // Mask rows/cols 4..11 become thumbnail 16..47: its corner and edges are outlined, its inside is not.
  assert.deepEqual(pixel(p, 16, 16), [...DEFAULT_OUTLINE_COLOUR]);
  assert.deepEqual(pixel(p, 47, 30), [...DEFAULT_OUTLINE_COLOUR]);
  assert.notDeepEqual(pixel(p, 30, 30), [...DEFAULT_OUTLINE_COLOUR]);
  // No image: grey 128 background, half-blended with the LUT's low end (0) or high end (at the right edge).
  assert.deepEqual(pixel(p, 5, 5), [64, 64, 66]);
  assert.deepEqual(pixel(p, 63, 5), [190, 192, 146]);
});

test('overlay: non-square frames keep their aspect ratio; bad input is named', async () => {
  assert.deepEqual(thumbnailSize(32, 16, 224), { width: 224, height: 112 });
  assert.deepEqual(thumbnailSize(100, 300, 224), { width: 75, height: 224 });
  const map = new Float32Array(32 * 16);
  const r = await renderOverlay({ id: 'wide', map, height: 16, width: 32 }, { range: [0, 1] });
  assert.deepEqual([r.width, r.height], [224, 112]);
  await assert.rejects(renderOverlay({ id: 'img-7', map: new Float32Array(10), height: 16, width: 32 }, { range: [0, 1] }), /"img-7".*map has 10 values/);
  await assert.rejects(renderOverlay({ id: 'img-8', map, height: 16, width: 32 }, { range: [1, 1] }), /"img-8".*range/);
  await assert.rejects(
    renderOverlay({ id: 'img-9', map, height: 16, width: 32, image: Buffer.from('not an image') }, { range: [0, 1] }),
    /"img-9": cannot read the image/,
  );
});

test('overlay: the map covers the whole image; pixels the model did not see are darkened, not coloured', async () => {
  // 100x100 image: a red 10-pixel border around a blue centre. The model saw the centre 80x80 only.
  const src = Buffer.alloc(100 * 100 * 3);
  for (let y = 0; y < 100; y++) for (let x = 0; x < 100; x++) {
    const border = x < 10 || y < 10 || x >= 90 || y >= 90;
    src.set(border ? [255, 0, 0] : [0, 0, 255], (y * 100 + x) * 3);
  }
  const image = await sharp(src, { raw: { width: 100, height: 100, channels: 3 } }).png().toBuffer();
  const whole = await pixels((await renderOverlay({ id: 'whole', map: null, height: 100, width: 100, image }, { range: [0, 1], size: 40 })).png);
  assert.deepEqual(pixel(whole, 0, 0), [255, 0, 0]);
  assert.deepEqual(pixel(whole, 20, 20), [0, 0, 255]);
  const map = new Float32Array(100 * 100).fill(-Infinity);
  for (let y = 10; y < 90; y++) map.fill(0, y * 100 + 10, y * 100 + 90);
  const seen = await pixels((await renderOverlay({ id: 'seen', map, height: 100, width: 100, image }, { range: [0, 1], size: 40, alpha: 0.5 })).png);
  assert.deepEqual(pixel(seen, 0, 0), [89, 0, 0], 'outside the view: the image at 35%');
  // Inside: half the image's blue, half inferno's darkest colour (0, 0, 4).
  assert.deepEqual(pixel(seen, 20, 20), [0, 0, 130]);
});

test('overlay on a real MVTec bottle image with its ground-truth mask', async () => {
  const root = defaultDatasetDir('bottle');
  const image = await readFile(join(root, 'test/broken_large/000.png'));
  const maskMeta = await sharp(join(root, 'ground_truth/broken_large/000_mask.png')).greyscale().resize(224, 224, { fit: 'fill' }).raw().toBuffer();
  const mask = new Uint8Array(224 * 224);
  for (let i = 0; i < mask.length; i++) mask[i] = maskMeta[i] >= 128 ? 1 : 0;
  const map = new Float32Array(224 * 224);
  for (let i = 0; i < map.length; i++) map[i] = mask[i] ? 1 : 0.1;
  const { png, width, height } = await renderOverlay({ id: 'bottle', map, mask, height: 224, width: 224, image }, { range: [0, 1] });
  assert.deepEqual([width, height], [224, 224]);
  assert.ok(png.length < 200_000, `thumbnail ${png.length} bytes`);
  const p = await pixels(png);
  let outline = 0;
  for (let i = 0; i < 224 * 224; i++) {
    if (p.data[i * 3] === 0 && p.data[i * 3 + 1] === 255 && p.data[i * 3 + 2] === 255) outline++;
  }
  assert.ok(outline > 50, `only ${outline} outline pixels`);
});
