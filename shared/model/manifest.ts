// The self-describing model folder: manifest.json plus the memory bank files (bank.f32, bank.json, and bank.usearch for banks searched through an index).
// Everything needed to score with the model, and to refuse to score with the wrong backbone, is in the manifest.
// A model folder holds one method's model: `method` says which ('patchcore' when absent, as in folders written before
// other methods existed). Each method has its own schema (the autoencoder's is in shared/autoencoder/manifest.ts);
// readManifest reads PatchCore models only and names the method of any other folder.
import { readFileSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { RECIPE_NAMES } from '../features/recipes.js';

export const MODEL_FORMAT = 'patchcore-model';
export const MODEL_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';

export const MODEL_METHODS = ['patchcore', 'autoencoder'] as const;
export type ModelMethod = (typeof MODEL_METHODS)[number];

/** shared/run/timings.ts JobTimings. */
export const JobTimingsSchema = z.object({
  jobs: z.number().int().nonnegative(),
  compute_ms: z.number(),
  storage_ms: z.number(),
  queue_wait_ms: z.number().nullable(),
  by_stage_ms: z.record(z.string(), z.number()),
});

export const ModelManifestSchema = z.object({
  format: z.literal(MODEL_FORMAT),
  version: z.literal(MODEL_FORMAT_VERSION),
  method: z.literal('patchcore').optional(),
  createdAt: z.string(),
  category: z.string(),
  recipe: z.enum(RECIPE_NAMES),
  featureDim: z.number().int().positive(),
  /** The first training image's patch grid (its tile's, when tiled); images of other sizes have their own. */
  grid: z.tuple([z.number().int().positive(), z.number().int().positive()]),
  backbone: z.object({
    name: z.literal('resnet50'),
    layers: z.array(z.string()),
    weights: z.object({ file: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
    engine: z.string(),
    backend: z.string(),
    /** The backbone's arithmetic; absent in models written before int8 existed, which are fp32. */
    precision: z.enum(['fp32', 'int8']).optional(),
    /** int8: the activation ranges measured at fit; scoring quantises with exactly these (never recalibrates). */
    activationRanges: z.record(z.string(), z.tuple([z.number(), z.number()])).optional(),
    /** int8: what the ranges were measured on: the first `images` training images, by `method`. */
    calibration: z.object({ images: z.number().int().positive(), method: z.enum(['minmax', 'percentile']) }).optional(),
  }).refine((b) => (b.precision === 'int8') === (b.activationRanges !== undefined), {
    message: 'an int8 backbone needs its activationRanges, and only an int8 backbone has them',
  }),
  /** How images were framed (shared/image FrameSpec); `tile`/`tileOverlap` only in tiled models. */
  frame: z.object({
    resize: z.number().int().positive().nullable(),
    crop: z.number().int().positive().nullable(),
    tile: z.number().int().positive().nullable().optional(),
    tileOverlap: z.number().int().nonnegative().optional(),
  }),
  coreset: z.object({
    ratio: z.number().positive().max(1).nullable(),
    target: z.number().int().positive(),
    projectionDim: z.number().int().positive(),
    seed: z.number().int(),
    trainPatches: z.number().int().positive(),
    /** The row cap the bank was built to (`--coreset-size` of a distributed run), when it had one. */
    size: z.number().int().positive().optional(),
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
    /** Distributed training: where the run's time went per kind of job (features, index). */
    jobs: z.record(z.string(), JobTimingsSchema).optional(),
    /** Distributed training through a reduce tree: its fan-in, depth (merge levels, the root included) and inner nodes. */
    tree: z.object({ fanIn: z.number().int(), depth: z.number().int().positive(), nodes: z.number().int().nonnegative() }).optional(),
    /** Incremental retraining: the version whose bank this one was reduced from, and the images added to it. */
    parent: z.object({ category: z.string(), version: z.string() }).optional(),
    added: z.object({ images: z.number().int().nonnegative(), prefix: z.string().nullable() }).optional(),
  }),
  /** Good images held out of training and their scores: the basis of a target-FPR threshold. */
  validation: z.object({ images: z.array(z.string()), scores: z.array(z.number()) }).optional(),
  /** Every bank file with its size and sha256, recorded when the model is published to storage; checked on download. */
  files: z.array(z.object({ name: z.string(), size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })).optional(),
});

export type ModelManifest = z.infer<typeof ModelManifestSchema>;

/** The manifest file of a model folder, parsed as JSON but not validated. */
export function readManifestJson(modelDir: string): { file: string; raw: unknown } {
  const file = join(modelDir, MANIFEST_FILE);
  if (!existsSync(file)) throw new Error(`model folder "${modelDir}" has no ${MANIFEST_FILE}: is it a model written by "patchcore fit"?`);
  try {
    return { file, raw: JSON.parse(readFileSync(file, 'utf8')) };
  } catch (err) {
    throw new Error(`model manifest "${file}" is not valid JSON: ${(err as Error).message}`);
  }
}

/** The method a parsed manifest declares: 'patchcore' when it declares none. */
export function manifestMethod(raw: unknown, file: string): ModelMethod {
  const method = raw !== null && typeof raw === 'object' ? (raw as { method?: unknown }).method : undefined;
  if (method === undefined) return 'patchcore';
  if (typeof method === 'string' && (MODEL_METHODS as readonly string[]).includes(method)) return method as ModelMethod;
  throw new Error(`model manifest "${file}" names an unknown method ${JSON.stringify(method)} (known: ${MODEL_METHODS.join(', ')})`);
}

/** "an autoencoder", "a patchcore": for error messages. */
export function withArticle(word: string): string {
  return `${/^[aeiou]/i.test(word) ? 'an' : 'a'} ${word}`;
}

/** Which method's model a folder holds. */
export function readModelMethod(modelDir: string): ModelMethod {
  const { file, raw } = readManifestJson(modelDir);
  return manifestMethod(raw, file);
}

/** Validates a parsed manifest against a method's schema, naming the first bad field. */
export function parseManifest<S extends z.ZodType>(schema: S, raw: unknown, file: string): z.infer<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`model manifest "${file}" is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

/** Reads a PatchCore model's manifest; a folder holding another method's model is refused by name. */
export function readManifest(modelDir: string): ModelManifest {
  const { file, raw } = readManifestJson(modelDir);
  const method = manifestMethod(raw, file);
  if (method !== 'patchcore') {
    throw new Error(`model folder "${modelDir}" holds ${withArticle(method)} model (manifest method "${method}"), not a PatchCore model`);
  }
  return parseManifest(ModelManifestSchema, raw, file);
}

/** Written last, through a rename, so a folder with a manifest always holds a complete model. */
export function writeManifest(modelDir: string, manifest: ModelManifest | { format: string; method: ModelMethod }): void {
  const file = join(modelDir, MANIFEST_FILE);
  writeFileSync(`${file}.tmp`, JSON.stringify(manifest, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}
