// Tiled images: the patch scores of each tile put back on the image's patch grid. Where tiles overlap, a patch's
// score is the mean of the tiles' scores for it. Mean rather than max: a patch near a tile's edge is embedded with
// part of its neighbourhood cut off (zero padding in the 3x3 aggregation, a truncated receptive field), which
// raises its distance to the bank; the max would carry that edge artefact into every overlap, while the mean
// lets the tile that sees the patch in full context temper it. Regions seen by one tile keep its score unchanged.
import type { TileLayout } from '../features/recipes.js';

/** Per-row scores of a tiled image (tile after tile) -> its gridH x gridW patch-score grid. */
export function stitchTiles(scores: Float32Array, layout: TileLayout): Float32Array {
  const { gridH, gridW, tileH, tileW, origins } = layout;
  const per = tileH * tileW;
  if (scores.length !== origins.length * per) {
    throw new Error(`stitchTiles: ${scores.length} scores for ${origins.length} tiles of ${tileH}x${tileW} patches (expected ${origins.length * per})`);
  }
  const sum = new Float64Array(gridH * gridW);
  const count = new Uint16Array(gridH * gridW);
  origins.forEach(([top, left], k) => {
    if (top < 0 || left < 0 || top + tileH > gridH || left + tileW > gridW) {
      throw new Error(`stitchTiles: tile ${k} at patch (${top}, ${left}) of ${tileH}x${tileW} leaves the ${gridH}x${gridW} grid`);
    }
    for (let y = 0; y < tileH; y++) {
      for (let x = 0; x < tileW; x++) {
        const cell = (top + y) * gridW + left + x;
        sum[cell] += scores[k * per + y * tileW + x];
        count[cell]++;
      }
    }
  });
  const out = new Float32Array(gridH * gridW);
  for (let i = 0; i < out.length; i++) {
    if (count[i] === 0) throw new Error(`stitchTiles: patch (${Math.floor(i / gridW)}, ${i % gridW}) of the ${gridH}x${gridW} grid is in no tile`);
    out[i] = sum[i] / count[i];
  }
  return out;
}
