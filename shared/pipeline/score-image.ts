// One image's features -> its score and anomaly map, as the model's manifest says. Shared by the local evaluate
// and the distributed scorer so both give the same numbers.
import type { MemoryBank } from '../bank/index.js';
import type { PatchFeatures, TileLayout } from '../features/recipes.js';
import type { Frame } from '../image/index.js';
import type { RecallCount } from '../evaluation/types.js';
import type { ModelManifest } from '../model/manifest.js';
import { anomalyMap, imageScore, patchScores, stitchTiles } from '../scoring/index.js';
import type { StageTimer } from '../run/timings.js';

export interface ImageScore {
  score: number;
  /** Anomaly map in the model frame: frame.height x frame.width. */
  map: Float32Array;
}

/** Patches per test image on which HNSW is checked against exact search (fewer when the image has fewer). */
export const RECALL_PATCHES_PER_IMAGE = 24;

/**
 * HNSW recall@1 on evenly spaced patches of one image: a choice fixed by the image alone, so the hits sum to the
 * same figure however the test set is split into shards.
 */
export function imageRecall(bank: MemoryBank, features: PatchFeatures, timer: StageTimer): RecallCount {
  const patches = features.gridH * features.gridW;
  const total = Math.min(RECALL_PATCHES_PER_IMAGE, patches);
  const queries = new Float32Array(total * features.dim);
  for (let j = 0; j < total; j++) {
    const row = Math.floor(((j + 0.5) * patches) / total);
    queries.set(features.data.subarray(row * features.dim, (row + 1) * features.dim), j * features.dim);
  }
  const recall = timer.timeSync('recall_check', () => bank.recallAt1(queries));
  return { hits: Math.round(recall * total), total };
}

/**
 * Gaussian sigma for a model frame: `sigma` is given at the 224-pixel scale of the backbone's input (its shorter
 * side): the whole frame, or for a tiled image one tile, whose patches have the same size in pixels at any frame size.
 */
export function mapSigma(manifest: ModelManifest, frame: Frame, tiles?: TileLayout): number {
  const side = tiles
    ? Math.min((tiles.tileH * frame.height) / tiles.gridH, (tiles.tileW * frame.width) / tiles.gridW)
    : Math.min(frame.width, frame.height);
  return (manifest.scoring.sigma * side) / 224;
}

/**
 * Score and anomaly map of one image. A tiled image's tile scores are stitched onto the image's patch grid first
 * (overlaps averaged, see stitchTiles); the image score is then the largest stitched patch score and the map is the
 * stitched grid upsampled to the whole frame and smoothed, exactly as for an image seen in one piece.
 */
export function scoreImage(
  bank: MemoryBank, manifest: ModelManifest, features: PatchFeatures, frame: Frame, timer: StageTimer,
): ImageScore {
  const raw = timer.timeSync('scoring', () => patchScores(bank, features.data));
  const neighbours = manifest.scoring.reweightNeighbours;
  const tiles = features.tiles;
  if (tiles && neighbours) throw new Error('image score re-weighting (reweightNeighbours) does not apply to tiled images');
  const patches = tiles ? timer.timeSync('scoring', () => stitchTiles(raw, tiles)) : raw;
  const score = timer.timeSync('scoring', () =>
    neighbours
      ? imageScore(patches, { reweight: { bank, features: features.data, dim: features.dim, neighbours } })
      : imageScore(patches),
  );
  const [gridH, gridW] = tiles ? [tiles.gridH, tiles.gridW] : [features.gridH, features.gridW];
  const map = timer.timeSync('maps', () => anomalyMap(patches, gridH, gridW, frame.height, frame.width, mapSigma(manifest, frame, tiles)));
  return { score, map };
}
