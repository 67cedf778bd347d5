import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PAPER_FRAME_SPEC, decodeImage, planFrame, toModelInput } from '../image/index.js';
import { defaultDatasetDir } from '../paths.js';
import { toAutoencoderInput } from './preprocess.js';
import { errorToAnomalyMap, mapMax, reconstructionError } from './score.js';

test('reconstructionError: squared error averaged over the three channels, per pixel', () => {
  const input = Float32Array.from([0, 0, 0, 1, 1, 1, 0.5, 0.5, 0.5, 0, 0, 0]);
  const recon = Float32Array.from([0, 0, 0, 0, 1, 1, 0.5, 0.5, 0.5, 0.3, 0.6, 0]);
  const err = reconstructionError(input, recon, 2);
  assert.deepEqual(Array.from(err, (v) => Number(v.toFixed(6))), [0, Number((1 / 3).toFixed(6)), 0, 0.15]);
  assert.throws(() => reconstructionError(input, recon.subarray(3), 2), /expected 2x2x3 values, got 12 and 9/);
});

test('errorToAnomalyMap: the model frame, smoothed, with a hot pixel landing where it was in the frame', () => {
  const size = 128;
  const err = new Float32Array(size * size);
  err[32 * size + 96] = 1; // row 32, column 96 of 128 -> about row 56, column 168 of 224
  const frame = planFrame(900, 900, PAPER_FRAME_SPEC);
  const map = errorToAnomalyMap(err, size, frame, 4);
  assert.equal(map.length, 224 * 224);
  let best = 0;
  for (let i = 1; i < map.length; i++) if (map[i] > map[best]) best = i;
  const [row, col] = [Math.floor(best / 224), best % 224];
  assert.ok(Math.abs(row - 56.4) <= 1.5 && Math.abs(col - 168.4) <= 1.5, `peak at ${row}, ${col}`);
  // Smoothing spreads the peak: it is far lower than the unsmoothed value, and the mass grows with the area (~3x).
  assert.ok(mapMax(map) < 0.05);
  const sum = map.reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(sum - (224 / 128) ** 2) < 0.2, `mass ${sum}`);
  assert.equal(mapMax(Float32Array.from([-3, 2, 1])), 2);
});

test('toAutoencoderInput: a real bottle framed like the model input, RGB in 0..1 at 128x128', async () => {
  const file = join(defaultDatasetDir('bottle'), 'test/broken_large/000.png');
  const img = await decodeImage(readFileSync(file), file);
  const { input, frame } = toAutoencoderInput(img, PAPER_FRAME_SPEC, 128);
  assert.deepEqual(frame, planFrame(900, 900, PAPER_FRAME_SPEC));
  assert.equal(input.length, 128 * 128 * 3);
  assert.ok(input.every((v) => v >= 0 && v <= 1));
  // The same view as PatchCore's input: per-channel means agree with the 224 crop (which is BGR, mean-subtracted).
  const model = toModelInput(img, PAPER_FRAME_SPEC).input;
  const means = (data: Float32Array, offset: number) => {
    let s = 0;
    for (let i = offset; i < data.length; i += 3) s += data[i];
    return s / (data.length / 3);
  };
  const [mb, mg, mr] = [103.939, 116.779, 123.68];
  assert.ok(Math.abs(means(input, 0) * 255 - (means(model, 2) + mr)) < 1, 'red');
  assert.ok(Math.abs(means(input, 1) * 255 - (means(model, 1) + mg)) < 1, 'green');
  assert.ok(Math.abs(means(input, 2) * 255 - (means(model, 0) + mb)) < 1, 'blue');
  // A centre pixel of the small input matches the centre of the crop it comes from.
  const c = (64 * 128 + 64) * 3;
  const m = (112 * 224 + 112) * 3;
  assert.ok(Math.abs(input[c] * 255 - (model[m + 2] + mr)) < 12);
  assert.throws(() => toAutoencoderInput(img, PAPER_FRAME_SPEC, 0), /input size must be a positive integer, got 0/);
});

test('toAutoencoderInput without a crop squeezes the whole frame into the square input', () => {
  const img = { width: 40, height: 20, data: new Float32Array(40 * 20 * 3).fill(51), eightBit: true };
  const { input, frame } = toAutoencoderInput(img, { resize: null, crop: null }, 16);
  assert.equal(frame.width, 40);
  assert.equal(frame.height, 20);
  assert.equal(input.length, 16 * 16 * 3);
  assert.ok(input.every((v) => Math.abs(v - 0.2) < 1e-6));
});
