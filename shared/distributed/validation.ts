// The held-out good images of a distributed training run (`submit train --validation-split`): feature shards of
// their own, never merged into the bank. The root scores them against the new bank one shard file at a time (each
// image as `fit --validation-split` scores its held-out images) and records the scores in the manifest, where the
// target-FPR threshold of evaluations and unlabelled scoring runs comes from.
import type { MemoryBank } from '../bank/index.js';
import type { TileLayout } from '../features/recipes.js';
import type { Frame } from '../image/index.js';
import type { ModelManifest } from '../model/manifest.js';
import { scoreImage } from '../pipeline/score-image.js';
import type { StageTimer } from '../run/timings.js';
import { embeddingsKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { decodeTensorFile, imageGrid, imageRows } from '../storage/tensor-file.js';

export interface ValidationScores {
  /** The images' object keys, and their image scores, in shard order. */
  images: string[];
  scores: number[];
}

/** Image scores of every image in the validation shards' feature files, against `bank`. */
export async function scoreValidationShards(
  store: ObjectStore, runId: string, shards: readonly string[], bank: MemoryBank, manifest: ModelManifest, timer: StageTimer,
): Promise<ValidationScores> {
  const out: ValidationScores = { images: [], scores: [] };
  for (const shard of shards) {
    const key = embeddingsKey(runId, shard);
    const file = decodeTensorFile(await timer.time('download', () => store.getObject(key)), key);
    const { dim } = file.header;
    if (dim !== bank.dim) throw new Error(`validation features "${key}" have ${dim} dims; the bank has ${bank.dim}`);
    for (const [i, img] of file.header.images.entries()) {
      const [gridH, gridW] = imageGrid(file, i);
      const frame = img.frame as Frame | undefined;
      if (!frame) throw new Error(`validation features "${key}": image "${img.key}" has no frame`);
      const features = { data: imageRows(file, i), gridH, gridW, dim, ...(img.tiles ? { tiles: img.tiles as TileLayout } : {}) };
      out.images.push(img.key);
      out.scores.push(scoreImage(bank, manifest, features, frame, timer).score);
    }
  }
  return out;
}
