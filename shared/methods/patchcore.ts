// PatchCore as a method: backbone patch features, distances to the memory bank. scorePatchcore is the one
// image-scoring loop, used by the local evaluate (through the Method) and by the distributed score shards.
import { createBackbone, type BackboneEngine, type CreateBackboneOptions } from '../backbone/engine.js';
import { MemoryBank } from '../bank/index.js';
import type { ImageResult, ModelDescription } from '../evaluation/types.js';
import { getRecipe } from '../features/recipes.js';
import { checkModelConsistency } from '../model/consistency.js';
import { readManifest, type ModelManifest } from '../model/manifest.js';
import { extractFeatures } from '../pipeline/extract.js';
import { imageRecall, scoreImage } from '../pipeline/score-image.js';
import { checkWeightsFile } from '../pipeline/weights.js';
import type { ImageSource } from '../run/sources.js';
import type { StageTimer } from '../run/timings.js';
import type { Method } from './method.js';

type EngineInfo = Pick<BackboneEngine, 'name' | 'backend'>;

/** metrics.json's `model` for a PatchCore model scored on `backbone` (ids are the caller's). */
export function patchcoreModelRecord(manifest: ModelManifest, backbone: EngineInfo): Record<string, unknown> {
  return {
    method: 'patchcore', category: manifest.category, recipe: manifest.recipe, bank: manifest.bank.count,
    feature_dim: manifest.featureDim, backend: backbone.backend, engine: backbone.name,
    precision: manifest.backbone.precision ?? 'fp32',
  };
}

export function describePatchcore(manifest: ModelManifest, backbone: EngineInfo): ModelDescription {
  return {
    recipe: manifest.recipe,
    backbone: `ResNet-50 (${manifest.backbone.layers.join(', ')}), ${backbone.name}/${backbone.backend}`
      + ((manifest.backbone.precision ?? 'fp32') === 'fp32' ? '' : `, ${manifest.backbone.precision}`),
    coresetSize: manifest.bank.count,
  };
}

/** The backbone a model must be scored with: its precision and, for int8, the activation ranges it was fitted
 * with (scoring never recalibrates, so it quantises exactly as training did). Older models are fp32. */
export function modelBackboneOptions(manifest: ModelManifest): Pick<CreateBackboneOptions, 'precision' | 'calibration'> {
  const precision = manifest.backbone.precision ?? 'fp32';
  if (precision === 'fp32') return { precision };
  return { precision, calibration: { ranges: manifest.backbone.activationRanges! } };
}

export interface PatchcoreScoring {
  manifest: ModelManifest;
  bank: MemoryBank;
  backbone: BackboneEngine;
  batchSize: number;
  timer: StageTimer;
  recall: boolean;
}

/** Sources -> features -> score and anomaly map (and sampled-patch recall), one result per source in order. */
export async function* scorePatchcore(sources: ImageSource[], s: PatchcoreScoring): AsyncGenerator<ImageResult> {
  const recipe = getRecipe(s.manifest.recipe);
  for await (const r of extractFeatures(sources, { backbone: s.backbone, recipe, frame: s.manifest.frame, batchSize: s.batchSize, timer: s.timer })) {
    if (!r.ok) {
      yield r;
      continue;
    }
    const { score, map } = scoreImage(s.bank, s.manifest, r.features, r.frame, s.timer);
    yield { ok: true, id: r.id, frame: r.frame, score, map, ...(s.recall ? { recall: imageRecall(s.bank, r.features, s.timer) } : {}) };
  }
}

export const patchcore: Method = {
  name: 'patchcore',
  async check(modelDir, opts) {
    await checkWeightsFile(opts.weightsPath, readManifest(modelDir).backbone.weights);
  },
  async open(modelDir, opts, timer) {
    const manifest = readManifest(modelDir);
    await checkWeightsFile(opts.weightsPath, manifest.backbone.weights);
    const bank = await timer.time('load_model', () => MemoryBank.load(modelDir));
    checkModelConsistency(manifest, bank, `model "${modelDir}"`);
    const backbone = await createBackbone({
      engine: opts.engine, weightsPath: opts.weightsPath, logger: opts.logger, ...modelBackboneOptions(manifest),
    });
    return {
      score: (sources) => scorePatchcore(sources, { manifest, bank, backbone, batchSize: opts.batchSize, timer, recall: opts.recall }),
      model: patchcoreModelRecord(manifest, backbone),
      describe: describePatchcore(manifest, backbone),
      validationScores: manifest.validation?.scores,
      dispose: () => backbone.dispose(),
    };
  },
};
