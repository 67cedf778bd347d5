import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeImage, decodeMask } from './decode.js';
import {
  CAFFE_BGR_MEANS, DEFAULT_FRAME_SPEC, PAPER_FRAME_SPEC, cropHwc, loadModelInput, maskToFrame, planFrame, planTiles, toModelInput, type Frame,
} from './preprocess.js';
import { defaultDatasetDir, referenceDir } from '../paths.js';
import { encodeBmp, encodePng } from './test-images.js';

const bottle = defaultDatasetDir('bottle');

async function readF32(path: string): Promise<Float32Array> {
  const b = await readFile(path);
  const copy = new Uint8Array(b); // aligned copy for the Float32Array view
  return new Float32Array(copy.buffer, 0, copy.length / 4);
}

function absDiff(a: Float32Array, b: Float32Array): { max: number; mean: number } {
  assert.equal(a.length, b.length);
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d > max) max = d;
    sum += d;
  }
  return { max, mean: sum / a.length };
}

for (const [source, file] of [
  ['train/good/000.png', 'train_good_000.input.f32'],
  ['test/broken_large/000.png', 'test_broken_large_000.input.f32'],
]) {
  test(`paper-frame preprocessing of ${source} matches the reference input`, async (t) => {
    const reference = await readF32(join(referenceDir(), file));
    assert.equal(reference.length, 224 * 224 * 3);
    const { input, frame } = await loadModelInput(join(bottle, source), PAPER_FRAME_SPEC);
    assert.deepEqual(frame, {
      sourceWidth: 900, sourceHeight: 900, resizedWidth: 256, resizedHeight: 256,
      cropLeft: 16, cropTop: 16, width: 224, height: 224,
    });
    const { max, mean } = absDiff(input, reference);
    t.diagnostic(`${source}: max abs diff ${max}, mean abs diff ${mean}`);
    assert.ok(max <= 1.0, `max abs diff ${max}`);
    assert.ok(mean <= 0.01, `mean abs diff ${mean}`);

    // The reference is sensitive to PIL's 8-bit rounding: plain float resampling misses the target.
    const img = await decodeImage(await readFile(join(bottle, source)), source);
    const float = absDiff(toModelInput(img, PAPER_FRAME_SPEC, { sourceIs8Bit: false }).input, reference);
    assert.ok(float.mean > 0.01, `float path mean abs diff ${float.mean}`);
  });
}

test('planFrame follows torchvision Resize(int) and CenterCrop', () => {
  assert.deepEqual(planFrame(900, 600, { resize: 256, crop: 224 }), {
    sourceWidth: 900, sourceHeight: 600, resizedWidth: 384, resizedHeight: 256,
    cropLeft: 80, cropTop: 16, width: 224, height: 224,
  });
  // The longer side truncates: 256 * 500 / 333 = 384.38 -> 384.
  const tall = planFrame(333, 500, { resize: 256, crop: null });
  assert.deepEqual([tall.resizedWidth, tall.resizedHeight, tall.width, tall.height], [256, 384, 256, 384]);
  // Offsets use Python's round(): 16.5 -> 16, 17.5 -> 18.
  assert.equal(planFrame(257, 259, { resize: null, crop: 224 }).cropLeft, 16);
  assert.equal(planFrame(257, 259, { resize: null, crop: 224 }).cropTop, 18);
  assert.deepEqual(planFrame(120, 80, { resize: null, crop: null }), {
    sourceWidth: 120, sourceHeight: 80, resizedWidth: 120, resizedHeight: 80,
    cropLeft: 0, cropTop: 0, width: 120, height: 80,
  });
});

test('planFrame rejects a bad spec with a clear message', () => {
  assert.throws(
    () => planFrame(900, 600, { resize: 200, crop: 224 }),
    { message: 'frame spec "crop" 224 is larger than the resized image 300x200 (source 900x600, resize 200)' },
  );
  assert.throws(() => planFrame(100, 100, { resize: null, crop: 101 }), { message: 'frame spec "crop" 101 is larger than the image 100x100 (source 100x100, resize null)' });
  assert.throws(() => planFrame(100, 100, { resize: 0, crop: null }), { message: 'frame spec "resize" must be a positive integer, got 0' });
  assert.throws(() => planFrame(100, 100, { resize: 64, crop: 2.5 }), { message: 'frame spec "crop" must be a positive integer, got 2.5' });
});

