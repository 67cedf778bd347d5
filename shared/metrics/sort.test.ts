import { test } from 'node:test';
import assert from 'node:assert/strict';
import { argsortDescending } from './sort.js';

/** Reference: V8's Array.prototype.sort is stable, so ties keep index order. */
function referenceArgsort(scores: Float32Array): number[] {
  const idx = Array.from(scores, (_, i) => i);
  return idx.sort((a, b) => scores[b] - scores[a]);
}

function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('small input: descending, ties keep original order', () => {
  // 3 (idx 1) and 3 (idx 3) tie and stay in index order, then 2, 1, -1.
  assert.deepEqual([...argsortDescending(Float32Array.of(1, 3, 2, 3, -1))], [1, 3, 2, 0, 4]);
});

test('-0 and +0 are equal, infinities sort at the ends', () => {
  assert.deepEqual([...argsortDescending(Float32Array.of(0, -0, 0, -0))], [0, 1, 2, 3]);
  assert.deepEqual([...argsortDescending(Float32Array.of(-0, 1e-30, -1e-30, 0))], [1, 0, 3, 2]);
  assert.deepEqual([...argsortDescending(Float32Array.of(-Infinity, 5, Infinity, -2.5, 0))], [2, 1, 4, 3, 0]);
});

test('empty and single inputs', () => {
  assert.equal(argsortDescending(new Float32Array(0)).length, 0);
  assert.deepEqual([...argsortDescending(Float32Array.of(-7))], [0]);
});

test('NaN is rejected with its index', () => {
  assert.throws(() => argsortDescending(Float32Array.of(1, NaN)), /scores\[1\] is NaN/);
});

test('works on a subarray view with a byte offset', () => {
  const base = Float32Array.of(9, 1, 4, 2);
  assert.deepEqual([...argsortDescending(base.subarray(1))], [1, 2, 0]);
});

test('matches Array.prototype.sort on random data with ties, negatives and signed zeros', () => {
  const rand = seededRandom(42);
  const n = 100_000;
  const scores = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rand();
    // A mix of few repeated levels (many ties), signed zeros and continuous values of both signs.
    if (r < 0.3) scores[i] = Math.floor(rand() * 20) - 10;
    else if (r < 0.35) scores[i] = rand() < 0.5 ? -0 : 0;
    else scores[i] = (rand() - 0.5) * 10 ** Math.floor(rand() * 12 - 6);
  }
  assert.deepEqual([...argsortDescending(scores)], referenceArgsort(scores));
});

test('matches Array.prototype.sort on arbitrary bit patterns (exercises every radix digit)', () => {
  const rand = seededRandom(7);
  const n = 50_000;
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    let u = Math.floor(rand() * 2 ** 32) >>> 0;
    if ((u & 0x7fffffff) > 0x7f800000) u &= 0xff7fffff; // NaN -> a finite pattern
    bits[i] = u;
  }
  // Duplicate some patterns so equal keys land in different positions.
  for (let i = 0; i < n; i += 97) bits[i] = bits[(i * 31) % n];
  const scores = new Float32Array(bits.buffer);
  assert.deepEqual([...argsortDescending(scores)], referenceArgsort(scores));
});
