// The one PatchCore model manifest builder, used by the local fit and the distributed index step: the same
// features and settings give the same manifest wherever they were computed (only ids, times and engines differ).
import { basename } from 'node:path';
import type { ActivationRanges } from '../backbone/engine.js';
import type { CalibrationMethod } from '../backbone/quantize.js';
import type { HnswParams } from '../bank/index.js';
import type { FeatureRecipe } from '../features/recipes.js';
import { DEFAULT_TILE_OVERLAP, type FrameSpec } from '../image/index.js';
import { MODEL_FORMAT, MODEL_FORMAT_VERSION, type ModelManifest } from '../model/manifest.js';
import { peakRssMiB, type JobTimings } from '../run/timings.js';

export interface PatchcoreManifestInput {
  category: string;
  recipe: FeatureRecipe;
  grid: [number, number];
  /** The weights file (only its base name is kept) and its sha256. */
  weights: { file: string; sha256: string };
  /** The backbone engine and backend that extracted the training features. */
  engine: string;
  backend: string;
  /** The backbone's arithmetic (default fp32); int8 comes with the ranges it was calibrated to and on what. */
  precision?: { precision: 'fp32' } | { precision: 'int8'; activationRanges: ActivationRanges; calibration: { images: number; method: CalibrationMethod } };
  frame: FrameSpec;
  coreset: { ratio: number | null; projectionDim: number; seed: number; trainPatches: number };
  bank: { count: number; hnsw: HnswParams };
  scoring: { sigma?: number; reweightNeighbours?: number | null };
  training: { images: number; skipped: { id: string; error: string }[]; timings_ms: Record<string, number>; jobs?: Record<string, JobTimings> };
  validation?: ModelManifest['validation'];
}

export function buildPatchcoreManifest(m: PatchcoreManifestInput): ModelManifest {
  return {
    format: MODEL_FORMAT,
    version: MODEL_FORMAT_VERSION,
    method: 'patchcore',
    createdAt: new Date().toISOString(),
    category: m.category,
    recipe: m.recipe.name,
    featureDim: m.recipe.dim,
    grid: m.grid,
    backbone: {
      name: 'resnet50',
      layers: [...m.recipe.layers],
      weights: { file: basename(m.weights.file), sha256: m.weights.sha256 },
      engine: m.engine,
      backend: m.backend,
      ...(m.precision ?? { precision: 'fp32' }),
    },
    frame: {
      resize: m.frame.resize, crop: m.frame.crop,
      ...(m.frame.tile ? { tile: m.frame.tile, tileOverlap: m.frame.tileOverlap ?? DEFAULT_TILE_OVERLAP } : {}),
    },
    coreset: { ratio: m.coreset.ratio, target: m.bank.count, projectionDim: m.coreset.projectionDim, seed: m.coreset.seed, trainPatches: m.coreset.trainPatches },
    bank: { count: m.bank.count, dim: m.recipe.dim, hnsw: m.bank.hnsw },
    scoring: { sigma: m.scoring.sigma ?? 4, reweightNeighbours: m.scoring.reweightNeighbours ?? null },
    training: {
      images: m.training.images, skipped: m.training.skipped, timings_ms: m.training.timings_ms, peak_rss_mib: peakRssMiB(),
      ...(m.training.jobs ? { jobs: m.training.jobs } : {}),
    },
    ...(m.validation ? { validation: m.validation } : {}),
  };
}
