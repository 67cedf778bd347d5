import { test } from 'node:test';
import assert from 'node:assert/strict';
import { coresetTarget, greedyCoreset, randomProjection, type GreedyCoresetStats } from './greedy.js';
import { SeededRandom } from './random.js';

/** The textbook loop the pruned implementation must reproduce exactly. */
function plainGreedy(points: Float32Array, n: number, d: number, target: number, starts: Uint32Array): number[] {
  const dist = (a: number, b: number): number => {
    let s = 0;
    for (let j = 0; j < d; j++) {
      const e = points[a * d + j] - points[b * d + j];
      s += e * e;
    }
    return Math.sqrt(s);
  };
  const val = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const st of starts) s += dist(i, st);
    val[i] = s / starts.length;
  }
  const out: number[] = [];
  for (let t = 0; t < target; t++) {
    let p = 0;
    for (let i = 1; i < n; i++) if (val[i] > val[p]) p = i;
    out.push(p);
    for (let i = 0; i < n; i++) val[i] = Math.min(val[i], dist(i, p));
    val[p] = -1;
  }
  return out;
}

/** `clusters` Gaussian blobs of different spreads in `dim` dimensions, points interleaved. */
function blobs(n: number, dim: number, clusters: number, seed: number, separation = 6): Float32Array {
  const r = new SeededRandom(seed);
  const f = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const c = i % clusters;
    for (let j = 0; j < dim; j++) {
      f[i * dim + j] = r.gaussian() * (0.2 + 0.1 * c) + (j % clusters === c ? separation : 0);
    }
  }
  return f;
}

test('points on a line are picked in the hand-computed farthest-first order', () => {
  // 0..10 on a line, every point a start point: the mean distance is largest at the ends (tie ->
  // index 0), then 10, then 3 and 7 (distance 3 each, below their mean of 3.09), then 5, then the
  // rest, all at distance 1, by index.
  const line = Float32Array.from({ length: 11 }, (_, i) => i);
  const sel = greedyCoreset(line, 11, 1, { target: 11, startPoints: 11 });
  assert.deepEqual(Array.from(sel), [0, 10, 3, 7, 5, 1, 2, 4, 6, 8, 9]);
});

test('k well separated clusters give one point from each, with and without projection', () => {
  for (const dim of [8, 300]) {
    const n = 200;
    const clusters = 4;
    const f = blobs(n, dim, clusters, 11);
    for (const seed of [0, 1, 2]) {
      const sel = greedyCoreset(f, n, dim, { target: clusters, seed });
      assert.deepEqual(
        Array.from(sel, (i) => i % clusters).sort(),
        [0, 1, 2, 3],
        `dim ${dim} seed ${seed}: ${Array.from(sel)}`,
      );
    }
  }
});

test('selection equals the plain O(N*k*d) loop, on raw and on projected features', () => {
  const n = 1500;
  const dim = 24;
  const f = blobs(n, dim, 7, 5, 3);
  const target = 200;
  // dim <= projectionDim: no projection, features used as they are.
  const raw = greedyCoreset(f, n, dim, { target, seed: 3 });
  const rawStarts = new SeededRandom(3).sampleWithoutReplacement(n, 10);
  assert.deepEqual(Array.from(raw), plainGreedy(f, n, dim, target, rawStarts));
  // dim > projectionDim: the same seeded stream draws the projection first, then the start points.
  const projected = greedyCoreset(f, n, dim, { target, seed: 3, projectionDim: 6 });
  const rng = new SeededRandom(3);
  const pts = randomProjection(f, n, dim, 6, rng);
  const starts = rng.sampleWithoutReplacement(n, 10);
  assert.deepEqual(Array.from(projected), plainGreedy(pts, n, 6, target, starts));
  assert.notDeepEqual(Array.from(projected), Array.from(raw));
});

