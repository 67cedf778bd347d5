// In-process training: normal images -> patch features -> coreset -> memory bank with its HNSW index -> model folder.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename } from 'node:path';
import { createBackbone, type EngineName } from '../backbone/engine.js';
import { DEFAULT_HNSW, type HnswParams } from '../bank/index.js';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { getRecipe, type PatchFeatures, type RecipeName } from '../features/recipes.js';
import { DEFAULT_FRAME_SPEC, type Frame, type FrameSpec } from '../image/index.js';
import type { Logger } from '../log.js';
import { MODEL_FORMAT, MODEL_FORMAT_VERSION, writeManifest, type ModelManifest } from '../model/manifest.js';
import { buildBank } from './build-bank.js';
import { extractFeatures } from './extract.js';
import { scoreImage } from './score-image.js';
import { localSources } from './local-source.js';
import { startProgress } from './progress.js';
import { StageTimer, peakRssMiB } from './timings.js';

export interface FitOptions {
  dataDir: string;
  modelDir: string;
  weightsPath: string;
  engine?: EngineName;
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
  logger: Logger;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Gathers the patch features of every image into one row-major matrix. The matrix is sized from the first image's
 * grid (all images share one frame when cropping); images with another grid are an error.
 */
export class FeatureMatrix {
  private data: Float32Array | null = null;
  rows = 0;
  gridH = 0;
  gridW = 0;

  constructor(private readonly capacityImages: number, readonly dim: number) {}

  add(id: string, features: { data: Float32Array; gridH: number; gridW: number }): void {
    if (!this.data) {
      this.gridH = features.gridH;
      this.gridW = features.gridW;
      this.data = new Float32Array(this.capacityImages * features.gridH * features.gridW * this.dim);
    } else if (features.gridH !== this.gridH || features.gridW !== this.gridW) {
      throw new Error(
        `image "${id}" gives a ${features.gridH}x${features.gridW} patch grid, the others ${this.gridH}x${this.gridW}: ` +
          'training images must share one size after resizing and cropping (use a crop)',
      );
    }
    this.data.set(features.data, this.rows * this.dim);
    this.rows += features.gridH * features.gridW;
  }

  matrix(): Float32Array {
    return this.data ? this.data.subarray(0, this.rows * this.dim) : new Float32Array(0);
  }
}

/** Every 1/split-th image, evenly spread over the sorted list: the held-out good images. */
export function validationIds(ids: string[], split: number): Set<string> {
  if (!(split >= 0 && split < 1)) throw new Error(`validation split must be in [0, 1), got ${split}`);
  const out = new Set<string>();
  ids.forEach((id, i) => {
    if (Math.floor((i + 1) * split) > Math.floor(i * split)) out.add(id);
  });
  return out;
}

export async function fitModel(opts: FitOptions): Promise<ModelManifest> {
  const log = opts.logger;
  const recipe = getRecipe(opts.recipe ?? 'paper');
  const frame = opts.frame ?? DEFAULT_FRAME_SPEC;
  const seed = opts.seed ?? 0;
  const projectionDim = opts.projectionDim ?? 128;
  const hnsw: HnswParams = { ...DEFAULT_HNSW, ...opts.hnsw };
  const timer = new StageTimer();
  const t0 = performance.now();

  // Validate everything cheap before any expensive work starts.
  const dataset = listMvtecDataset(opts.dataDir, { train: true });
  const train = opts.limit ? dataset.train.slice(0, opts.limit) : dataset.train;
  const weightsSha = await sha256File(opts.weightsPath).catch((err: Error) => {
    throw new Error(`weights file "${opts.weightsPath}" cannot be read: ${err.message}`);
  });
  await mkdir(opts.modelDir, { recursive: true });

  const backbone = await createBackbone({ engine: opts.engine, weightsPath: opts.weightsPath, logger: log });
  log.info({ recipe: recipe.name, images: train.length, engine: backbone.name, backend: backbone.backend }, 'fit: extracting training features');
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
      else if (r.ok) features.add(r.id, r.features);
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
  const bank = buildBank(features.matrix(), features.rows, recipe.dim, features.rows,
    { ratio, target: opts.coresetTarget, projectionDim, seed, hnsw }, timer, log);
  await bank.save(opts.modelDir);

  const manifest: ModelManifest = {
    format: MODEL_FORMAT,
    version: MODEL_FORMAT_VERSION,
    method: 'patchcore',
    createdAt: new Date().toISOString(),
    category: dataset.category,
    recipe: recipe.name,
    featureDim: recipe.dim,
    grid: [features.gridH, features.gridW],
    backbone: {
      name: 'resnet50',
      layers: [...recipe.layers],
      weights: { file: basename(opts.weightsPath), sha256: weightsSha },
      engine: backbone.name,
      backend: backbone.backend,
    },
    frame: { resize: frame.resize, crop: frame.crop },
    coreset: { ratio, target: bank.count, projectionDim, seed, trainPatches: features.rows },
    bank: { count: bank.count, dim: bank.dim, hnsw },
    scoring: { sigma: opts.sigma ?? 4, reweightNeighbours: opts.reweightNeighbours ?? null },
    training: {
      images: train.length - skipped.length - validation.length,
      skipped,
      timings_ms: { ...timer.toJSON(), total: Math.round(performance.now() - t0) },
      peak_rss_mib: peakRssMiB(),
    },
  };
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
