// Index worker step, the root of a training run: its inputs (every shard's embeddings, or in a reduce-tree run the
// top reduce steps' outputs; in an incremental run also the parent version's bank) -> one coreset memory bank ->
// a model version in storage. Merge-and-reduce: per-shard coresets or all patches, reduced again here. A run with
// held-out images (--validation-split) has them scored against the new bank before the manifest is written.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_HNSW, MemoryBank } from '../bank/index.js';
import { getRecipe } from '../features/recipes.js';
import type { Logger } from '../log.js';
import { buildBankInThread } from '../pipeline/bank-thread.js';
import { buildPatchcoreManifest } from '../pipeline/model-manifest.js';
import { StageTimer, jobTimings, peakRssMiB, queueWaitMs, type QueuedJob } from '../run/timings.js';
import { jobIds } from '../queue/flows.js';
import type { BuildIndexPayload, ReduceInput } from '../queue/jobs.js';
import type { ObjectStore } from '../storage/object-store.js';
import { setLatest, uploadModel } from './model-store.js';
import type { ShardFeaturesResult } from './shard-features.js';
import { scoreValidationShards } from './validation.js';
import { checkRunFailures, gatherInputs, readPriorBank, summarizeInputs, withRowSpoolPath, type InputResult } from './reduce.js';

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

/**
 * What the root merges: the payload's inputs in a tree run, else every shard in the order the run lists them, except
 * the shards of held-out images (scored against the bank, not merged into it).
 */
export function rootInputs(p: BuildIndexPayload): ReduceInput[] {
  const heldOut = new Set(p.validationShards ?? []);
  return p.inputs ?? p.shards.filter((id) => !heldOut.has(id)).map((id) => ({ kind: 'shard', id }));
}

/** `results`: the return values of the root's children (feature or reduce jobs) by job id. */
export async function mergeShardsIntoModel(
  p: BuildIndexPayload,
  results: ReadonlyMap<string, InputResult>,
  ctx: { store: ObjectStore; log: Logger; job?: QueuedJob },
): Promise<MergeIndexResult> {
  const timer = new StageTimer();
  const t0 = performance.now();
  const recipe = getRecipe(p.recipe);
  const inputs = rootInputs(p);
  const prior = p.parentModel
    ? await timer.time('download', () => readPriorBank(ctx.store, p.parentModel!, { recipe: recipe.name, weightsSha256: p.weights.sha256 }))
    : undefined;
  const validationShards = p.validationShards ?? [];
  // Skipped images and job timings of the held-out shards count with the others'.
  const below = summarizeInputs(p.runId, [...inputs, ...validationShards.map((id): ReduceInput => ({ kind: 'shard', id }))], results);
  const hnsw = { ...DEFAULT_HNSW, ...p.hnsw };
  const ratio = p.coreset.size === undefined ? p.coreset.ratio : null;
  const bankDir = await mkdtemp(join(tmpdir(), 'patchcore-bank-'));
  try {
    // Inputs in the order the run lists them: without a tree, the same rows in the same order as a single-process fit.
    const { gathered, built } = await withRowSpoolPath(async (spoolPath) => {
      const gathered = await gatherInputs(ctx.store, p.runId, recipe, inputs, results, timer, spoolPath, prior);
      if (gathered.rows === 0) throw new Error(`training run ${p.runId}: no shard produced any features (every image failed?)`);
      // A run that could not read more than the allowed share of its images fails instead of publishing from the rest.
      const heldOutImages = validationShards.reduce((n, id) => n + ((results.get(jobIds.extractFeatures(p.runId, id)) as ShardFeaturesResult | undefined)?.images ?? 0), 0);
      checkRunFailures(p.runId, below.failed, gathered.images + heldOutImages, p.maxFailedShare);
      const built = await buildBankInThread({
        rowsFile: spoolPath, rows: gathered.rows, dim: recipe.dim, trainPatches: gathered.patches, dir: bankDir,
        settings: { ratio, target: p.coreset.size, projectionDim: p.coreset.projectionDim, seed: p.coreset.seed, hnsw },
        logBindings: { runId: p.runId },
      });
      return { gathered, built };
    });
    const { rows, patches: trainPatches, images } = gathered;
    for (const [stage, ms] of Object.entries(built.timings_ms)) timer.add(stage, ms);

    const priorImages = prior?.manifest.training.images ?? 0;
    const manifest = buildPatchcoreManifest({
      category: p.category, recipe, grid: gathered.grid, weights: p.weights,
      engine: below.engine !== 'unknown' ? below.engine : (prior?.manifest.backbone.engine ?? 'unknown'),
      backend: below.backend !== 'unknown' ? below.backend : (prior?.manifest.backbone.backend ?? 'unknown'),
      frame: p.frame,
      coreset: { ratio, projectionDim: p.coreset.projectionDim, seed: p.coreset.seed, trainPatches },
      bank: { count: built.count, hnsw },
      scoring: { sigma: p.sigma, reweightNeighbours: p.reweightNeighbours ?? null },
      training: {
        images: images + priorImages,
        skipped: below.failed,
        timings_ms: { ...timer.toJSON(), total: Math.round(performance.now() - t0) },
        jobs: {
          features: below.features,
          ...(below.reduce ? { reduce: below.reduce } : {}),
          index: jobTimings(timer.toJSON(), queueWaitMs(ctx.job, below.lastDone)),
        },
      },
    });
    if (p.coreset.size !== undefined) manifest.coreset.size = p.coreset.size;
    if (p.tree) {
      const depth = 1 + Math.max(0, ...p.tree.nodes.map((n) => Number(n.split('-')[0]) || 0));
      manifest.training.tree = { fanIn: p.tree.fanIn, depth, nodes: p.tree.nodes.length };
    }
    if (validationShards.length > 0) {
      const bank = await MemoryBank.load(bankDir, { dim: recipe.dim });
      manifest.validation = await scoreValidationShards(ctx.store, p.runId, validationShards, bank, manifest, timer);
      // The root's own timings include the scoring.
      manifest.training.timings_ms = { ...timer.toJSON(), total: Math.round(performance.now() - t0) };
      manifest.training.jobs!.index = jobTimings(timer.toJSON(), queueWaitMs(ctx.job, below.lastDone));
      ctx.log.info({ images: manifest.validation.images.length }, 'held-out images scored');
    }
    if (prior) {
      manifest.training.parent = { category: prior.category, version: prior.version };
      manifest.training.added = { images, prefix: p.imagesPrefix ?? null };
    }
    await timer.time('upload', () => uploadModel(ctx.store, p.category, p.version, bankDir, manifest, { runId: p.runId }));
    await setLatest(ctx.store, p.category, p.version, p.runId);
    ctx.log.info({ category: p.category, version: p.version, bank: built.count, rows, trainPatches, parent: p.parentModel?.version }, 'model version written');
    return {
      category: p.category, version: p.version, bank: built.count, trainPatches, mergedRows: rows, images: images + priorImages,
      skipped: manifest.training.skipped.length, embeddingBytes: gathered.bytes, timings_ms: timer.toJSON(), peak_rss_mib: peakRssMiB(),
    };
  } finally {
    await rm(bankDir, { recursive: true, force: true });
  }
}
