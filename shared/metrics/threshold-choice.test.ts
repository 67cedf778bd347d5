import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseThreshold, describeThresholdRule, thresholdAtFpr } from './threshold.js';

const fprAt = (good: number[], t: number) => good.filter((s) => s >= t).length / good.length;

test('thresholdAtFpr: hand cases', () => {
  const good = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  // 10% allows one flagged image: 10 alone (FPR 0.1); 9 would flag two.
  assert.equal(thresholdAtFpr(good, 0.1), 10);
  assert.equal(thresholdAtFpr(good, 0.25), 9); // 0.3 at 8 is too many
  assert.equal(thresholdAtFpr(good, 0.3), 8);
  assert.equal(thresholdAtFpr(good, 1), 1); // everything may be flagged: the lowest score
  // Order of the input does not matter.
  assert.equal(thresholdAtFpr([5, 3, 9, 1, 7], 0.4), 7);
});

test('thresholdAtFpr: target 0 and ties flag no good image', () => {
  const t0 = thresholdAtFpr([1, 2, 3], 0);
  assert.ok(t0 > 3 && t0 - 3 < 1e-12, `threshold ${t0} should sit just above 3`);
  assert.equal(fprAt([1, 2, 3], t0), 0);
  // Two images tie at the top: 4 flags both (FPR 0.5 > 0.25), so the threshold goes above them.
  const tied = [1, 2, 4, 4];
  const t = thresholdAtFpr(tied, 0.25);
  assert.ok(t > 4 && fprAt(tied, t) === 0);
  assert.equal(thresholdAtFpr(tied, 0.5), 4);
  const negative = thresholdAtFpr([-2, -1], 0);
  assert.ok(negative > -1 && negative < -1 + 1e-12);
  assert.ok(thresholdAtFpr([0, 0], 0) > 0);
});

test('thresholdAtFpr: the result is the smallest observed score meeting the target', () => {
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const good = Array.from({ length: 200 }, () => Math.round(rand() * 50) / 10);
  for (const target of [0, 0.01, 0.05, 0.1, 0.5, 0.99]) {
    const t = thresholdAtFpr(good, target);
    assert.ok(fprAt(good, t) <= target, `FPR at ${t} exceeds ${target}`);
    const lower = good.filter((s) => s < t);
    if (lower.length > 0) assert.ok(fprAt(good, Math.max(...lower)) > target, `a lower score also meets ${target}`);
  }
});

test('thresholdAtFpr: bad input names the argument', () => {
  assert.throws(() => thresholdAtFpr([], 0.1), /goodScores is empty/);
  assert.throws(() => thresholdAtFpr([1, NaN], 0.1), /goodScores\[1\] is NaN/);
  assert.throws(() => thresholdAtFpr([1, 2], 1.5), /targetFpr must be a number in \[0, 1\], got 1.5/);
  assert.throws(() => thresholdAtFpr([1, 2], -0.1), /targetFpr/);
});

test('chooseThreshold: F1-max with labels, target FPR on good validation scores otherwise', () => {
  const scores = Float32Array.from([0.1, 0.2, 0.3, 0.8, 0.9]);
  const labels = Uint8Array.from([0, 0, 0, 1, 1]);
  assert.deepEqual(chooseThreshold({ scores, labels }), { threshold: Math.fround(0.8), rule: 'f1-max' });
  const onlyGood = Uint8Array.from([0, 0, 0, 0, 0]);
  const choice = chooseThreshold({ scores, labels: onlyGood, goodValidationScores: [1, 2, 3, 4], targetFpr: 0.25 });
  assert.deepEqual(choice, { threshold: 4, rule: 'target-fpr', targetFpr: 0.25 });
  assert.throws(() => chooseThreshold({ scores, labels: onlyGood }), /no labelled test set/);
  assert.equal(describeThresholdRule({ threshold: 1, rule: 'f1-max' }), 'F1-max on labelled test set');
  assert.equal(describeThresholdRule(choice), 'target FPR 25% on good validation images');
  assert.equal(describeThresholdRule({ threshold: 1, rule: 'target-fpr', targetFpr: 0.01 }), 'target FPR 1% on good validation images');
});
