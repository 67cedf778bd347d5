// In-process training: normal images -> patch features -> coreset -> memory bank with its HNSW index -> model folder.
import { mkdir } from 'node:fs/promises';
import { UserError } from '../errors.js';
import { join } from 'node:path';
import {
  DEFAULT_CALIBRATION_IMAGES, calibrationBatches, createBackbone, type BackboneCalibration, type EngineName, type Precision,
} from '../backbone/engine.js';
import { DEFAULT_HNSW, type HnswParams } from '../bank/index.js';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { getRecipe, type PatchFeatures, type RecipeName } from '../features/recipes.js';
import { DEFAULT_FRAME_SPEC, loadModelInput, type Frame, type FrameSpec } from '../image/index.js';
import type { Logger } from '../log.js';
import { writeManifest, type ModelManifest } from '../model/manifest.js';
import { buildBank } from '../pipeline/build-bank.js';
import { validationIds } from '../pipeline/validation-split.js';
import { rowsInMemory } from '../coreset/row-source.js';
import { DEFAULT_PROJECTION_DIM } from '../coreset/greedy.js';
import { FeatureMatrix } from '../pipeline/feature-matrix.js';
import { buildPatchcoreManifest } from '../pipeline/model-manifest.js';
import { weightsSha256 } from '../pipeline/weights.js';
import { BACKBONE_INPUT_ALIGN, checkTiling, extractFeatures } from '../pipeline/extract.js';
import { scoreImage } from '../pipeline/score-image.js';
import { localSources } from '../run/sources.js';
import { startProgress } from '../run/progress.js';
import { StageTimer } from '../run/timings.js';

export interface FitOptions {
  dataDir: string;
  modelDir: string;
  weightsPath: string;
  engine?: EngineName;
  /** Backbone arithmetic (default fp32). int8 is calibrated on the first DEFAULT_CALIBRATION_IMAGES training
   * images in the model's frame, and the ranges go in the manifest for scoring. */
  precision?: Precision;
  recipe?: RecipeName;
  /** Fraction of training patches kept in the bank; default: the recipe's. */
  coresetRatio?: number;
  /** Exact bank size instead of a ratio. */
  coresetTarget?: number;
  projectionDim?: number;
  seed?: number;
  frame?: FrameSpec;
  hnsw?: Partial<HnswParams>;
  batchSize?: number;
  /** Use only the first N training images (quick runs and tests). */
  limit?: number;
  /** Fraction of the good training images held out to calibrate a target-FPR threshold (default 0). */
  validationSplit?: number;
  sigma?: number;
  reweightNeighbours?: number | null;
  /** The model's category (default: the data folder's name). */
  category?: string;
  logger: Logger;
}