test('SIMD kernels (with sketches) and JS loops both select exactly what the plain loop selects', () => {
  // d = 64 and 128 use two 16-float sketch stages, 40 one stage, 24 none; 300 -> 64 projects first.
  const n = 1200;
  const target = 150;
  for (const [dim, projectionDim] of [[64, 128], [128, 128], [40, 128], [300, 64]] as const) {
    const f = blobs(n, dim, 6, dim, 1);
    const rng = new SeededRandom(4);
    const pts = dim > projectionDim ? randomProjection(f, n, dim, projectionDim, rng) : f;
    const d = Math.min(dim, projectionDim);
    const want = plainGreedy(pts, n, d, target, rng.sampleWithoutReplacement(n, 10));
    for (const simd of [true, false]) {
      const got = greedyCoreset(f, n, dim, { target, seed: 4, projectionDim, simd });
      assert.deepEqual(Array.from(got), want, `dim ${dim} -> ${d}, simd ${simd}`);
    }
  }
});

test('whole-point steps and list steps together select what the plain loop selects (point count not a multiple of four)', () => {
  const n = 1003;
  const target = 400;
  const f = blobs(n, 64, 5, 11, 2);
  const rng = new SeededRandom(2);
  const want = plainGreedy(f, n, 64, target, rng.sampleWithoutReplacement(n, 10));
  for (const simd of [true, false]) {
    const stats = {} as GreedyCoresetStats;
    const got = greedyCoreset(f, n, 64, { target, seed: 2, simd, stats });
    assert.deepEqual(Array.from(got), want, `simd ${simd}`);
    assert.equal(stats.steps, target);
    assert.ok(stats.fullScans > 0 && stats.fullScans < target, `both kinds of step ran (${stats.fullScans} whole-point of ${target})`);
    assert.ok(stats.distanceEvaluations < n * target, 'the pruning saved distance evaluations');
  }
});

