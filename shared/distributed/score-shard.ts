// Scorer step, an adapter over the stages: one shard of test images in the bucket -> per-image scores
// (runs/<run>/scores/<shard>.json) and anomaly maps in the model frame (runs/<run>/maps/<shard>.bin), scored by the
// same loop as the local evaluate, with the model version loaded once per process.
import { z } from 'zod';
import type { BackboneEngine, CreateBackboneOptions } from '../backbone/engine.js';
import type { Logger } from '../log.js';
import { modelBackboneOptions, scorePatchcore } from '../methods/patchcore.js';
import type { ModelManifest } from '../model/manifest.js';
import { checkWeights } from '../pipeline/weights.js';
import type { ScoreShardPayload } from '../queue/jobs.js';
import { StageTimer, queueWaitMs, type QueuedJob } from '../run/timings.js';
import { mapsKey, runPrefix, scoresKey, shardName } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { encodeTensorFile, type TensorImageEntry } from '../storage/tensor-file.js';
import { checkDatasetKeys, storeSources } from './dataset-store.js';
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
  })),
  failed: z.array(z.object({ id: z.string(), error: z.string() })),
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

export async function scoreShard(p: ScoreShardPayload, ctx: ScoreShardContext): Promise<ScoreShardResult> {
  checkDatasetKeys(p.datasetPrefix, p.imageKeys);
  const timer = new StageTimer();
  const { manifest, bank } = await timer.time('load_model', () => ctx.models.get(p.model.category, p.model.version));
  checkWeights(ctx.weightsSha256, manifest.backbone.weights.sha256, (actual, expected) =>
    `model ${p.model.category}/${p.model.version} was trained with weights ${manifest.backbone.weights.file} ` +
      `(sha256 ${expected}), not this worker's (${actual})`);
  const backbone = await timer.time('load_model', () => ctx.backbones.forModel(p.model.category, p.model.version, manifest));
  const out: ShardScores = {
    runId: p.runId, shardId: p.shardId, model: p.model, images: [], failed: [], engine: backbone.name, backend: backbone.backend,
  };
  const maps: Float32Array[] = [];
  const entries: TensorImageEntry[] = [];
  let mapSize = 0;
  let grid: [number, number] = [1, 1];
  let done = 0;
  const src = storeSources(ctx.store, p.datasetPrefix, p.imageKeys);
  const scoring = { manifest, bank, backbone, batchSize: ctx.batchSize, timer, recall: true };
  for await (const r of scorePatchcore(src.sources, scoring)) {
    // Storage faults fail the attempt (the job is retried); only undecodable images are reported as failed.
    if (!r.ok) src.throwIfReadFailed(r.id);
    if (r.ok) {
      if (mapSize === 0) {
        mapSize = r.map.length;
        grid = [r.frame.height, r.frame.width];
      }
      if (r.map.length !== mapSize) {
        out.failed.push({ id: r.id, error: `its model frame ${r.frame.width}x${r.frame.height} differs from the shard's` });
      } else {
        entries.push({ key: p.datasetPrefix + r.id, offset: maps.length, patches: 1 });
        maps.push(r.map);
        out.images.push({ id: r.id, key: p.datasetPrefix + r.id, score: r.score, frame: r.frame, ...(r.recall ? { recall: r.recall } : {}) });
      }
    } else {
      out.failed.push({ id: r.id, error: r.error });
      ctx.log.warn({ image: r.id, error: r.error }, 'image failed');
    }
    await ctx.progress?.(++done, p.imageKeys.length);
  }
  const data = new Float32Array(maps.length * mapSize);
  maps.forEach((m, i) => data.set(m, i * mapSize));
  // Maps first, then the scores that point to them: a scores file always has its maps.
  await timer.time('upload', () => ctx.store.putObject(mapsKey(p.runId, p.shardId), encodeTensorFile(
    { dtype: 'float32', dim: Math.max(mapSize, 1), count: maps.length, grid, images: entries }, data)));
  await timer.time('upload', () => ctx.store.putJson(scoresKey(p.runId, p.shardId), out));
  const timings: ShardTimings = { timings_ms: timer.toJSON(), queue_wait_ms: queueWaitMs(ctx.job), finished_at: Date.now() };
  await ctx.store.putJson(scoreTimingsKey(p.runId, p.shardId), timings);
  return { shardId: p.shardId, images: out.images.length, failed: out.failed.length, timings_ms: timer.toJSON() };
}
