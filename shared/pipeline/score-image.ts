// One image's features -> its score and anomaly map, as the model's manifest says. Shared by the local evaluate
// and the distributed scorer so both give the same numbers.
import type { MemoryBank } from '../bank/index.js';
import type { PatchFeatures } from '../features/recipes.js';
import type { Frame } from '../image/index.js';
import type { ModelManifest } from '../model/manifest.js';
import { anomalyMap, imageScore, patchScores } from '../scoring/index.js';
import type { StageTimer } from './timings.js';

export interface ImageScore {
  score: number;
  /** Anomaly map in the model frame: frame.height x frame.width. */
  map: Float32Array;
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
