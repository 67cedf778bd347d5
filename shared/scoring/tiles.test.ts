import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stitchTiles } from './tiles.js';

test('stitchTiles puts each tile on the image grid and averages where tiles overlap', () => {
  // A 2x3 grid covered by two 2x2 tiles at columns 0 and 1: column 1 is in both.
  const scores = Float32Array.from([1, 2, 3, 4, /* tile 2 */ 10, 20, 30, 40]);
  const stitched = stitchTiles(scores, { gridH: 2, gridW: 3, tileH: 2, tileW: 2, origins: [[0, 0], [0, 1]] });
  assert.deepEqual(stitched, Float32Array.from([1, (2 + 10) / 2, 20, 3, (4 + 30) / 2, 40]));
  // One tile over the whole grid: the scores as they are.
  assert.deepEqual(stitchTiles(Float32Array.from([5, 6]), { gridH: 1, gridW: 2, tileH: 1, tileW: 2, origins: [[0, 0]] }), Float32Array.from([5, 6]));
});

test('stitchTiles refuses a layout that does not cover or fit its grid', () => {
  assert.throws(() => stitchTiles(new Float32Array(4), { gridH: 2, gridW: 3, tileH: 2, tileW: 2, origins: [[0, 0]] }),
    { message: 'stitchTiles: patch (0, 2) of the 2x3 grid is in no tile' });
  assert.throws(() => stitchTiles(new Float32Array(4), { gridH: 2, gridW: 3, tileH: 2, tileW: 2, origins: [[0, 2]] }),
    { message: 'stitchTiles: tile 0 at patch (0, 2) of 2x2 leaves the 2x3 grid' });
  assert.throws(() => stitchTiles(new Float32Array(3), { gridH: 2, gridW: 2, tileH: 2, tileW: 2, origins: [[0, 0]] }),
    { message: 'stitchTiles: 3 scores for 1 tiles of 2x2 patches (expected 4)' });
});
