import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { decodeImage, decodeMask, maskToFrame, planFrame } from '../image/index.js';
import { PixelHistogram } from '../metrics/index.js';
import { sharedDir } from '../paths.js';
import { localReader } from '../run/sources.js';
import { readGroundTruth } from './ground-truth.js';
import { computeMetrics } from './metrics.js';
import { OUTSIDE_VIEW_SCORE, defectPixelsOutsideView, summariseImage, wholeImageMap } from './whole-image.js';

const bottle = join(sharedDir(), 'datasets', 'mvtec_ad', 'bottle');
const capsules = join(sharedDir(), 'datasets', 'visa', 'capsules');

/** A real test image's frame and whole-image mask; `inView` counts its defect pixels inside the crop, independently. */
async function groundTruth(root: string, path: string, spec: { resize: number; crop: number | null }) {
  const read = localReader(root);
  const img = listMvtecDataset(root, { test: true }).test.find((t) => t.path === path)!;
  const decoded = await decodeImage(await read(img.path), img.path);
  const frame = planFrame(decoded.width, decoded.height, spec);
  const { mask } = await readGroundTruth(img, frame, read);
  const inView = maskToFrame(await decodeMask(await read(img.maskPath!), img.maskPath!), frame).reduce((a, b) => a + b, 0);
  return { img, frame, mask: mask!, inView };
}

test('out of view: the paper crop hides part of a real bottle defect that touches the border; counted, never detected', async () => {
  const paper = await groundTruth(bottle, 'test/broken_large/003.png', { resize: 256, crop: 224 });
  assert.equal(paper.mask.length, 256 * 256);
  const total = paper.mask.reduce((a, b) => a + b, 0);
  const outside = defectPixelsOutsideView(paper.mask, paper.frame);
  assert.equal(outside, total - paper.inView);
  assert.ok(outside > 0 && outside < total, `${outside} of ${total} defect pixels outside`);
  // The model's map covers the crop; the whole-image map holds the lowest score around it.
  const view = new Float32Array(224 * 224).fill(1);
  const pixels = new PixelHistogram();
  const whole = summariseImage(pixels, { id: paper.img.path, map: view, frame: paper.frame }, paper.mask);
  assert.equal(whole.length, 256 * 256);
  assert.equal(whole[0], OUTSIDE_VIEW_SCORE);
  assert.equal(whole[16 * 256 + 16], 1);
  assert.equal(whole.filter((v) => v === 1).length, 224 * 224);
  const metrics = computeMetrics([{ id: paper.img.path, defectType: 'broken_large', label: 1, score: 1 }], pixels);
  assert.equal(metrics.defect_pixels_outside_view, Math.round((outside / total) * 1e6) / 1e6);
  assert.equal(metrics.pixel_images, 1);

  // Without a crop the model sees everything: nothing is outside.
  const resized = await groundTruth(bottle, 'test/broken_large/003.png', { resize: 256, crop: null });
  assert.equal(defectPixelsOutsideView(resized.mask, resized.frame), 0);
  assert.deepEqual(resized.mask, paper.mask);
});

test('out of view: a VisA capsules defect wholly outside the paper crop of a 600x400 image is reported, never detected', async () => {
  const paper = await groundTruth(capsules, 'test/bad/058.jpg', { resize: 256, crop: 224 });
  assert.deepEqual([paper.frame.resizedWidth, paper.frame.resizedHeight, paper.frame.cropLeft], [384, 256, 80]);
  assert.equal(paper.inView, 0);
  const pixels = new PixelHistogram();
  // However high the map scores inside the view, the defect outside it is found by no threshold.
  summariseImage(pixels, { id: 'test/bad/058.jpg', map: new Float32Array(224 * 224).fill(5), frame: paper.frame }, paper.mask);
  const m = computeMetrics([{ id: 'test/bad/058.jpg', defectType: 'bad', label: 1, score: 5 }], pixels);
  assert.equal(m.defect_pixels_outside_view, 1);
  assert.ok(m.pixel_auroc! < 0.5, `pixel AUROC ${m.pixel_auroc}`);
  assert.equal(m.aupro, 0);
});

test('wholeImageMap: a map that does not match its frame is refused with the image named', () => {
  const frame = planFrame(900, 900, { resize: 256, crop: 224 });
  assert.throws(() => wholeImageMap(new Float32Array(10), frame, 'test/good/000.png'), /anomaly map of "test\/good\/000.png" has 10 values, expected its frame's 224x224/);
  const same = new Float32Array(256 * 256);
  assert.equal(wholeImageMap(same, planFrame(900, 900, { resize: 256, crop: null }), 'x'), same);
});
