// A method (PatchCore, the autoencoder baseline) as a plug-in: how evaluate and compare check a model folder and
// score test images with it, without knowing which method it is.
import type { EngineName } from '../backbone/engine.js';
import type { ImageResult, ModelDescription } from '../evaluation/types.js';
import type { Logger } from '../log.js';
import type { ModelMethod } from '../model/manifest.js';
import type { ImageSource } from '../run/sources.js';
import type { StageTimer } from '../run/timings.js';

export interface MethodOptions {
  /** Backbone weights for PatchCore models (must be the ones they were trained with); unused by the autoencoder. */
  weightsPath: string;
  engine?: EngineName;
  batchSize: number;
  /** PatchCore: measure HNSW recall@1 on each image's sampled patches. */
  recall: boolean;
  logger: Logger;
}

/** A model ready to score. */
export interface MethodScorer {
  /** One result per source, in order. */
  score(sources: ImageSource[]): AsyncGenerator<ImageResult>;
  /** metrics.json's `model`, without ids (the caller adds the folder or version). */
  model: Record<string, unknown>;
  describe: ModelDescription;
  /** Scores of good images held out at training time: the basis of a target-FPR threshold. */
  validationScores?: readonly number[];
  dispose(): void;
}

export interface Method {
  name: ModelMethod;
  /** Refuses a model folder that cannot be scored as asked (wrong weights, bad manifest), before any work. */
  check(modelDir: string, opts: Pick<MethodOptions, 'weightsPath'>): Promise<void>;
  open(modelDir: string, opts: MethodOptions, timer: StageTimer): Promise<MethodScorer>;
}