test('no-resize, no-crop: the model sees every pixel, BGR minus the caffe means', () => {
  const data = Float32Array.from([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180]);
  const { input, frame } = toModelInput({ width: 3, height: 2, data }, { resize: null, crop: null });
  assert.equal(frame.width, 3);
  assert.equal(frame.height, 2);
  const [mb, mg, mr] = CAFFE_BGR_MEANS.map(Math.fround); // float32 arithmetic, as in the reference
  const expected = new Float32Array(18);
  for (let i = 0; i < 18; i += 3) expected.set([data[i + 2] - mb, data[i + 1] - mg, data[i] - mr], i);
  assert.deepEqual(input, expected);
  // Crop only: the centre window of the same pixels.
  const cropped = toModelInput({ width: 3, height: 2, data }, { resize: null, crop: 2 });
  assert.deepEqual([cropped.frame.cropLeft, cropped.frame.cropTop], [0, 0]); // round(0.5) = 0
  assert.deepEqual(cropped.input, Float32Array.from([...expected.subarray(0, 6), ...expected.subarray(9, 15)]));
});

test('no-crop keeps the whole resized, non-square image; deep sources are not rounded', () => {
  const w = 60;
  const h = 40;
  const data = new Float32Array(w * h * 3).fill(1000 * (255 / 65535)); // a 16-bit grey of 1000
  const { input, frame } = toModelInput({ width: w, height: h, data, eightBit: false }, { resize: 16, crop: null });
  assert.deepEqual([frame.width, frame.height], [24, 16]);
  assert.equal(input.length, 24 * 16 * 3);
  assert.ok(Math.abs(input[0] - (1000 * (255 / 65535) - CAFFE_BGR_MEANS[0])) < 1e-4);
});

function leftHalfMask(w: number, h: number): { width: number; height: number; data: Uint8Array } {
  const data = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w / 2; x++) data[y * w + x] = 1;
  return { width: w, height: h, data };
}

function assertLeftColumns(mask: Uint8Array, frame: Frame, ones: number): void {
  for (let y = 0; y < frame.height; y++) {
    for (let x = 0; x < frame.width; x++) assert.equal(mask[y * frame.width + x], x < ones ? 1 : 0, `(${x}, ${y})`);
  }
}

test('maskToFrame resizes and crops a mask of any size like its image', () => {
  const frame = planFrame(900, 900, PAPER_FRAME_SPEC);
  // The edge at source x = 450 lands at 128 in the 256 image, 112 after the 16-pixel crop.
  for (const size of [900, 450, 64]) assertLeftColumns(maskToFrame(leftHalfMask(size, size), frame), frame, 112);
  const wide = planFrame(900, 600, { resize: 256, crop: null }); // 384x256, no crop
  assertLeftColumns(maskToFrame(leftHalfMask(90, 60), wide), wide, 192);
  assert.ok(maskToFrame({ width: 5, height: 5, data: new Uint8Array(25) }, frame).every((v) => v === 0));
  assert.throws(() => maskToFrame({ width: 5, height: 5, data: new Uint8Array(24) }, frame), /mask data has 24 values, expected 5x5x1 = 25/);
});

test('a real MVTec mask lands on the same cells whether given at full or a third of the size', async () => {
  const full = await decodeMask(await readFile(join(bottle, 'ground_truth', 'broken_large', '000_mask.png')), '000_mask.png');
  const small = { width: 300, height: 300, data: new Uint8Array(300 * 300) };
  for (let y = 0; y < 300; y++) for (let x = 0; x < 300; x++) small.data[y * 300 + x] = full.data[(y * 3 + 1) * 900 + x * 3 + 1];
  const frame = planFrame(900, 900, PAPER_FRAME_SPEC);
  const a = maskToFrame(full, frame);
  const b = maskToFrame(small, frame);
  let defect = 0;
  let agree = 0;
  for (let i = 0; i < a.length; i++) {
    defect += a[i];
    if (a[i] === b[i]) agree++;
  }
  assert.ok(defect > 500, `defect cells ${defect}`);
  assert.ok(agree / a.length > 0.99, `agreement ${agree / a.length}`);
});

