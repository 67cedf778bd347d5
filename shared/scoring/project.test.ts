import { test } from 'node:test';
import assert from 'node:assert/strict';
import { projectToImage, type ImageFrame } from './project.js';
import { resizeBilinear } from './anomaly-map.js';

test('an identity frame returns the map unchanged', () => {
  const map = Float32Array.from({ length: 12 }, (_, i) => i * 0.5);
  const frame: ImageFrame = { sourceWidth: 4, sourceHeight: 3, resizedWidth: 4, resizedHeight: 3, cropLeft: 0, cropTop: 0, width: 4, height: 3 };
  assert.deepEqual(projectToImage(map, frame), map);
});

test('a resize-only frame equals bilinear upsampling with half-pixel centres', () => {
  const map = Float32Array.from({ length: 12 }, (_, i) => (i * 7) % 5);
  const frame: ImageFrame = { sourceWidth: 8, sourceHeight: 6, resizedWidth: 4, resizedHeight: 3, cropLeft: 0, cropTop: 0, width: 4, height: 3 };
  const got = projectToImage(map, frame);
  const want = resizeBilinear(map, 3, 4, 6, 8);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-6, `pixel ${i}`);
});

test('MVTec frame (900 -> 256, centre crop 224): crop border and sampled values', () => {
  const frame: ImageFrame = { sourceWidth: 900, sourceHeight: 900, resizedWidth: 256, resizedHeight: 256, cropLeft: 16, cropTop: 16, width: 224, height: 224 };
  // A ramp map[y][x] = x: bilinear sampling returns the (clamped) map coordinate itself.
  const map = Float32Array.from({ length: 224 * 224 }, (_, i) => i % 224);
  const out = projectToImage(map, frame, -1);
  assert.equal(out.length, 900 * 900);
  const row = 450 * 900;
  // Pixel centres inside the crop: 56.25 <= x + 0.5 <= 843.75, i.e. columns 56..843 (and rows alike).
  assert.equal(out[row + 55], -1);
  assert.equal(out[row + 844], -1);
  assert.equal(out[55 * 900 + 450], -1);
  assert.equal(out[844 * 900 + 450], -1);
  assert.notEqual(out[56 * 900 + 450], -1);
  assert.notEqual(out[843 * 900 + 450], -1);
  for (let x = 56; x <= 843; x++) {
    const u = Math.min(223, Math.max(0, ((x + 0.5) * 256) / 900 - 0.5 - 16));
    assert.ok(Math.abs(out[row + x] - u) < 1e-4, `column ${x}: ${out[row + x]} vs ${u}`);
  }
});

test('bad frames and map sizes give clear errors', () => {
  const frame: ImageFrame = { sourceWidth: 8, sourceHeight: 8, resizedWidth: 4, resizedHeight: 4, cropLeft: 0, cropTop: 0, width: 4, height: 4 };
  assert.throws(() => projectToImage(new Float32Array(15), frame), /map has 15 values, expected frame width x height = 4x4 = 16/);
  assert.throws(() => projectToImage(new Float32Array(16), { ...frame, sourceWidth: 0 }), /frame\.sourceWidth must be a positive integer, got 0/);
  assert.throws(() => projectToImage(new Float32Array(16), { ...frame, cropTop: Number.NaN }), /crop offset must be finite/);
});
