import { test } from 'node:test';
import assert from 'node:assert/strict';
import { confusionAt, f1Max } from './threshold.js';

const f = Math.fround;

test('f1Max: picks the best distinct threshold', () => {
  // P = 3, N = 3. F1 = 2tp / (2tp + fp + fn):
  //   0.9: tp 1 fp 0 fn 2 -> 2/5;  0.8: tp 2 fp 1 fn 1 -> 4/6;  0.6: tp 3 fp 1 fn 0 -> 6/7;  0.3: tp 3 fp 3 -> 6/9.
  const r = f1Max(Float32Array.of(0.9, 0.8, 0.8, 0.6, 0.3, 0.3), Uint8Array.of(1, 1, 0, 1, 0, 0));
  assert.ok(Math.abs(r.f1 - 6 / 7) < 1e-12);
  assert.equal(r.threshold, f(0.6));
  assert.equal(r.precision, 0.75);
  assert.equal(r.recall, 1);
  assert.deepEqual(r.confusion, { tp: 3, fp: 1, tn: 2, fn: 0 });
});

test('f1Max: a positive tied with a negative cannot be split', () => {
  // P = 2. 0.9: tp 1 fp 0 fn 1 -> 2/3; 0.8 (one positive and one negative together): tp 2 fp 1 -> 4/5;
  // 0.3: tp 2 fp 2 -> 4/6. Splitting the tie would wrongly give tp 2 fp 0 -> F1 1.
  const r = f1Max(Float32Array.of(0.9, 0.8, 0.8, 0.3), Uint8Array.of(1, 0, 1, 0));
  assert.ok(Math.abs(r.f1 - 0.8) < 1e-12);
  assert.equal(r.threshold, f(0.8));
  assert.ok(Math.abs(r.precision - 2 / 3) < 1e-12);
  assert.equal(r.recall, 1);
  assert.deepEqual(r.confusion, { tp: 2, fp: 1, tn: 1, fn: 0 });
});

test('f1Max: equal F1 keeps the higher threshold', () => {
  // 0.9: tp 1 fp 0 fn 1 -> 2/3; 0.5: 2/4; 0.4: tp 1 fp 2 fn 1 -> 2/5; 0.3: tp 2 fp 2 -> 4/6 = 2/3.
  const r = f1Max(Float32Array.of(0.9, 0.5, 0.4, 0.3), Uint8Array.of(1, 0, 0, 1));
  assert.equal(r.threshold, f(0.9));
  assert.deepEqual(r.confusion, { tp: 1, fp: 0, tn: 2, fn: 1 });
});

test('f1Max: all anomalous is allowed (F1 1 at the lowest score)', () => {
  const r = f1Max(Float32Array.of(3, 1, 2), Uint8Array.of(1, 1, 1));
  assert.equal(r.f1, 1);
  assert.equal(r.threshold, 1);
});

test('f1Max: clear errors', () => {
  assert.throws(() => f1Max(Float32Array.of(1, 2), Uint8Array.of(0, 0)), /f1Max: labels contain no anomalous/);
  assert.throws(() => f1Max(Float32Array.of(1, 2), Uint8Array.of(0)), /f1Max: scores has 2 values but labels has 1/);
  assert.throws(() => f1Max(Float32Array.of(1, 2), Uint8Array.of(0, 2)), /labels\[1\] is 2/);
});

test('confusionAt: score >= threshold is anomalous', () => {
  const scores = Float32Array.of(0.9, 0.8, 0.8, 0.3);
  const labels = Uint8Array.of(1, 1, 0, 0);
  assert.deepEqual(confusionAt(scores, labels, f(0.8)), { tp: 2, fp: 1, tn: 1, fn: 0 });
  assert.deepEqual(confusionAt(scores, labels, 0.85), { tp: 1, fp: 0, tn: 2, fn: 1 });
  assert.deepEqual(confusionAt(scores, labels, Infinity), { tp: 0, fp: 0, tn: 2, fn: 2 });
  assert.throws(() => confusionAt(scores, labels, NaN), /threshold is NaN/);
  assert.throws(() => confusionAt(scores, Uint8Array.of(1), 0.5), /confusionAt: scores has 4 values/);
});
