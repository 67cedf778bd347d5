// Scorer step, an adapter over the stages: one shard of test images in the bucket -> per-image scores and the
// shard's pixel summary (runs/<run>/scores/<shard>.json) and anomaly maps over the whole image
// (runs/<run>/maps/<shard>.bin), scored by the same loop as the local evaluate, with the model version loaded once
// per process. The pixel summary (histograms on a fixed grid, shared/metrics/score-histogram.ts) is what the report
// merges for the pixel metrics; the maps are read back only for the images the report shows.
import { z } from 'zod';
import type { BackboneEngine, CreateBackboneOptions } from '../backbone/engine.js';
import { classifyDatasetPaths, type DatasetImage } from '../dataset/mvtec.js';
import { readGroundTruth } from '../evaluation/ground-truth.js';
import { summariseImage } from '../evaluation/whole-image.js';
import { PixelHistogram, PixelHistogramSchema } from '../metrics/index.js';
import type { Logger } from '../log.js';
import { modelBackboneOptions, scorePatchcore } from '../methods/patchcore.js';
import type { ModelManifest } from '../model/manifest.js';
import { checkWeights } from '../pipeline/weights.js';
import type { ScoreShardPayload } from '../queue/jobs.js';
import { StageTimer, queueWaitMs, type QueuedJob } from '../run/timings.js';
import { mapsKey, runPrefix, scoresKey, shardName } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { encodeTensorFile, type TensorImageEntry } from '../storage/tensor-file.js';
import { checkDatasetKeys, listRelative, storeSources } from './dataset-store.js';
import type { ModelCache } from './model-store.js';

const FrameSchema = z.object({
  sourceWidth: z.number(), sourceHeight: z.number(), resizedWidth: z.number(), resizedHeight: z.number(),
  cropLeft: z.number(), cropTop: z.number(), width: z.number(), height: z.number(),
});

export const ShardScoresSchema = z.object({
  runId: z.string(),
  shardId: z.string(),
  model: z.object({ category: z.string(), version: z.string() }),
  images: z.array(z.object({
    id: z.string(), key: z.string(), score: z.number(), frame: FrameSchema,
    /** HNSW recall@1 on the image's sampled patches. */
    recall: z.object({ hits: z.number().int().nonnegative(), total: z.number().int().positive() }).optional(),
    /**
     * Where its map lies in the shard's maps file: `values` float32 from byte `offset`, resizedHeight x
     * resizedWidth over the whole image (-Infinity where the model did not look).
     */
    map: z.object({ offset: z.number().int().nonnegative(), values: z.number().int().positive() }),
  })),
  failed: z.array(z.object({ id: z.string(), error: z.string() })),
  /** The shard's pixel summary: its test images' whole-image maps against their ground truth. */
  pixels: PixelHistogramSchema,
  /** The backbone the shard was scored with. */
  engine: z.string().optional(),
  backend: z.string().optional(),
});
export type ShardScores = z.infer<typeof ShardScoresSchema>;

/**
 * Where a score job's time went, for the run's report: its stage timings, queue wait and when it finished (ms
 * since the epoch). Apart from the scores so that a retried shard rewrites the scores byte for byte.
 */
export const ShardTimingsSchema = z.object({
  timings_ms: z.record(z.string(), z.number()),
  queue_wait_ms: z.number().nullable(),
  finished_at: z.number(),
});
export type ShardTimings = z.infer<typeof ShardTimingsSchema>;

/** runs/<run>/timings/score-<shard>.json */
export const scoreTimingsKey = (run: string, shard: string): string => `${runPrefix(run)}timings/score-${shardName(shard)}.json`;

export interface ScoreShardResult {
  shardId: string;
  images: number;
  failed: number;
  timings_ms: Record<string, number>;
}

/**
 * The scorer's backbones: one fp32 engine for every fp32 model (created once per process, as before), and for each
 * int8 model version an engine built with the activation ranges in its manifest, created on first use and kept.
 */
export class ModelBackbones {
  private readonly int8 = new Map<string, Promise<BackboneEngine>>();

  constructor(
    readonly fp32: BackboneEngine,
    private readonly create: (opts: Pick<CreateBackboneOptions, 'precision' | 'calibration'>) => Promise<BackboneEngine>,
  ) {}

  async forModel(category: string, version: string, manifest: ModelManifest): Promise<BackboneEngine> {
    const opts = modelBackboneOptions(manifest);
    if (opts.precision === 'fp32') return this.fp32;
    const key = `${category}/${version}`;
    let engine = this.int8.get(key);
    if (!engine) {
      engine = this.create(opts);
      this.int8.set(key, engine);
      // A failed creation is not cached: the next job tries again.
      engine.catch(() => this.int8.delete(key));
    }
    return engine;
  }

  /** Versions holding an int8 engine (for tests and logs). */
  get int8Versions(): string[] {
    return [...this.int8.keys()];
  }

  async dispose(): Promise<void> {
    this.fp32.dispose();
    for (const e of await Promise.allSettled(this.int8.values())) if (e.status === 'fulfilled') e.value.dispose();
    this.int8.clear();
  }
}

