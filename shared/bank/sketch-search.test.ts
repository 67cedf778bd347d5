import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SketchSearch } from './sketch-search.js';
import { SeededRandom } from '../coreset/random.js';
import { referenceDir } from '../paths.js';

/** All (distance, index) pairs by brute force in float64, sorted, ties to the lower index. */
function naive(bank: Float32Array, queries: Float32Array, dim: number, k: number): { d: number[]; i: number[] }[] {
  const nb = bank.length / dim;
  const out: { d: number[]; i: number[] }[] = [];
  for (let q = 0; q < queries.length / dim; q++) {
    const all: [number, number][] = [];
    for (let b = 0; b < nb; b++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += (queries[q * dim + j] - bank[b * dim + j]) ** 2;
      all.push([s, b]);
    }
    all.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    out.push({ d: all.slice(0, k).map((x) => Math.sqrt(x[0])), i: all.slice(0, k).map((x) => x[1]) });
  }
  return out;
}

function referenceFeatures(name: string): Float32Array {
  const b = readFileSync(join(referenceDir(), `${name}.patchcore_features.f32`));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function check(bank: Float32Array, queries: Float32Array, dim: number, k: number, what: string): void {
  const s = SketchSearch.create(bank, bank.length / dim, dim);
  assert.ok(s, `${what}: searcher available`);
  const got = s.nearest(queries, queries.length / dim, k);
  const want = naive(bank, queries, dim, k);
  want.forEach((w, q) => {
    assert.deepEqual(Array.from(got.indices.subarray(q * k, (q + 1) * k)), w.i, `${what}: query ${q}`);
    for (let j = 0; j < k; j++) assert.ok(Math.abs(got.distances[q * k + j] - w.d[j]) <= 1e-6 * w.d[j] + 1e-6, `${what}: query ${q} distance ${j}`);
  });
}

test('exact on real bottle features: the nearest training patch of every test patch (k = 1 and 3)', () => {
  // 784 rows of one training image, queried with 120 patches of a defective test image.
  const bank = referenceFeatures('train_good_000');
  const queries = referenceFeatures('test_broken_large_000').subarray(0, 120 * 1024);
  check(bank, queries, 1024, 1, 'k=1');
  check(bank, queries.subarray(0, 30 * 1024), 1024, 3, 'k=3');
});

test('exact on structured random data, bank sizes that are not multiples of four, duplicate rows tie low', () => {
  const r = new SeededRandom(3);
  for (const [count, dim] of [[601, 64], [1003, 256]] as const) {
    // Anisotropic rows with a few tight clusters, so the sketch prunes hard.
    const bank = Float32Array.from({ length: count * dim }, (_, i) => r.gaussian() * (4 / (1 + (i % dim))) + ((i / dim) % 5 === 0 ? 3 : 0));
    bank.copyWithin(500 * dim, 7 * dim, 8 * dim); // row 500 := row 7
    const queries = Float32Array.from({ length: 40 * dim }, (_, i) => r.gaussian() * (4 / (1 + (i % dim))));
    queries.set(bank.subarray(7 * dim, 8 * dim), 0); // query 0 sits on rows 7 and 500
    check(bank, queries, dim, 1, `${count}x${dim}`);
    check(bank, queries.subarray(0, 10 * dim), dim, 2, `${count}x${dim} k=2`);
  }
});

test('a NaN query makes the bounds useless: it falls back to brute force (no finite answer), the others are exact', () => {
  const dim = 64;
  const r = new SeededRandom(8);
  const bank = Float32Array.from({ length: 300 * dim }, () => r.gaussian());
  const queries = Float32Array.from({ length: 5 * dim }, () => r.gaussian());
  queries[3] = Number.NaN; // query 0
  const s = SketchSearch.create(bank, 300, dim)!;
  const got = s.nearest(queries, 5, 1);
  const want = naive(bank, queries.subarray(dim), dim, 1);
  assert.equal(got.distances[0], Infinity);
  for (let q = 1; q < 5; q++) assert.equal(got.indices[q], want[q - 1].i[0]);
});

test('dims the kernels cannot take give null (callers use brute force)', () => {
  assert.equal(SketchSearch.create(new Float32Array(40 * 24), 40, 24), null);
  assert.equal(SketchSearch.create(new Float32Array(40 * 48), 40, 48), null);
});
