// Index worker step: the shard embeddings of a training run -> one coreset memory bank (merge-and-reduce: the
// union of the shards' rows, per-shard coresets or all patches, reduced again) -> a model version in storage.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_HNSW } from '../bank/index.js';
import { getRecipe } from '../features/recipes.js';
import type { Logger } from '../log.js';
import { buildBankInThread } from '../pipeline/bank-thread.js';
import { buildPatchcoreManifest } from '../pipeline/model-manifest.js';
import { StageTimer, jobTimings, peakRssMiB, queueWaitMs, sumJobTimings, type QueuedJob } from '../run/timings.js';
import { checkFailedShare, type BuildIndexPayload } from '../queue/jobs.js';
import { embeddingsKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { decodeTensorFile, type TensorFile } from '../storage/tensor-file.js';
import { setLatest, uploadModel } from './model-store.js';
import type { ShardFeaturesResult } from './shard-features.js';

export interface MergeIndexResult {
  category: string;
  version: string;
  bank: number;
  trainPatches: number;
  mergedRows: number;
  images: number;
  skipped: number;
  embeddingBytes: number;
  timings_ms: Record<string, number>;
  peak_rss_mib: number;
}

export async function mergeShardsIntoModel(
  p: BuildIndexPayload,
  shardResults: Map<string, ShardFeaturesResult>,
  ctx: { store: ObjectStore; log: Logger; job?: QueuedJob },
): Promise<MergeIndexResult> {
  const timer = new StageTimer();
  const t0 = performance.now();
  const recipe = getRecipe(p.recipe);
  // Shards in the order the run lists them: the same rows in the same order as a single-process fit.
  const files: TensorFile[] = [];
  let embeddingBytes = 0;
  for (const shard of p.shards) {
    const key = embeddingsKey(p.runId, shard);
    const buf = await timer.time('download', () => ctx.store.getObject(key));
    embeddingBytes += buf.length;
    const file = decodeTensorFile(buf, key);
    if (file.header.dim !== recipe.dim || file.header.recipe !== recipe.name) {
      throw new Error(`embeddings file "${key}" holds ${String(file.header.recipe)} features of ${file.header.dim} dims; this run uses ${recipe.name} (${recipe.dim})`);
    }
    files.push(file);
  }
  // Shards never overlap when the producer made them; a run whose shards do is refused, not double-counted.
  const shardOfImage = new Map<string, string>();
  files.forEach((f, i) => {
    for (const img of f.header.images) {
      const earlier = shardOfImage.get(img.key);
      if (earlier !== undefined) throw new Error(`training run ${p.runId}: image "${img.key}" is in shards ${earlier} and ${p.shards[i]}`);
      shardOfImage.set(img.key, p.shards[i]);
    }
  });
  const rows = files.reduce((s, f) => s + f.header.count, 0);
  const trainPatches = files.reduce((s, f) => s + Number(f.header.patches ?? f.header.count), 0);
  const images = files.reduce((s, f) => s + f.header.images.length, 0);
  if (rows === 0) throw new Error(`training run ${p.runId}: no shard produced any features (every image failed?)`);
  // Images of different sizes have their own grids; the manifest records the first image's, as a local fit does.
  const grid = files.find((f) => f.header.count > 0)!.header.grid;
  // A run that could not read more than the allowed share of its images fails instead of publishing from the rest.
  const skippedImages = p.shards.flatMap((s) => shardResults.get(s)?.failed ?? []);
  checkFailedShare(`training run ${p.runId}`, skippedImages, images + skippedImages.length, p.maxFailedShare);

  const merged = new Float32Array(rows * recipe.dim);
  let offset = 0;
  for (const f of files) {
    merged.set(f.data, offset);
    offset += f.data.length;
  }
  files.length = 0;

  const hnsw = { ...DEFAULT_HNSW, ...p.hnsw };
  const bankDir = await mkdtemp(join(tmpdir(), 'patchcore-bank-'));
  try {
    const built = await buildBankInThread({
      features: merged, rows, dim: recipe.dim, trainPatches, dir: bankDir,
      settings: { ratio: p.coreset.ratio, projectionDim: p.coreset.projectionDim, seed: p.coreset.seed, hnsw },
      logBindings: { runId: p.runId },
    });
    for (const [stage, ms] of Object.entries(built.timings_ms)) timer.add(stage, ms);

    const results = p.shards.map((s) => shardResults.get(s)).filter((r) => r !== undefined);
    const first = results[0];
    const lastShardDone = Math.max(0, ...results.map((r) => r.finished_at ?? 0));
    const manifest = buildPatchcoreManifest({
      category: p.category, recipe, grid, weights: p.weights,
      engine: first?.engine ?? 'unknown', backend: first?.backend ?? 'unknown', frame: p.frame,
      coreset: { ratio: p.coreset.ratio, projectionDim: p.coreset.projectionDim, seed: p.coreset.seed, trainPatches },
      bank: { count: built.count, hnsw },
      scoring: { sigma: p.sigma, reweightNeighbours: p.reweightNeighbours ?? null },
      training: {
        images,
        skipped: skippedImages,
        timings_ms: { ...timer.toJSON(), total: Math.round(performance.now() - t0) },
        jobs: {
          features: sumJobTimings(results.map((r) => jobTimings(r.timings_ms, r.queue_wait_ms ?? null))),
          index: jobTimings(timer.toJSON(), queueWaitMs(ctx.job, lastShardDone)),
        },
      },
    });
    await timer.time('upload', () => uploadModel(ctx.store, p.category, p.version, bankDir, manifest, { runId: p.runId }));
    await setLatest(ctx.store, p.category, p.version, p.runId);
    ctx.log.info({ category: p.category, version: p.version, bank: built.count, rows, trainPatches }, 'model version written');
    return {
      category: p.category, version: p.version, bank: built.count, trainPatches, mergedRows: rows, images,
      skipped: manifest.training.skipped.length, embeddingBytes, timings_ms: timer.toJSON(), peak_rss_mib: peakRssMiB(),
    };
  } finally {
    await rm(bankDir, { recursive: true, force: true });
  }
}