export interface ScoreShardContext {
  store: ObjectStore;
  models: ModelCache;
  backbones: ModelBackbones;
  weightsSha256: string;
  log: Logger;
  batchSize: number;
  progress?: (done: number, total: number) => Promise<void> | void;
  /** The queued job, for its queue wait. */
  job?: QueuedJob;
}

/**
 * The test images of a shard with their ground truth (mask paths), found by listing only the ground_truth/<type>/
 * folders of the shard's defect types. Images outside the test/<type>/ layout have none (no pixel metrics).
 */
async function shardGroundTruth(store: ObjectStore, prefix: string, keys: readonly string[]): Promise<Map<string, DatasetImage>> {
  const rel = keys.map((k) => k.slice(prefix.length));
  const types = new Set(rel.map((r) => r.split('/')).filter((s) => s.length === 3 && s[0] === 'test' && s[1] !== 'good').map((s) => s[1]));
  const masks: string[] = [];
  for (const type of types) masks.push(...(await listRelative(store, `${prefix}ground_truth/${type}/`)).map((m) => `ground_truth/${type}/${m}`));
  const { test } = classifyDatasetPaths([...rel, ...masks], `"${prefix}"`);
  return new Map(test.map((img) => [img.path, img]));
}

export async function scoreShard(p: ScoreShardPayload, ctx: ScoreShardContext): Promise<ScoreShardResult> {
  checkDatasetKeys(p.datasetPrefix, p.imageKeys);
  const timer = new StageTimer();
  const { manifest, bank } = await timer.time('load_model', () => ctx.models.get(p.model.category, p.model.version));
  checkWeights(ctx.weightsSha256, manifest.backbone.weights.sha256, (actual, expected) =>
    `model ${p.model.category}/${p.model.version} was trained with weights ${manifest.backbone.weights.file} ` +
      `(sha256 ${expected}), not this worker's (${actual})`);
  const backbone = await timer.time('load_model', () => ctx.backbones.forModel(p.model.category, p.model.version, manifest));
  const truthOf = await timer.time('list', () => shardGroundTruth(ctx.store, p.datasetPrefix, p.imageKeys));
  const read = (rel: string) => timer.time('download', () => ctx.store.getObject(p.datasetPrefix + rel));
  const pixels = new PixelHistogram();
  const images: Omit<ShardScores['images'][number], 'map'>[] = [];
  const failed: ShardScores['failed'] = [];
  const maps: Float32Array[] = [];
  const entries: TensorImageEntry[] = [];
  let values = 0;
  let done = 0;
  const src = storeSources(ctx.store, p.datasetPrefix, p.imageKeys);
  const scoring = { manifest, bank, backbone, batchSize: ctx.batchSize, timer, recall: true };
  for await (const r of scorePatchcore(src.sources, scoring)) {
    // Storage faults fail the attempt (the job is retried); only undecodable images are reported as failed.
    if (!r.ok) src.throwIfReadFailed(r.id);
    if (r.ok) {
      const img = truthOf.get(r.id);
      const truth = img ? await readGroundTruth(img, r.frame, read) : { mask: null };
      if (truth.failed) failed.push(truth.failed);
      // Each image in its own whole-image grid: shards hold images of any size.
      const whole = timer.timeSync('metrics', () => summariseImage(pixels, r, truth.mask));
      entries.push({ key: p.datasetPrefix + r.id, offset: values, patches: whole.length, width: r.frame.resizedWidth, height: r.frame.resizedHeight });
      values += whole.length;
      maps.push(whole);
      images.push({ id: r.id, key: p.datasetPrefix + r.id, score: r.score, frame: r.frame, ...(r.recall ? { recall: r.recall } : {}) });
    } else {
      failed.push({ id: r.id, error: r.error });
      ctx.log.warn({ image: r.id, error: r.error }, 'image failed');
    }
    await ctx.progress?.(++done, p.imageKeys.length);
  }
  const data = new Float32Array(values);
  entries.forEach((e, i) => data.set(maps[i], e.offset));
  maps.length = 0;
  // One float per row, so that maps of any size share the file; each image's entry gives its size.
  const file = encodeTensorFile({ dtype: 'float32', dim: 1, count: values, grid: [1, 1], images: entries }, data);
  const dataStart = file.length - data.byteLength;
  const out: ShardScores = {
    runId: p.runId, shardId: p.shardId, model: p.model,
    images: images.map((im, i) => ({ ...im, map: { offset: dataStart + entries[i].offset * 4, values: entries[i].patches } })),
    failed, pixels: pixels.toJSON(), engine: backbone.name, backend: backbone.backend,
  };
  // Maps first, then the scores that point to them: a scores file always has its maps.
  await timer.time('upload', () => ctx.store.putObject(mapsKey(p.runId, p.shardId), file));
  await timer.time('upload', () => ctx.store.putJson(scoresKey(p.runId, p.shardId), out));
  const timings: ShardTimings = { timings_ms: timer.toJSON(), queue_wait_ms: queueWaitMs(ctx.job), finished_at: Date.now() };
  await ctx.store.putJson(scoreTimingsKey(p.runId, p.shardId), timings);
  return { shardId: p.shardId, images: out.images.length, failed: out.failed.length, timings_ms: timer.toJSON() };
}