test('loadModelInput sniffs content: a BMP named .png gives the same input as the PNG', async () => {
  const pngPath = join(bottle, 'test', 'broken_large', '000.png');
  const img = await decodeImage(await readFile(pngPath), pngPath);
  const dir = await mkdtemp(join(tmpdir(), 'image-preprocess-'));
  try {
    const fake = join(dir, '000.png');
    await writeFile(fake, encodeBmp({ width: img.width, height: img.height, bitsPerPixel: 24, pixels: img.data }));
    const fromBmp = await loadModelInput(fake, PAPER_FRAME_SPEC);
    const fromPng = await loadModelInput(pngPath, PAPER_FRAME_SPEC);
    assert.deepEqual(fromBmp.input, fromPng.input);
    const greyPath = join(dir, 'grey.png');
    await writeFile(greyPath, encodePng({ width: 2, height: 1, colorType: 0, bitDepth: 8, samples: [0, 255] }));
    const grey = await loadModelInput(greyPath, PAPER_FRAME_SPEC);
    assert.deepEqual([grey.frame.resizedWidth, grey.frame.resizedHeight, grey.frame.cropLeft, grey.frame.cropTop], [512, 256, 144, 16]);
    const [mb, mg, mr] = CAFFE_BGR_MEANS;
    for (let i = 0; i < grey.input.length; i += 3) {
      const [b, g, r] = [grey.input[i] + mb, grey.input[i + 1] + mg, grey.input[i + 2] + mr];
      assert.ok(Math.abs(b - r) < 1e-4 && Math.abs(g - r) < 1e-4, `grey replicated to B, G, R: ${b} ${g} ${r}`);
    }
    assert.ok(grey.input[2] + mr < 128 && grey.input[grey.input.length - 1] + mr > 128, 'dark left, bright right');
    await assert.rejects(loadModelInput(greyPath, { resize: 100, crop: 224 }), {
      message: 'frame spec "crop" 224 is larger than the resized image 200x100 (source 2x1, resize 100)',
    });
    await assert.rejects(loadModelInput(join(dir, 'missing.png')), /ENOENT.*missing\.png/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the default frame is the whole image, aspect ratio kept; aligned, any shape fits the backbone', () => {
  assert.deepEqual(DEFAULT_FRAME_SPEC, { resize: 256, crop: null });
  // VisA capsules: 600x400 -> 384x256, the whole image (already multiples of 16).
  assert.deepEqual(planFrame(600, 400, DEFAULT_FRAME_SPEC, { align: 16 }), {
    sourceWidth: 600, sourceHeight: 400, resizedWidth: 384, resizedHeight: 256, cropLeft: 0, cropTop: 0, width: 384, height: 256,
  });
  // The strip: 1263x500 -> 646x256 unaligned; 640x256 aligned (646 / 16 = 40.4 -> 40).
  assert.deepEqual([planFrame(1263, 500, DEFAULT_FRAME_SPEC).width, planFrame(1263, 500, DEFAULT_FRAME_SPEC).height], [646, 256]);
  const strip = planFrame(1263, 500, DEFAULT_FRAME_SPEC, { align: 16 });
  assert.deepEqual([strip.resizedWidth, strip.resizedHeight, strip.width, strip.height], [640, 256, 640, 256]);
  // Halves round up: 264 / 16 = 16.5 -> 272; without resizing the source is aligned too.
  assert.deepEqual([planFrame(264, 100, { resize: null, crop: null }, { align: 16 }).width, planFrame(264, 100, { resize: null, crop: null }, { align: 16 }).height], [272, 96]);
  // A crop is what it says: alignment applies to uncropped frames only.
  assert.equal(planFrame(900, 600, PAPER_FRAME_SPEC, { align: 16 }).width, 224);
});

test('planTiles covers the frame with overlapping tiles on the patch stride, the last flush with the end', () => {
  const frame = { width: 960, height: 640 };
  const tiles = planTiles(frame, { resize: null, crop: null, tile: 256, tileOverlap: 32 }, 8);
  const lefts = [...new Set(tiles.map((t) => t.left))];
  const tops = [...new Set(tiles.map((t) => t.top))];
  assert.deepEqual(lefts, [0, 176, 352, 528, 704]);
  assert.deepEqual(tops, [0, 192, 384]);
  assert.equal(tiles.length, lefts.length * tops.length);
  for (const t of tiles) {
    assert.deepEqual([t.width, t.height], [256, 256]);
    assert.equal(t.left % 8, 0);
    assert.equal(t.top % 8, 0);
  }
  for (const starts of [lefts, tops]) for (let i = 1; i < starts.length; i++) assert.ok(starts[i - 1] + 256 - starts[i] >= 32, `overlap at ${starts[i]}`);
  // A side shorter than the tile gives tiles as long as that side; no tile = the frame in one piece.
  assert.deepEqual(planTiles({ width: 384, height: 128 }, { resize: null, crop: null, tile: 256, tileOverlap: 0 }, 8).map((t) => [t.left, t.top, t.width, t.height]),
    [[0, 0, 256, 128], [128, 0, 256, 128]]);
  assert.deepEqual(planTiles(frame, DEFAULT_FRAME_SPEC), [{ left: 0, top: 0, width: 960, height: 640 }]);
  assert.throws(() => planTiles(frame, { resize: 256, crop: 224, tile: 128 }), { message: 'frame spec "tile" 128 needs the whole image: it cannot be combined with "crop" 224' });
  assert.throws(() => planTiles(frame, { resize: null, crop: null, tile: 128, tileOverlap: 128 }), { message: 'frame spec "tileOverlap" must be an integer in [0, tile 128), got 128' });
  // A tile is the window of the input, row by row.
  const data = Float32Array.from({ length: 4 * 3 * 2 }, (_, i) => i);
  assert.deepEqual(cropHwc(data, 4, 2, { left: 1, top: 1, width: 2, height: 2 }), Float32Array.from([10, 11, 12, 13, 18, 19, 20, 21]));
});