test('the projection is skipped when dim <= projectionDim', () => {
  const n = 300;
  const f = blobs(n, 16, 3, 9, 2);
  const a = greedyCoreset(f, n, 16, { ratio: 0.1, projectionDim: 16 });
  const b = greedyCoreset(f, n, 16, { ratio: 0.1, projectionDim: 128 });
  const c = greedyCoreset(f, n, 16, { ratio: 0.1, projectionDim: 8 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('randomProjection preserves distances roughly (Johnson-Lindenstrauss scale)', () => {
  const n = 40;
  const dim = 512;
  const r = new SeededRandom(4);
  const f = Float32Array.from({ length: n * dim }, () => r.gaussian());
  const p = randomProjection(f, n, dim, 128, new SeededRandom(0));
  let ratioSum = 0;
  let pairs = 0;
  for (let a = 0; a < n; a++) {
    for (let b = a + 1; b < n; b++) {
      let d0 = 0;
      let d1 = 0;
      for (let j = 0; j < dim; j++) d0 += (f[a * dim + j] - f[b * dim + j]) ** 2;
      for (let j = 0; j < 128; j++) d1 += (p[a * 128 + j] - p[b * 128 + j]) ** 2;
      const ratio = Math.sqrt(d1 / d0);
      assert.ok(ratio > 0.7 && ratio < 1.3, `pair ${a},${b}: ratio ${ratio}`);
      ratioSum += ratio;
      pairs++;
    }
  }
  assert.ok(Math.abs(ratioSum / pairs - 1) < 0.05);
});

test('same seed gives the same selection; another seed a different one', () => {
  const n = 2000;
  const dim = 200;
  const f = blobs(n, dim, 5, 2, 1);
  const a = greedyCoreset(f, n, dim, { ratio: 0.05, seed: 1 });
  const b = greedyCoreset(f, n, dim, { ratio: 0.05, seed: 1 });
  const c = greedyCoreset(f, n, dim, { ratio: 0.05, seed: 2 });
  assert.equal(a.length, 100);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('indices are distinct even when points repeat', () => {
  const f = new Float32Array(10 * 3).fill(1);
  const sel = greedyCoreset(f, 10, 3, { ratio: 1 });
  assert.deepEqual(Array.from(sel).sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('progress is reported in order and ends at the target', () => {
  const n = 500;
  const f = blobs(n, 4, 2, 1);
  const seen: number[] = [];
  greedyCoreset(f, n, 4, { target: 250, onProgress: (done, total) => {
    assert.equal(total, 250);
    seen.push(done);
  } });
  assert.equal(seen.at(-1), 250);
  assert.ok(seen.length >= 100 && seen.length <= 130, `${seen.length} reports`);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1]);
});

test('target from ratio rounds, is at least 1, and target wins over ratio', () => {
  assert.equal(coresetTarget(164_000, { ratio: 0.1 }), 16_400);
  assert.equal(coresetTarget(15, { ratio: 0.1 }), 2);
  assert.equal(coresetTarget(4, { ratio: 0.1 }), 1);
  assert.equal(coresetTarget(100, { ratio: 0.1, target: 7 }), 7);
  assert.equal(coresetTarget(100, { ratio: 1 }), 100);
});

test('bad arguments give errors naming what is wrong', () => {
  const f = new Float32Array(20);
  assert.throws(() => greedyCoreset(f, 10, 2, { ratio: 0 }), /ratio must be in \(0, 1\], got 0/);
  assert.throws(() => greedyCoreset(f, 10, 2, { ratio: 1.5 }), /ratio must be in \(0, 1\], got 1.5/);
  assert.throws(() => greedyCoreset(f, 10, 2, { ratio: Number.NaN }), /ratio must be in/);
  assert.throws(() => greedyCoreset(f, 10, 2, {}), /either a ratio or a target/);
  assert.throws(() => greedyCoreset(f, 10, 2, { target: 11 }), /target 11 exceeds the number of features \(10\)/);
  assert.throws(() => greedyCoreset(f, 10, 2, { target: 0 }), /target must be a positive integer, got 0/);
  assert.throws(() => greedyCoreset(f, 10, 2, { target: 2.5 }), /target must be a positive integer/);
  assert.throws(() => greedyCoreset(f, 11, 2, { target: 1 }), /features has 20 values, expected count x dim = 11x2 = 22/);
  assert.throws(() => greedyCoreset(f, 10, 2, { target: 1, projectionDim: 0 }), /projectionDim must be a positive integer/);
  assert.throws(() => greedyCoreset(f, 10, 2, { target: 1, startPoints: 0 }), /startPoints must be a positive integer/);
  assert.throws(() => greedyCoreset(f, 0, 2, { target: 1 }), /count must be a positive integer/);
});

test('two and three threads select exactly what one thread selects, with the same work counters', () => {
  // Enough points that most early steps are whole-point steps, which the threads split; a count
  // that is not a multiple of four or of the chunk size; projected, so the projection is split too.
  const n = 6002;
  const dim = 160;
  const f = blobs(n, dim, 9, 21, 1.5);
  const target = 600;
  const rng = new SeededRandom(8);
  const pts = randomProjection(f, n, dim, 64, rng);
  const want = plainGreedy(pts, n, 64, target, rng.sampleWithoutReplacement(n, 10));
  let oneStats: GreedyCoresetStats | null = null;
  for (const threads of [1, 2, 3]) {
    const stats = {} as GreedyCoresetStats;
    const got = greedyCoreset(f, n, dim, { target, seed: 8, projectionDim: 64, threads, stats });
    assert.deepEqual(Array.from(got), want, `threads ${threads}`);
    assert.ok(stats.fullScans > 0, `threads ${threads}: whole-point steps ran`);
    if (oneStats) assert.deepEqual(stats, oneStats, `threads ${threads}: the same work`);
    else oneStats = stats;
  }
  assert.throws(() => greedyCoreset(f, n, dim, { target, threads: 0 }), /threads must be an integer from 1 to 64, got 0/);
});

test('int16 sketch heads keep the selection exact when a few far outliers stretch the quantisation step', () => {
  // The head step is the largest sketch coordinate / 2047: outliers 10^4 away make it coarse, so
  // the head test prunes little but must never drop a point the exact loop would move.
  const n = 3001;
  const dim = 64;
  const f = blobs(n, dim, 6, 31, 1);
  for (let i = 0; i < n; i += 1000) for (let j = 0; j < dim; j++) f[i * dim + j] += j % 2 === 0 ? 1e4 : -1e4;
  const target = 300;
  const rng = new SeededRandom(5);
  const want = plainGreedy(f, n, dim, target, rng.sampleWithoutReplacement(n, 10));
  for (const threads of [1, 2]) {
    const stats = {} as GreedyCoresetStats;
    assert.deepEqual(Array.from(greedyCoreset(f, n, dim, { target, seed: 5, threads, stats })), want, `threads ${threads}`);
    assert.ok(stats.fullScans > 0, 'whole-point steps ran');
  }
});
