import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FeatureMatrix } from './feature-matrix.js';

const features = (gridH: number, gridW: number, dim: number, value: number) =>
  ({ data: new Float32Array(gridH * gridW * dim).fill(value), gridH, gridW, dim });

test('FeatureMatrix gathers images of different grids, each with its own rows, growing past its first estimate', () => {
  const m = new FeatureMatrix(3, 2);
  m.add('a', features(2, 3, 2, 1)); // sized for 3 images of 6 patches
  m.add('b', features(4, 4, 2, 2)); // larger: the matrix grows
  m.add('c', features(1, 1, 2, 3));
  assert.equal(m.rows, 6 + 16 + 1);
  assert.deepEqual([m.gridH, m.gridW], [2, 3]);
  assert.deepEqual(m.images, [
    { id: 'a', offset: 0, patches: 6, grid: [2, 3] },
    { id: 'b', offset: 6, patches: 16, grid: [4, 4] },
    { id: 'c', offset: 22, patches: 1, grid: [1, 1] },
  ]);
  const data = m.matrix();
  assert.equal(data.length, 23 * 2);
  assert.deepEqual([data[0], data[11], data[12], data[43], data[44], data[45]], [1, 1, 2, 2, 3, 3]);
  assert.throws(() => m.add('d', features(1, 1, 3, 0)), { message: 'image "d" has 3-dim features, the matrix 2' });
  assert.throws(() => m.add('e', { data: new Float32Array(3), gridH: 1, gridW: 1, dim: 2 }), { message: 'image "e" has 3 feature values, expected 1x1x2' });
});
