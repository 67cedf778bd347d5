import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from './random.js';
import { sketchBasis, sketchErrorNorm, sketchRows } from './sketch.js';

/** n points whose coordinate j has standard deviation scales[j], in a rotated frame given by `mix`. */
function anisotropic(n: number, dim: number, scales: number[], seed: number): Float32Array {
  const r = new SeededRandom(seed);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) out[i * dim + j] = r.gaussian() * scales[j] + 5;
  return out;
}

test('the basis is orthonormal and sigmaMax bounds its largest singular value', () => {
  const dim = 48;
  const pts = anisotropic(3000, dim, Array.from({ length: dim }, (_, j) => 1 / (1 + j)), 1);
  const b = sketchBasis(pts, 3000, dim, 16);
  assert.equal(b.width, 16);
  for (let a = 0; a < 16; a++) {
    for (let c = 0; c < 16; c++) {
      let g = 0;
      for (let j = 0; j < dim; j++) g += b.basis[a * dim + j] * b.basis[c * dim + j];
      assert.ok(Math.abs(g - (a === c ? 1 : 0)) < 1e-6, `G[${a}][${c}] = ${g}`);
    }
  }
  assert.ok(b.sigmaMax >= 1 - 1e-6 && b.sigmaMax < 1 + 1e-5, `${b.sigmaMax}`);
});

test('leading directions come first: the largest-variance axes, in order', () => {
  const dim = 20;
  // Variances 9, 4, 1 on axes 7, 2, 13; everything else 0.01.
  const scales = Array.from({ length: dim }, () => 0.1);
  scales[7] = 3;
  scales[2] = 2;
  scales[13] = 1;
  const b = sketchBasis(anisotropic(4000, dim, scales, 2), 4000, dim, 4);
  for (const [row, axis] of [[0, 7], [1, 2], [2, 13]]) {
    assert.ok(Math.abs(b.basis[row * dim + axis]) > 0.99, `row ${row} should follow axis ${axis}`);
  }
});

test('sketch distances never exceed sigmaMax times the true distance plus the rounding bound', () => {
  const dim = 64;
  const n = 400;
  const r = new SeededRandom(3);
  const pts = new Float32Array(n * dim);
  // Large norms with tiny differences stress the rounding bound: pairs (2i, 2i + 1) are near-duplicates.
  for (let i = 0; i < n; i += 2) {
    for (let j = 0; j < dim; j++) {
      const v = 1000 + r.gaussian() * 10;
      pts[i * dim + j] = v;
      pts[(i + 1) * dim + j] = v + (j % 5 === 0 ? Math.fround(v * 3e-7) : 0);
    }
  }
  const b = sketchBasis(pts, n, dim, 32);
  const s = sketchRows(pts, n, dim, b);
  const err = sketchErrorNorm(pts, n, dim, b.sigmaMax);
  for (let x = 0; x < n; x++) {
    for (const y of [x ^ 1, (x * 7 + 3) % n]) {
      let ds = 0;
      let dt = 0;
      for (let q = 0; q < 32; q++) ds += (s[x * 32 + q] - s[y * 32 + q]) ** 2;
      for (let j = 0; j < dim; j++) dt += (pts[x * dim + j] - pts[y * dim + j]) ** 2;
      assert.ok(Math.sqrt(ds) - err <= b.sigmaMax * Math.sqrt(dt), `pair ${x},${y}: ${Math.sqrt(ds)} vs ${Math.sqrt(dt)} (err ${err})`);
    }
  }
});

test('rank-deficient data still gets a full orthonormal basis', () => {
  const dim = 16;
  const n = 500;
  const r = new SeededRandom(5);
  const pts = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const a = r.gaussian();
    const c = r.gaussian();
    for (let j = 0; j < dim; j++) pts[i * dim + j] = j < 8 ? a : c; // rank 2
  }
  const b = sketchBasis(pts, n, dim, 8);
  for (let a = 0; a < 8; a++) {
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += b.basis[a * dim + j] ** 2;
    assert.ok(Math.abs(norm - 1) < 1e-6, `row ${a} norm ${norm}`);
    for (let c = 0; c < a; c++) {
      let g = 0;
      for (let j = 0; j < dim; j++) g += b.basis[a * dim + j] * b.basis[c * dim + j];
      assert.ok(Math.abs(g) < 1e-6, `rows ${a},${c}: ${g}`);
    }
  }
});
