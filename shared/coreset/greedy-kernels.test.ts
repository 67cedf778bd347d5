import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createJsKernels, createSimdKernels, dist2, FILTER_MARGIN } from './greedy-kernels.js';
import { randomProjection } from './greedy.js';
import { SeededRandom } from './random.js';

function gaussian(n: number, seed: number, scale = 1): Float32Array {
  const r = new SeededRandom(seed);
  return Float32Array.from({ length: n }, () => r.gaussian() * scale);
}

test('SIMD exact distances equal the scalar float64 arithmetic bit for bit (every tail of the 4-row loop)', () => {
  for (const dim of [8, 64, 128]) {
    const n = 301;
    const k = createSimdKernels(n, dim, 10)!;
    assert.ok(k, 'Node 20 has WebAssembly SIMD');
    k.points.set(gaussian(n * dim, dim, 3));
    for (const count of [1, 2, 3, 4, 5, 7, 300]) {
      for (let i = 0; i < count; i++) k.candidates[i] = (i * 37 + 11) % n;
      k.exactDistances(count, 17);
      for (let i = 0; i < count; i++) {
        assert.equal(k.candidateD2[i], dist2(k.points, k.candidates[i] * dim, 17 * dim, dim), `dim ${dim} count ${count} i ${i}`);
      }
    }
  }
});

test('screened distances are exact, or +Infinity only where the point is provably no closer than its bound', () => {
  const n = 2000;
  const dim = 128;
  const k = createSimdKernels(n, dim, 10)!;
  // Anisotropic data, so the sketch carries most of each distance.
  const r = new SeededRandom(7);
  for (let i = 0; i < n * dim; i++) k.points[i] = r.gaussian() * (8 / (1 + (i % dim)));
  k.buildSketches();
  const p = 5;
  const exact = new Float64Array(n);
  for (let x = 0; x < n; x++) exact[x] = dist2(k.points, x * dim, p * dim, dim);
  // Bounds below, at and above the true distance.
  const factors = [0.2, 0.9, 0.999999, 1, 1.000001, 1.5, 10];
  for (let x = 0; x < n; x++) k.setPointBound(x, exact[x] * factors[x % factors.length]);
  for (let x = 0; x < n; x++) k.candidates[x] = x;
  k.screenedDistances(n, p);
  let screened = 0;
  for (let x = 0; x < n; x++) {
    const got = k.candidateD2[x];
    if (got === Infinity) {
      screened++;
      assert.ok(factors[x % factors.length] < 1, `point ${x} screened although its bound is not below its distance`);
    } else {
      assert.equal(got, exact[x], `point ${x}`);
    }
  }
  // Bounds at 0.2 and 0.9 of the distance are easy to rule out from the sketch.
  assert.ok(screened > 0.25 * n, `only ${screened} of ${n} screened`);
});

test('nearCentres reports every centre within twice its radius (SIMD and JS), with float32-accurate distances', () => {
  const n = 600;
  const dim = 64;
  const pts = gaussian(n * dim, 3);
  const simd = createSimdKernels(n, dim, 200)!;
  simd.points.set(pts);
  simd.buildSketches();
  const js = createJsKernels(pts, n, dim, 200);
  const p = 599;
  const r = new SeededRandom(9);
  const radius2 = new Float64Array(200);
  for (let c = 0; c < 200; c++) {
    const d2 = dist2(pts, c * dim, p * dim, dim);
    // Radii straddling the limit d^2 = 4 r^2; every tenth list empty.
    radius2[c] = c % 10 === 0 ? -1 : (d2 / 4) * (0.9 + 0.2 * r.float());
    for (const k of [simd, js]) {
      k.addCentre(c, c);
      k.setCentreRadius(c, radius2[c]);
    }
  }
  for (const k of [simd, js]) {
    const found = k.nearCentres(200, p, 3);
    const reported = new Map<number, number>();
    for (let i = 0; i < found; i++) reported.set(k.near[i], k.nearD2[i]);
    for (let c = 0; c < 200; c++) {
      const d2 = dist2(pts, c * dim, p * dim, dim);
      const mustReport = radius2[c] >= 0 && c !== 3 && d2 <= 4 * radius2[c];
      if (mustReport) assert.ok(reported.has(c), `${k.kind}: centre ${c} dropped`);
      if (radius2[c] < 0 || c === 3) assert.ok(!reported.has(c), `${k.kind}: empty or excluded centre ${c} reported`);
      if (reported.has(c)) {
        assert.ok(Math.abs(reported.get(c)! - d2) <= 1e-5 * d2, `${k.kind}: centre ${c} distance`);
        assert.ok(d2 <= 4 * radius2[c] * (1 + 2 * FILTER_MARGIN), `${k.kind}: far centre ${c} reported`);
      }
    }
    assert.ok(found > 30 && found < 170, `${k.kind}: ${found} reported`);
  }
});

