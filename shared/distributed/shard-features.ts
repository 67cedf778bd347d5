// Feature worker step: one shard of training images -> its patch embeddings in object storage
// (runs/<run>/embeddings/<shard>.bin), optionally pre-reduced by a per-shard coreset.
import type { BackboneEngine } from '../backbone/engine.js';
import { greedyCoreset } from '../coreset/greedy.js';
import { getRecipe } from '../features/recipes.js';
import type { Logger } from '../log.js';
import { extractFeatures } from '../pipeline/extract.js';
import { FeatureMatrix } from '../pipeline/feature-matrix.js';
import { checkWeights } from '../pipeline/weights.js';
import { StageTimer, queueWaitMs, type QueuedJob } from '../run/timings.js';
import type { ExtractFeaturesPayload } from '../queue/jobs.js';
import { embeddingsKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { encodeTensorFile, type TensorImageEntry } from '../storage/tensor-file.js';
import { checkDatasetKeys, storeSources } from './dataset-store.js';

export interface ShardFeaturesResult {
  shardId: string;
  key: string;
  /** Images whose features are in the file. */
  images: number;
  /** Patch rows those images gave (before any per-shard reduction). */
  patches: number;
  /** Rows written (after the per-shard coreset, if any). */
  rows: number;
  bytes: number;
  failed: { id: string; error: string }[];
  engine: string;
  backend: string;
  timings_ms: Record<string, number>;
  /** How long the job waited in the queue (null when unknown), and when it finished (ms since the epoch). */
  queue_wait_ms?: number | null;
  finished_at?: number;
}

export interface ShardFeaturesContext {
  store: ObjectStore;
  backbone: BackboneEngine;
  weightsSha256: string;
  log: Logger;
  progress?: (done: number, total: number) => Promise<void> | void;
  /** The queued job, for its queue wait. */
  job?: QueuedJob;
}

export async function extractShardFeatures(p: ExtractFeaturesPayload, ctx: ShardFeaturesContext): Promise<ShardFeaturesResult> {
  checkDatasetKeys(p.datasetPrefix, p.imageKeys);
  checkWeights(ctx.weightsSha256, p.weights.sha256, (actual, expected) =>
    `this worker's weights (sha256 ${actual}) are not the run's (${expected}): point PATCHCORE_WEIGHTS at the same file the run was submitted with`);
  const recipe = getRecipe(p.recipe);
  const timer = new StageTimer();
  const features = new FeatureMatrix(p.imageKeys.length, recipe.dim);
  const images: TensorImageEntry[] = [];
  const failed: { id: string; error: string }[] = [];
  let done = 0;
  const src = storeSources(ctx.store, p.datasetPrefix, p.imageKeys);
  for await (const r of extractFeatures(src.sources, {
    backbone: ctx.backbone, recipe, frame: p.frame, batchSize: p.batchSize, timer,
  })) {
    // Storage faults fail the attempt (the job is retried); only undecodable images are skipped.
    if (!r.ok) src.throwIfReadFailed(r.id);
    if (r.ok) {
      images.push({
        key: p.datasetPrefix + r.id, offset: features.rows, patches: r.features.gridH * r.features.gridW,
        grid: [r.features.gridH, r.features.gridW], frame: r.frame, ...(r.features.tiles ? { tiles: r.features.tiles } : {}),
      });
      features.add(r.id, r.features);
    } else {
      failed.push({ id: r.id, error: r.error });
      ctx.log.warn({ image: r.id, error: r.error }, 'image skipped');
    }
    await ctx.progress?.(++done, p.imageKeys.length);
  }

  let data = features.matrix();
  let rowMask: Uint32Array | null = null;
  if (p.perShardCoreset && features.rows > 0) {
    const { ratio, seed } = p.perShardCoreset;
    const selected = timer.timeSync('coreset', () => greedyCoreset(data, features.rows, recipe.dim, { ratio, seed }));
    // Kept in row order so every image still owns a contiguous block of rows.
    rowMask = Uint32Array.from(selected).sort();
    const reduced = new Float32Array(rowMask.length * recipe.dim);
    rowMask.forEach((row, i) => reduced.set(data.subarray(row * recipe.dim, (row + 1) * recipe.dim), i * recipe.dim));
    data = reduced;
    // Recount each image's rows after reduction.
    let k = 0;
    for (const img of images) {
      const start = k;
      while (k < rowMask.length && rowMask[k] < img.offset + img.patches) k++;
      img.patches = k - start;
      img.offset = start;
    }
  }
  const rows = data.length / recipe.dim;
  const body = encodeTensorFile(
    {
      dtype: 'float32', dim: recipe.dim, count: rows, grid: [features.gridH || 1, features.gridW || 1], images,
      recipe: recipe.name, frameSpec: p.frame, runId: p.runId, shardId: p.shardId,
      patches: features.rows, perShardCoreset: p.perShardCoreset ?? null,
    },
    data,
  );
  const key = embeddingsKey(p.runId, p.shardId);
  await timer.time('upload', () => ctx.store.putObject(key, body));
  return {
    shardId: p.shardId, key, images: images.length, patches: features.rows, rows, bytes: body.length, failed,
    engine: ctx.backbone.name, backend: ctx.backbone.backend, timings_ms: timer.toJSON(),
    queue_wait_ms: queueWaitMs(ctx.job), finished_at: Date.now(),
  };
}