export async function fitModel(opts: FitOptions): Promise<ModelManifest> {
  const log = opts.logger;
  const recipe = getRecipe(opts.recipe ?? 'paper');
  const frame = opts.frame ?? DEFAULT_FRAME_SPEC;
  const seed = opts.seed ?? 0;
  const projectionDim = opts.projectionDim ?? DEFAULT_PROJECTION_DIM;
  const hnsw: HnswParams = { ...DEFAULT_HNSW, ...opts.hnsw };
  const timer = new StageTimer();
  const t0 = performance.now();

  // Validate everything cheap before any expensive work starts.
  checkTiling(frame, recipe);
  if (frame.tile && opts.reweightNeighbours) throw new UserError('image score re-weighting (reweightNeighbours) does not apply to tiled models');
  const dataset = listMvtecDataset(opts.dataDir, { train: true });
  const train = opts.limit ? dataset.train.slice(0, opts.limit) : dataset.train;
  const weightsSha = await weightsSha256(opts.weightsPath);
  await mkdir(opts.modelDir, { recursive: true });

  const precision = opts.precision ?? 'fp32';
  let calibration: BackboneCalibration | undefined;
  let calibrationImages = 0;
  if (precision === 'int8') {
    const inputs = [];
    for (const img of train.slice(0, DEFAULT_CALIBRATION_IMAGES)) {
      try {
        inputs.push(await timer.time('calibration', () => loadModelInput(join(dataset.root, img.path), frame, { align: BACKBONE_INPUT_ALIGN })));
      } catch (err) {
        log.warn({ image: img.path, error: (err as Error).message }, 'fit: calibration image skipped');
      }
    }
    if (inputs.length === 0) throw new Error(`no calibration image of "${opts.dataDir}" could be read for the int8 backbone`);
    calibrationImages = inputs.length;
    calibration = { images: calibrationBatches(inputs, opts.batchSize ?? 8), method: 'minmax' };
  }
  const makeBackbone = () => createBackbone({ engine: opts.engine, weightsPath: opts.weightsPath, logger: log, precision, calibration });
  // int8: creating the engine runs the calibration images through it.
  const backbone = await (calibration ? timer.time('calibration', makeBackbone) : makeBackbone());
  const ranges = backbone.activationRanges;
  if (precision === 'int8' && !ranges) throw new Error(`the ${backbone.name} backbone did not report its int8 activation ranges`);
  log.info({ recipe: recipe.name, images: train.length, engine: backbone.name, backend: backbone.backend, precision }, 'fit: extracting training features');
  const heldOut = validationIds(train.map((t) => t.path), opts.validationSplit ?? 0);
  const features = new FeatureMatrix(train.length - heldOut.size, recipe.dim);
  const validation: { id: string; features: PatchFeatures; frame: Frame }[] = [];
  const skipped: { id: string; error: string }[] = [];
  const progress = startProgress('train features', train.length, log);
  try {
    for await (const r of extractFeatures(localSources(dataset.root, train), {
      backbone, recipe, frame, batchSize: opts.batchSize ?? 8, timer,
    })) {
      if (r.ok && heldOut.has(r.id)) validation.push({ id: r.id, features: r.features, frame: r.frame });
      else if (r.ok) features.add(r.id, r.features); // each image with its own grid: sizes may differ
      else {
        skipped.push({ id: r.id, error: r.error });
        log.warn({ image: r.id, error: r.error }, 'fit: image skipped');
      }
      progress.tick();
    }
  } finally {
    progress.stop();
    backbone.dispose();
  }
  if (features.rows === 0) {
    throw new Error(`no training image of "${opts.dataDir}" could be read (${skipped.length} failed; first: ${skipped[0]?.error})`);
  }

  const ratio = opts.coresetTarget ? null : (opts.coresetRatio ?? recipe.defaultCoresetRatio);
  const bank = buildBank(rowsInMemory(features.matrix(), features.rows, recipe.dim), features.rows,
    { ratio, target: opts.coresetTarget, projectionDim, seed, hnsw }, timer, log);
  await bank.save(opts.modelDir);

  const manifest = buildPatchcoreManifest({
    category: opts.category ?? dataset.category, recipe, grid: [features.gridH, features.gridW],
    weights: { file: opts.weightsPath, sha256: weightsSha }, engine: backbone.name, backend: backbone.backend, frame,
    precision: ranges
      ? { precision: 'int8', activationRanges: ranges, calibration: { images: calibrationImages, method: 'minmax' } }
      : { precision: 'fp32' },
    coreset: { ratio, projectionDim, seed, trainPatches: features.rows },
    bank: { count: bank.count, hnsw },
    scoring: { sigma: opts.sigma, reweightNeighbours: opts.reweightNeighbours },
    training: {
      images: train.length - skipped.length - validation.length, skipped,
      timings_ms: { ...timer.toJSON(), total: Math.round(performance.now() - t0) },
    },
  });
  if (validation.length > 0) {
    manifest.validation = {
      images: validation.map((v) => v.id),
      scores: validation.map((v) => scoreImage(bank, manifest, v.features, v.frame, timer).score),
    };
  }
  writeManifest(opts.modelDir, manifest);
  log.info({ modelDir: opts.modelDir, bank: bank.count, timings_ms: manifest.training.timings_ms }, 'fit: model written');
  return manifest;
}
