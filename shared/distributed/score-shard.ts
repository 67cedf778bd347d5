// Scorer step: one shard of test images -> per-image scores (runs/<run>/scores/<shard>.json) and anomaly maps
// in the model frame (runs/<run>/maps/<shard>.bin), with the model version loaded once per process.
import { z } from 'zod';
import type { BackboneEngine } from '../backbone/engine.js';
import { getRecipe } from '../features/recipes.js';
import type { Logger } from '../log.js';
import { extractFeatures } from '../pipeline/extract.js';
import { scoreImage } from '../pipeline/score-image.js';
import { StageTimer } from '../run/timings.js';
import type { ScoreShardPayload } from '../queue/jobs.js';
import { mapsKey, scoresKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { encodeTensorFile, type TensorImageEntry } from '../storage/tensor-file.js';
import { checkDatasetKeys, storeSources } from './dataset-store.js';
import type { ModelCache } from './model-store.js';
import { WeightsMismatchError } from './shard-features.js';

const FrameSchema = z.object({
  sourceWidth: z.number(), sourceHeight: z.number(), resizedWidth: z.number(), resizedHeight: z.number(),
  cropLeft: z.number(), cropTop: z.number(), width: z.number(), height: z.number(),
});

export const ShardScoresSchema = z.object({
  runId: z.string(),
  shardId: z.string(),
  model: z.object({ category: z.string(), version: z.string() }),
  images: z.array(z.object({ id: z.string(), key: z.string(), score: z.number(), frame: FrameSchema })),
  failed: z.array(z.object({ id: z.string(), error: z.string() })),
});
export type ShardScores = z.infer<typeof ShardScoresSchema>;

export interface ScoreShardResult {
  shardId: string;
  images: number;
  failed: number;
  timings_ms: Record<string, number>;
}

export interface ScoreShardContext {
  store: ObjectStore;
  models: ModelCache;
  backbone: BackboneEngine;
  weightsSha256: string;
  log: Logger;
  batchSize: number;
  progress?: (done: number, total: number) => Promise<void> | void;
}

export async function scoreShard(p: ScoreShardPayload, ctx: ScoreShardContext): Promise<ScoreShardResult> {
  checkDatasetKeys(p.datasetPrefix, p.imageKeys);
  const timer = new StageTimer();
  const { manifest, bank } = await timer.time('load_model', () => ctx.models.get(p.model.category, p.model.version));
  if (manifest.backbone.weights.sha256 !== ctx.weightsSha256) {
    throw new WeightsMismatchError(
      `model ${p.model.category}/${p.model.version} was trained with weights ${manifest.backbone.weights.file} ` +
        `(sha256 ${manifest.backbone.weights.sha256.slice(0, 12)}...), not this worker's (${ctx.weightsSha256.slice(0, 12)}...)`,
    );
  }
  const recipe = getRecipe(manifest.recipe);
  const out: ShardScores = { runId: p.runId, shardId: p.shardId, model: p.model, images: [], failed: [] };
  const maps: Float32Array[] = [];
  const entries: TensorImageEntry[] = [];
  let mapSize = 0;
  let grid: [number, number] = [1, 1];
  let done = 0;
  const src = storeSources(ctx.store, p.datasetPrefix, p.imageKeys);
  for await (const r of extractFeatures(src.sources, {
    backbone: ctx.backbone, recipe, frame: manifest.frame, batchSize: ctx.batchSize, timer,
  })) {
    // Storage faults fail the attempt (the job is retried); only undecodable images are reported as failed.
    if (!r.ok) src.throwIfReadFailed(r.id);
    if (r.ok) {
      const { score, map } = scoreImage(bank, manifest, r.features, r.frame, timer);
      if (mapSize === 0) {
        mapSize = map.length;
        grid = [r.frame.height, r.frame.width];
      }
      if (map.length !== mapSize) {
        out.failed.push({ id: r.id, error: `its model frame ${r.frame.width}x${r.frame.height} differs from the shard's` });
      } else {
        entries.push({ key: p.datasetPrefix + r.id, offset: maps.length, patches: 1 });
        maps.push(map);
        out.images.push({ id: r.id, key: p.datasetPrefix + r.id, score, frame: r.frame });
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
  await timer.time('upload', async () => {
    await ctx.store.putObject(mapsKey(p.runId, p.shardId), encodeTensorFile(
      { dtype: 'float32', dim: Math.max(mapSize, 1), count: maps.length, grid, images: entries }, data));
    await ctx.store.putJson(scoresKey(p.runId, p.shardId), out);
  });
  return { shardId: p.shardId, images: out.images.length, failed: out.failed.length, timings_ms: timer.toJSON() };
}
