import { test } from 'node:test';
import assert from 'node:assert/strict';
import { scoreStats } from './stats.js';

test('scoreStats: per-class summary with numpy-style linear quantiles', () => {
  const scores = [4, 10, 1, 5, 3, 2, 5];
  const classes = ['good', 'broken_large', 'good', 'contamination', 'good', 'good', 'contamination'];
  const s = scoreStats(scores, classes);
  assert.deepEqual(Object.keys(s), ['good', 'broken_large', 'contamination']);
  // good = 1,2,3,4: mean 2.5; deviations ±1.5, ±0.5 -> variance (2.25*2 + 0.25*2)/4 = 1.25.
  // Quantile positions q*(n-1): p25 at 0.75 -> 1.75; median at 1.5 -> 2.5; p75 at 2.25 -> 3.25.
  assert.deepEqual(s.good, {
    count: 4, mean: 2.5, std: Math.sqrt(1.25), min: 1, p25: 1.75, median: 2.5, p75: 3.25, max: 4,
  });
  assert.deepEqual(s.broken_large, { count: 1, mean: 10, std: 0, min: 10, p25: 10, median: 10, p75: 10, max: 10 });
  assert.deepEqual(s.contamination, { count: 2, mean: 5, std: 0, min: 5, p25: 5, median: 5, p75: 5, max: 5 });
});

test('scoreStats: odd count and typed input', () => {
  // 0, 10, 20: p25 at position 0.5 -> 5; median 10; p75 at 1.5 -> 15; std sqrt(200/3).
  const s = scoreStats(Float32Array.of(20, 0, 10), ['a', 'a', 'a']).a;
  assert.equal(s.p25, 5);
  assert.equal(s.median, 10);
  assert.equal(s.p75, 15);
  assert.ok(Math.abs(s.std - Math.sqrt(200 / 3)) < 1e-12);
});

test('scoreStats: empty input and errors', () => {
  assert.deepEqual(scoreStats([], []), {});
  assert.throws(() => scoreStats([1, 2], ['a']), /scores has 2 values but classes has 1/);
  assert.throws(() => scoreStats([1, NaN], ['a', 'b']), /scores\[1\] is NaN/);
});
