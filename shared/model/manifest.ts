// The self-describing model folder: manifest.json plus the memory bank files (bank.f32, bank.json, bank.hnsw).
// Everything needed to score with the model, and to refuse to score with the wrong backbone, is in the manifest.
import { readFileSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { RECIPE_NAMES } from '../features/recipes.js';

export const MODEL_FORMAT = 'patchcore-model';
export const MODEL_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';

export const ModelManifestSchema = z.object({
  format: z.literal(MODEL_FORMAT),
  version: z.literal(MODEL_FORMAT_VERSION),
  createdAt: z.string(),
  category: z.string(),
  recipe: z.enum(RECIPE_NAMES),
  featureDim: z.number().int().positive(),
  grid: z.tuple([z.number().int().positive(), z.number().int().positive()]),
  backbone: z.object({
    name: z.literal('resnet50'),
    layers: z.array(z.string()),
    weights: z.object({ file: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
    engine: z.string(),
    backend: z.string(),
  }),
  frame: z.object({ resize: z.number().int().positive().nullable(), crop: z.number().int().positive().nullable() }),
  coreset: z.object({
    ratio: z.number().positive().max(1).nullable(),
    target: z.number().int().positive(),
    projectionDim: z.number().int().positive(),
    seed: z.number().int(),
    trainPatches: z.number().int().positive(),
  }),
  bank: z.object({
    count: z.number().int().positive(),
    dim: z.number().int().positive(),
    hnsw: z.object({ M: z.number().int(), efConstruction: z.number().int(), efSearch: z.number().int() }),
  }),
  scoring: z.object({ sigma: z.number().positive(), reweightNeighbours: z.number().int().positive().nullable() }),
  training: z.object({
    images: z.number().int().nonnegative(),
    skipped: z.array(z.object({ id: z.string(), error: z.string() })),
    timings_ms: z.record(z.string(), z.number()),
    peak_rss_mib: z.number(),
  }),
});

export type ModelManifest = z.infer<typeof ModelManifestSchema>;

export function readManifest(modelDir: string): ModelManifest {
  const file = join(modelDir, MANIFEST_FILE);
  if (!existsSync(file)) throw new Error(`model folder "${modelDir}" has no ${MANIFEST_FILE}: is it a model written by "patchcore fit"?`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`model manifest "${file}" is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = ModelManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`model manifest "${file}" is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

/** Written last, through a rename, so a folder with a manifest always holds a complete model. */
export function writeManifest(modelDir: string, manifest: ModelManifest): void {
  const file = join(modelDir, MANIFEST_FILE);
  writeFileSync(`${file}.tmp`, JSON.stringify(manifest, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}