test('SIMD projection equals the scalar randomProjection bit for bit (odd row count)', () => {
  const n = 131;
  const inDim = 96;
  const dim = 32;
  const f = gaussian(n * inDim, 4, 2);
  const want = randomProjection(f, n, inDim, dim, new SeededRandom(6));
  // randomProjection draws w[j][o] input-major; the same stream gives wT for projectInto.
  const rng = new SeededRandom(6);
  const wT = new Float32Array(inDim * dim);
  for (let j = 0; j < inDim; j++) for (let o = 0; o < dim; o++) wT[o * inDim + j] = rng.gaussian() / Math.sqrt(dim);
  const k = createSimdKernels(n, dim, 10, inDim)!;
  k.projectInto(f, inDim, wT);
  assert.deepEqual(k.points, want);
});

test('kernels refuse what they cannot do: dims not a multiple of 8', () => {
  assert.equal(createSimdKernels(10, 12, 2), null);
  assert.equal(createSimdKernels(10, 4, 2), null);
});

test('whole-point scan: the int16 head test never rules out a point the new centre brings closer (one and two threads)', () => {
  const n = 2003;
  const dim = 128;
  const r = new SeededRandom(12);
  const data = Float32Array.from({ length: n * dim }, (_, i) => r.gaussian() * (8 / (1 + (i % dim))));
  const p = 5;
  const exact = new Float64Array(n);
  for (let x = 0; x < n; x++) exact[x] = dist2(data, x * dim, p * dim, dim);
  // Distances bounded just above and below the distance to p: only the first kind may be ruled out.
  const factors = [0.5, 0.9, 0.999999, 1.000001, 1.0001, 1.1, 2];
  for (const threads of [1, 2]) {
    const k = createSimdKernels(n, dim, 10, 0, threads)!;
    try {
      k.points.set(data);
      k.buildSketches();
      for (let x = 0; x < n; x++) {
        k.val[x] = exact[x] * factors[x % factors.length];
        k.owner[x] = 0;
        k.setPointBound(x, k.val[x]);
      }
      k.val[p] = -1;
      k.skipBelow.fill(-Infinity);
      const moved = k.scanAll(n, p, 1);
      const movedSet = new Set(Array.from(k.movedIdx.subarray(0, moved)));
      for (let i = 1; i < moved; i++) assert.ok(k.movedIdx[i] > k.movedIdx[i - 1], 'moves in increasing order');
      for (let x = 0; x < n; x++) {
        if (x === p) continue;
        const closer = factors[x % factors.length] > 1;
        assert.equal(movedSet.has(x), closer, `threads ${threads}: point ${x} (bound ${factors[x % factors.length]} x its distance)`);
        if (closer) assert.equal(k.val[x], exact[x], `threads ${threads}: point ${x} gets its exact distance`);
        assert.equal(k.owner[x], closer ? 1 : 0);
      }
      // Bounds at half the distance are ruled out before the float64 distance.
      assert.ok(k.scanCounters[1] < n - n / factors.length, `${k.scanCounters[1]} of ${k.scanCounters[0]} candidates needed the float64 distance`);
    } finally {
      k.close();
    }
  }
});

test('nearCentres over many centres: two threads report exactly what one thread reports, in order', () => {
  const n = 6000;
  const dim = 64;
  const centres = 5000;
  const pts = gaussian(n * dim, 13);
  const one = createSimdKernels(n, dim, centres, 0, 1)!;
  const two = createSimdKernels(n, dim, centres, 0, 2)!;
  try {
    const p = n - 1;
    const r = new SeededRandom(14);
    for (const k of [one, two]) {
      k.points.set(pts);
      k.buildSketches();
    }
    for (let c = 0; c < centres; c++) {
      const d2 = dist2(pts, c * dim, p * dim, dim);
      const radius2 = c % 7 === 0 ? -1 : (d2 / 4) * (0.9 + 0.2 * r.float());
      for (const k of [one, two]) {
        k.addCentre(c, c);
        k.setCentreRadius(c, radius2);
      }
    }
    const found = one.nearCentres(centres, p, 11);
    assert.ok(found > 500, `${found} found`);
    assert.equal(two.nearCentres(centres, p, 11), found);
    assert.deepEqual(two.near.subarray(0, found), one.near.subarray(0, found));
    assert.deepEqual(two.nearD2.subarray(0, found), one.nearD2.subarray(0, found));
  } finally {
    two.close();
  }
});
