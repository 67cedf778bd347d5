// One image's features -> its score and anomaly map, as the model's manifest says. Shared by the local evaluate
// and the distributed scorer so both give the same numbers.
import type { MemoryBank } from '../bank/index.js';
import type { PatchFeatures } from '../features/recipes.js';
import type { Frame } from '../image/index.js';
import type { RecallCount } from '../evaluation/types.js';
import type { ModelManifest } from '../model/manifest.js';
import { anomalyMap, imageScore, patchScores } from '../scoring/index.js';
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

/** Gaussian sigma for a model frame: `sigma` is given at the 224-pixel scale. */
export function mapSigma(manifest: ModelManifest, frame: Frame): number {
  return (manifest.scoring.sigma * Math.min(frame.width, frame.height)) / 224;
}

export function scoreImage(
  bank: MemoryBank, manifest: ModelManifest, features: PatchFeatures, frame: Frame, timer: StageTimer,
): ImageScore {
  const patches = timer.timeSync('scoring', () => patchScores(bank, features.data));
  const neighbours = manifest.scoring.reweightNeighbours;
  const score = timer.timeSync('scoring', () =>
    neighbours
      ? imageScore(patches, { reweight: { bank, features: features.data, dim: features.dim, neighbours } })
      : imageScore(patches),
  );
  const map = timer.timeSync('maps', () =>
    anomalyMap(patches, features.gridH, features.gridW, frame.height, frame.width, mapSigma(manifest, frame)),
  );
  return { score, map };
}
