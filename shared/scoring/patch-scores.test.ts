import { test } from 'node:test';
import assert from 'node:assert/strict';
import { imageScore, patchScores } from './patch-scores.js';
import { MemoryBank } from '../bank/memory-bank.js';

test('patch scores are Euclidean distances to the nearest bank entry, exact and through HNSW', () => {
  const bank = new MemoryBank(2, 3, Float32Array.from([0, 0, 3, 4, 10, 0]));
  const features = Float32Array.from([0, 1, 3, 0, 9, 0, 3, 4]);
  assert.deepEqual(Array.from(patchScores(bank, features, { exact: true })), [1, 3, 1, 0]);
  bank.buildHnsw({}, { force: true });
  assert.deepEqual(Array.from(patchScores(bank, features)), [1, 3, 1, 0]);
  assert.throws(() => patchScores(bank, new Float32Array(3)), /features has 3 values, not a multiple of the bank dim 2/);
});

test('image score is the maximum patch score', () => {
  assert.equal(imageScore(Float32Array.from([0.5, 2.25, 1])), 2.25);
  assert.throws(() => imageScore(new Float32Array(0)), /scores is empty/);
});

test('re-weighting follows PatchCore eq. 7 on a hand case', () => {
  // 1-d bank {0, 1, 3, 10}; patches 0.5 and 2.2. The worst patch is 2.2 (s* = 0.8, m* = 3).
  // Bank neighbours of m* = 3: 3 (itself), 1, 0 -> distances from 2.2: 0.8, 1.2, 2.2.
  const bank = new MemoryBank(1, 4, Float32Array.from([0, 1, 3, 10]));
  const features = Float32Array.from([0.5, 2.2]);
  const scores = patchScores(bank, features, { exact: true });
  assert.ok(Math.abs(scores[1] - 0.8) < 1e-6);
  const e = Math.exp;
  const s3 = imageScore(scores, { reweight: { bank, features, dim: 1, neighbours: 3 } });
  assert.ok(Math.abs(s3 - (1 - e(0.8) / (e(0.8) + e(1.2) + e(2.2))) * scores[1]) < 1e-6, `b=3: ${s3}`);
  const s2 = imageScore(scores, { reweight: { bank, features, dim: 1, neighbours: 2 } });
  assert.ok(Math.abs(s2 - (1 - e(0.8) / (e(0.8) + e(1.2))) * scores[1]) < 1e-6, `b=2: ${s2}`);
  // b larger than the bank uses the whole bank; b = 1 leaves the score as it is (as anomalib does).
  const all = imageScore(scores, { reweight: { bank, features, dim: 1, neighbours: 50 } });
  assert.ok(Math.abs(all - (1 - e(0.8) / (e(0.8) + e(1.2) + e(2.2) + e(7.8))) * scores[1]) < 1e-6, `b=50: ${all}`);
  assert.equal(imageScore(scores, { reweight: { bank, features, dim: 1, neighbours: 1 } }), scores[1]);
});

test('re-weighting lowers a match in a dense region more than an isolated one', () => {
  // Same s* = 1 for both test patches; m* = 10 has close neighbours, m* = 100 has none.
  const bank = new MemoryBank(1, 6, Float32Array.from([10, 10.5, 11, 100, 200, 300]));
  const dense = imageScore(Float32Array.from([1]), { reweight: { bank, features: Float32Array.from([9]), dim: 1, neighbours: 3 } });
  const isolated = imageScore(Float32Array.from([1]), { reweight: { bank, features: Float32Array.from([101]), dim: 1, neighbours: 3 } });
  assert.ok(dense < isolated, `${dense} vs ${isolated}`);
  assert.ok(isolated > 0.99 && isolated <= 1);
});

test('re-weighting checks its inputs', () => {
  const bank = new MemoryBank(1, 2, Float32Array.from([0, 1]));
  const scores = Float32Array.from([1, 2]);
  assert.throws(() => imageScore(scores, { reweight: { bank, features: new Float32Array(2), dim: 2, neighbours: 3 } }), /reweight dim 2 differs from the bank dim 1/);
  assert.throws(() => imageScore(scores, { reweight: { bank, features: new Float32Array(3), dim: 1, neighbours: 3 } }), /features has 3 values, expected scores x dim = 2 x 1 = 2/);
  assert.throws(() => imageScore(scores, { reweight: { bank, features: new Float32Array(2), dim: 1, neighbours: 0 } }), /neighbours must be a positive integer, got 0/);
});
