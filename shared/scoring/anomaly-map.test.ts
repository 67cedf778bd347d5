import { test } from 'node:test';
import assert from 'node:assert/strict';
import { anomalyMap, gaussianBlur, gaussianKernel, reflectIndex, resizeBilinear } from './anomaly-map.js';

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: got ${got[i]}, want ${want[i]}`);
  }
}

test('bilinear 2x2 -> 4x4 matches PyTorch align_corners=False', () => {
  // F.interpolate([[0,1],[2,3]], size=4, mode='bilinear', align_corners=False): source coordinates
  // are -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last pixel).
  const out = resizeBilinear(Float32Array.from([0, 1, 2, 3]), 2, 2, 4, 4);
  assertClose(out, [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3], 1e-7, 'up');
});

test('bilinear downsampling 4 -> 2 averages the pixel pairs around each centre', () => {
  // Source coordinates (d + 0.5) * 2 - 0.5 = 0.5 and 2.5.
  const row = Float32Array.from([0, 10, 20, 40]);
  assertClose(resizeBilinear(row, 1, 4, 1, 2), [5, 30], 1e-6, 'down');
  // Same size is the identity.
  assertClose(resizeBilinear(row, 2, 2, 2, 2), row, 0, 'identity');
});

test('Gaussian kernel: scipy radius int(4 sigma + 0.5), symmetric, sums to 1', () => {
  for (const [sigma, taps] of [[4, 33], [1, 9], [1.5, 13], [0.1, 1]] as const) {
    const k = gaussianKernel(sigma);
    assert.equal(k.length, taps, `sigma ${sigma}`);
    assert.ok(Math.abs(k.reduce((a, b) => a + b, 0) - 1) < 1e-12);
    for (let i = 0; i < k.length; i++) assert.equal(k[i], k[k.length - 1 - i]);
  }
  const k1 = gaussianKernel(1);
  const z = 1 + 2 * (Math.exp(-0.5) + Math.exp(-2) + Math.exp(-4.5) + Math.exp(-8));
  assert.ok(Math.abs(k1[4] - 1 / z) < 1e-15);
  assert.ok(Math.abs(k1[5] - Math.exp(-0.5) / z) < 1e-15);
  assert.throws(() => gaussianKernel(0), /sigma must be positive, got 0/);
});

test('reflect boundary repeats the edge sample: d c b a | a b c d | d c b a', () => {
  const n = 4;
  const map = (i: number) => reflectIndex(i, n);
  assert.deepEqual([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8].map(map), [3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]);
  assert.equal(reflectIndex(-7, 1), 0);
  // An impulse at the edge: scipy.ndimage.gaussian_filter1d([1, 0, 0, 0, 0], 1) folds the
  // taps that fall off the edge back in (w0 + w1, w1 + w2, ...), so nothing is lost.
  const out = gaussianBlur(Float32Array.from([1, 0, 0, 0, 0]), 1, 5, 1);
  assertClose(out, [0.640914915, 0.295962573, 0.058422989, 0.00456569224, 0.000133830625], 1e-7, 'impulse');
});

test('gaussianBlur equals scipy.ndimage.gaussian_filter on a small map, also when the kernel outgrows it', () => {
  // a[y][x] = ((7y + 3x) mod 11) / 10, 6 x 5, float32; expected values from scipy 1.17.
  const a = Float32Array.from({ length: 30 }, (_, i) => ((Math.floor(i / 5) * 7 + (i % 5) * 3) % 11) / 10);
  const sigma15 = [
    0.4415721, 0.4745024, 0.5039144, 0.5032541, 0.4868276, 0.4909427, 0.5050794, 0.510319, 0.4945313, 0.474197,
    0.5408598, 0.532359, 0.5090489, 0.4747579, 0.4483297, 0.5547166, 0.5333712, 0.4938223, 0.4492265, 0.4197159,
    0.5312989, 0.5112931, 0.4706253, 0.4243166, 0.3953134, 0.5005869, 0.487982, 0.4524012, 0.406738, 0.3780969,
  ];
  const sigma4 = [
    0.4849791, 0.4841686, 0.4828572, 0.4815423, 0.4807284, 0.4843338, 0.4834798, 0.482098, 0.4807128, 0.4798553,
    0.4832096, 0.4822802, 0.4807766, 0.4792699, 0.4783372, 0.481901, 0.4808849, 0.4792412, 0.4775947, 0.4765755,
    0.4807626, 0.4796717, 0.4779069, 0.4761396, 0.4750456, 0.4800997, 0.4789656, 0.4771311, 0.4752942, 0.4741572,
  ];
  assertClose(gaussianBlur(a, 6, 5, 1.5), sigma15, 2e-7, 'sigma 1.5');
  assertClose(gaussianBlur(a, 6, 5, 4), sigma4, 2e-7, 'sigma 4');
  // Reflection keeps the total mass.
  const sum = (v: Float32Array) => v.reduce((s, x) => s + x, 0);
  assert.ok(Math.abs(sum(gaussianBlur(a, 6, 5, 1)) - sum(a)) < 1e-5);
  assertClose(gaussianBlur(a, 6, 5, 0), a, 0, 'sigma 0');
});

test('anomalyMap: a constant grid stays constant; a single patch gives a constant map', () => {
  const grid = new Float32Array(28 * 28).fill(3.5);
  const map = anomalyMap(grid, 28, 28, 224, 224);
  assert.equal(map.length, 224 * 224);
  for (let i = 0; i < map.length; i++) assert.ok(Math.abs(map[i] - 3.5) < 2e-6, `pixel ${i}: ${map[i]}`);
  const one = anomalyMap(Float32Array.from([2]), 1, 1, 5, 7);
  assertClose(one, new Float32Array(35).fill(2), 1e-6, 'single');
});

test('anomalyMap = blur(upsample): a hot patch spreads symmetrically and keeps its peak in place', () => {
  const grid = new Float32Array(4 * 4);
  grid[1 * 4 + 1] = 1;
  const map = anomalyMap(grid, 4, 4, 16, 16, 1);
  const up = resizeBilinear(grid, 4, 4, 16, 16);
  assertClose(map, gaussianBlur(up, 16, 16, 1), 0, 'composition');
  // Patch (1,1) covers pixels 4..7; its centre lies between pixels 5 and 6 on both axes.
  let best = 0;
  for (let i = 1; i < map.length; i++) if (map[i] > map[best]) best = i;
  assert.ok([5, 6].includes(Math.floor(best / 16)) && [5, 6].includes(best % 16), `peak at ${best}`);
  assert.ok(Math.abs(map[5 * 16 + 5] - map[6 * 16 + 6]) < 1e-7);
  assert.ok(Math.abs(map[5 * 16 + 2] - map[2 * 16 + 5]) < 1e-7);
});

test('bad sizes give errors naming the argument', () => {
  assert.throws(() => anomalyMap(new Float32Array(5), 2, 3, 4, 4), /patchScores has 5 values, expected gridH x gridW = 2x3 = 6/);
  assert.throws(() => resizeBilinear(new Float32Array(4), 2, 2, 0, 4), /output: size must be positive integers, got 0x4/);
  assert.throws(() => gaussianBlur(new Float32Array(4), 2, 2, -1), /sigma must be >= 0, got -1/);
  assert.throws(() => gaussianBlur(new Float32Array(3), 2, 2, 1), /map has 3 values, expected 2x2 = 4/);
});
