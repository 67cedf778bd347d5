import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { UserError } from '../errors.js';
import { toModelInput, decodeImage } from '../image/index.js';
import { defaultDatasetDir } from '../paths.js';
import { localReader } from '../run/sources.js';
import { readGroundTruth } from './ground-truth.js';
import { assembleMetrics, mergeRecall } from './metrics.js';
import type { ScoredImage } from './types.js';

const image = (id: string, label: 0 | 1, score: number, recall?: { hits: number; total: number }): ScoredImage => ({
  id, defectType: label ? 'broken' : 'good', label, score, recall,
});

test('mergeRecall: hits over total in id order, whatever order or split the images come in', () => {
  const a = image('a', 0, 1, { hits: 24, total: 24 });
  const b = image('b', 1, 2, { hits: 20, total: 24 });
  const c = image('c', 1, 3, { hits: 23, total: 24 });
  assert.equal(mergeRecall([a, b, c], 2000), 67 / 72);
  assert.equal(mergeRecall([c, a, b], 2000), 67 / 72);
  // Whole images up to the budget, first by id: a and b only.
  assert.equal(mergeRecall([c, b, a], 48), 44 / 48);
  assert.equal(mergeRecall([image('x', 0, 1)], 2000), null);
  assert.equal(mergeRecall([a], 0), null);
});

test('assembleMetrics: decision at the F1-max threshold, recall, failed images in id order, the model record', () => {
  const images = [image('g1', 0, 0.1, { hits: 1, total: 2 }), image('g2', 0, 0.5), image('d1', 1, 0.4), image('d2', 1, 0.9)];
  const { metrics, threshold } = assembleMetrics({
    images, pixels: null, failed: [{ id: 'z', error: 'bad' }, { id: 'b', error: 'worse' }], model: { method: 'patchcore' }, modelName: 'model m',
  });
  assert.deepEqual(threshold, { threshold: Math.fround(0.4), rule: 'f1-max' });
  assert.deepEqual(metrics.decision, { rule: 'f1-max', threshold: Math.fround(0.4), confusion_matrix: { tp: 2, fp: 1, tn: 1, fn: 0 } });
  assert.equal(metrics.hnsw_recall_at_1, 0.5);
  assert.deepEqual(metrics.failed_images!.map((f) => f.id), ['b', 'z']);
  assert.deepEqual(metrics.model, { method: 'patchcore' });
});

test('assembleMetrics: target FPR on held-out good scores, or a clear error naming the model without them', () => {
  const good = [image('g1', 0, 0.1), image('g2', 0, 0.2)];
  const { metrics } = assembleMetrics({ images: good, pixels: null, failed: [], model: {}, modelName: 'model m', validationScores: [0.1, 0.3] , threshold: { rule: 'target-fpr', targetFpr: 0.5 } });
  assert.deepEqual(metrics.decision, { rule: 'target-fpr', threshold: 0.3, target_fpr: 0.5, confusion_matrix: { tp: 0, fp: 0, tn: 2, fn: 0 } });
  assert.throws(() => assembleMetrics({ images: good, pixels: null, failed: [], model: {}, modelName: 'model "x"' }), (err: Error) =>
    err instanceof UserError && /model "x" has no held-out good images/.test(err.message));
});

test('readGroundTruth: the mask over the whole image through a byte reader; zeros for good; null without a mask; a bad mask is reported', async () => {
  const root = defaultDatasetDir('bottle');
  const read = localReader(root);
  const ds = listMvtecDataset(root, { test: true });
  const defect = ds.test.find((t) => t.defectType === 'broken_large')!;
  const { frame } = toModelInput(await decodeImage(await read(defect.path), defect.path), { resize: 256, crop: 224 });
  const truth = await readGroundTruth(defect, frame, read);
  // Over the whole image at the resized resolution (256x256), not only the 224 crop the model sees.
  assert.equal(truth.mask!.length, 256 * 256);
  assert.ok(truth.mask!.some((v) => v === 1) && truth.mask!.some((v) => v === 0));
  const good = ds.test.find((t) => t.label === 0)!;
  assert.deepEqual(await readGroundTruth(good, frame, read), { mask: new Uint8Array(256 * 256) });
  assert.deepEqual(await readGroundTruth({ ...defect, maskPath: null }, frame, read), { mask: null });
  const broken = await readGroundTruth(defect, frame, async () => Buffer.from('not a png'));
  assert.equal(broken.mask, null);
  assert.equal(broken.failed!.id, join('ground_truth', 'broken_large', '000_mask.png'));
  await assert.rejects(readGroundTruth(defect, frame, async () => { throw new Error('storage down'); }), /storage down/);
});
