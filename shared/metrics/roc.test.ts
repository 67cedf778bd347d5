import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rocAuc, rocCurve } from './roc.js';

const f = Math.fround;

function assertClose(actual: number, expected: number, tol = 1e-12): void {
  assert.ok(Math.abs(actual - expected) <= tol, `expected ${expected}, got ${actual}`);
}

/** O(P*N) pair counting: a positive above a negative counts 1, a tie counts 1/2. */
function bruteForceAuc(scores: Float32Array, labels: Uint8Array): number {
  let wins = 0;
  let pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (scores[i] > scores[j]) wins += 1;
      else if (scores[i] === scores[j]) wins += 0.5;
    }
  }
  return wins / pairs;
}

test('rocAuc: no ties', () => {
  // Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4; lost: 0.35<0.4 -> 3/4.
  assertClose(rocAuc(Float32Array.of(0.1, 0.4, 0.35, 0.8), Uint8Array.of(0, 0, 1, 1)), 0.75);
});

test('rocAuc: tied positive and negative scores count one half', () => {
  // Positives 0.9, 0.5; negatives 0.5, 0.5, 0.1. 0.9 beats all 3 (3); 0.5 ties two negatives (2 x 0.5)
  // and beats 0.1 (1) -> 5 of 6 pairs.
  const scores = Float32Array.of(0.9, 0.5, 0.5, 0.5, 0.1);
  const labels = Uint8Array.of(1, 1, 0, 0, 0);
  assertClose(rocAuc(scores, labels), 5 / 6);
});

test('rocAuc: all scores equal gives 1/2; perfect gives 1; inverted gives 0', () => {
  assertClose(rocAuc(Float32Array.of(2, 2, 2, 2), Uint8Array.of(1, 0, 0, 1)), 0.5);
  assertClose(rocAuc(Float32Array.of(0.1, 0.2, 0.8, 0.9), Uint8Array.of(0, 0, 1, 1)), 1);
  assertClose(rocAuc(Float32Array.of(-0.1, -0.2, -0.8, -0.9), Uint8Array.of(0, 0, 1, 1)), 0);
});

test('rocAuc matches brute-force pair counting on random data with ties', () => {
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const n = 3000;
  const scores = new Float32Array(n);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = rand() < 0.3 ? 1 : 0;
    // Quantised scores with a class-dependent shift: plenty of cross-class ties.
    scores[i] = Math.round((rand() + 0.4 * labels[i]) * 50) / 50 - 0.5;
  }
  assertClose(rocAuc(scores, labels), bruteForceAuc(scores, labels), 1e-12);
});

test('rocAuc: clear errors', () => {
  assert.throws(() => rocAuc(Float32Array.of(1, 2), Uint8Array.of(1, 1)), /rocAuc: labels contain only one class/);
  assert.throws(() => rocAuc(Float32Array.of(1, 2), Uint8Array.of(0, 0)), /only one class/);
  assert.throws(() => rocAuc(Float32Array.of(1, 2, 3), Uint8Array.of(0, 1)), /scores has 3 values but labels has 2/);
  assert.throws(() => rocAuc(Float32Array.of(1, 2), Uint8Array.of(0, 255)), /labels\[1\] is 255/);
});

test('rocCurve: one point per distinct score plus the start', () => {
  // P = 2, N = 3. Thresholds: +inf (0,0); 0.9 -> tp 1, fp 0 (0, 1/2); 0.5 -> tp 2, fp 2 (2/3, 1);
  // 0.1 -> tp 2, fp 3 (1, 1).
  const curve = rocCurve(Float32Array.of(0.9, 0.5, 0.5, 0.5, 0.1), Uint8Array.of(1, 1, 0, 0, 0));
  assert.deepEqual(curve.fpr, [0, 0, 2 / 3, 1]);
  assert.deepEqual(curve.tpr, [0, 0.5, 1, 1]);
  assert.deepEqual(curve.thresholds, [Infinity, f(0.9), f(0.5), f(0.1)]);
});

test('rocCurve: maxPoints decimates evenly and keeps the end points', () => {
  // 4 distinct scores -> 5 points; 3 points keep indices 0, 2, 4.
  const scores = Float32Array.of(4, 3, 2, 1);
  const labels = Uint8Array.of(1, 0, 1, 0);
  const full = rocCurve(scores, labels);
  assert.equal(full.fpr.length, 5);
  const small = rocCurve(scores, labels, 3);
  assert.deepEqual(small.fpr, [full.fpr[0], full.fpr[2], full.fpr[4]]);
  assert.deepEqual(small.tpr, [full.tpr[0], full.tpr[2], full.tpr[4]]);
  assert.deepEqual(small.thresholds, [Infinity, 3, 1]);
  assert.deepEqual(rocCurve(scores, labels, 10), full); // already small enough
  assert.throws(() => rocCurve(scores, labels, 1), /maxPoints must be an integer >= 2/);
});

test('rocCurve: decimation of a long curve is monotone with exact length', () => {
  const n = 1000;
  const scores = new Float32Array(n);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    scores[i] = i;
    labels[i] = i % 3 === 0 ? 1 : 0;
  }
  const c = rocCurve(scores, labels, 50);
  assert.equal(c.fpr.length, 50);
  assert.equal(c.fpr[0], 0);
  assert.equal(c.fpr[49], 1);
  assert.equal(c.tpr[49], 1);
  for (let k = 1; k < 50; k++) assert.ok(c.thresholds[k] < c.thresholds[k - 1] && c.fpr[k] >= c.fpr[k - 1]);
});
