import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from './random.js';

test('same seed gives the same stream, different seeds differ', () => {
  const a = new SeededRandom(7);
  const b = new SeededRandom(7);
  const c = new SeededRandom(8);
  const sa = Array.from({ length: 20 }, () => a.uint32());
  const sb = Array.from({ length: 20 }, () => b.uint32());
  const sc = Array.from({ length: 20 }, () => c.uint32());
  assert.deepEqual(sa, sb);
  assert.notDeepEqual(sa, sc);
  // Seed 0 must not leave the generator stuck at zero.
  const z = new SeededRandom(0);
  assert.ok(Array.from({ length: 4 }, () => z.uint32()).some((v) => v !== 0));
});

test('float is in [0, 1) with mean near 1/2; gaussian has mean 0 and variance 1', () => {
  const r = new SeededRandom(1);
  const n = 200_000;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const u = r.float();
    assert.ok(u >= 0 && u < 1);
    sum += u;
  }
  assert.ok(Math.abs(sum / n - 0.5) < 0.005);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const g = r.gaussian();
    s1 += g;
    s2 += g * g;
  }
  assert.ok(Math.abs(s1 / n) < 0.01, `mean ${s1 / n}`);
  assert.ok(Math.abs(s2 / n - 1) < 0.02, `variance ${s2 / n}`);
});

test('sampleWithoutReplacement returns distinct in-range values, sparse and dense', () => {
  const r = new SeededRandom(3);
  for (const [n, k] of [[1000, 10], [10, 10], [12, 9], [5, 0]] as const) {
    const s = r.sampleWithoutReplacement(n, k);
    assert.equal(s.length, k);
    assert.equal(new Set(s).size, k);
    for (const v of s) assert.ok(v < n);
  }
  assert.throws(() => r.sampleWithoutReplacement(3, 4), /k must be an integer in \[0, 3\]/);
  assert.throws(() => new SeededRandom(1.5), /seed must be a finite integer/);
});
