// Queue names and job payloads in one place. Producers validate a payload before enqueueing it and
// workers validate it again before running it, with the same zod schema, so a worker of another
// version fails the job with a clear message instead of misreading it.
//
// Schemas are not strict: unknown fields are dropped rather than rejected, so an older worker keeps
// working while newer producers add optional fields during a rolling upgrade.
import { z } from 'zod';
import type { JobsOptions } from 'bullmq';
import { RECIPE_NAMES } from '../features/recipes.js';
import { PermanentError } from '../errors.js';

export const FEATURES_QUEUE = 'patchcore-features';
export const INDEX_QUEUE = 'patchcore-index';
export const SCORE_QUEUE = 'patchcore-score';
export const REPORT_QUEUE = 'patchcore-report';
/** Training runs of many shards: the inner nodes of the reduce tree (served by the index worker process). */
export const REDUCE_QUEUE = 'patchcore-reduce';
/** Scheduled retraining: a BullMQ job scheduler puts one `retrain` job here per cron tick. */
export const SCHEDULE_QUEUE = 'patchcore-schedule';

export const QUEUE_NAMES = [FEATURES_QUEUE, INDEX_QUEUE, SCORE_QUEUE, REPORT_QUEUE, SCHEDULE_QUEUE, REDUCE_QUEUE] as const;
export type QueueName = (typeof QUEUE_NAMES)[number];

/** Job kinds; a job's BullMQ name is its kind. */
export const JOB_KINDS = ['extract-features', 'build-index', 'score-shard', 'report', 'retrain', 'reduce'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

/** Every kind has its own queue, so a worker pool can be sized per kind. */
export const QUEUE_OF_KIND = {
  'extract-features': FEATURES_QUEUE,
  'build-index': INDEX_QUEUE,
  'score-shard': SCORE_QUEUE,
  report: REPORT_QUEUE,
  retrain: SCHEDULE_QUEUE,
  reduce: REDUCE_QUEUE,
} as const satisfies Record<JobKind, QueueName>;

export const KIND_OF_QUEUE = {
  [FEATURES_QUEUE]: 'extract-features',
  [INDEX_QUEUE]: 'build-index',
  [SCORE_QUEUE]: 'score-shard',
  [REPORT_QUEUE]: 'report',
  [SCHEDULE_QUEUE]: 'retrain',
  [REDUCE_QUEUE]: 'reduce',
} as const satisfies Record<QueueName, JobKind>;

export type KindOfQueue<Q extends QueueName> = (typeof KIND_OF_QUEUE)[Q];

export const MAX_ID_LENGTH = 128;
const ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** Run, shard, category and version ids: they become S3 key segments and parts of job ids. */
export function idProblem(value: string): string | null {
  if (!ID_RE.test(value)) return `must be 1 to ${MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ -`;
  // Same rule as the storage keys: no hidden or parent-directory segments.
  if (value.startsWith('.') || value.includes('..')) return 'must not start with "." or contain ".."';
  return null;
}

const Id = z.string().superRefine((v, ctx) => {
  const problem = idProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} ${problem}` });
});

/**
 * Upper bounds on what one job may ask for, so a mistyped flag or a hostile payload cannot make a worker allocate
 * without limit. The CLI checks the same limits when it reads its flags.
 */
export const PAYLOAD_LIMITS = Object.freeze({
  /** Resize / crop side in pixels (the model sees crop x crop; 224 by default). */
  frameSide: 1024,
  /** Images in one shard (one job). */
  shardImages: 1000,
  /** Shards in one run. */
  shards: 10_000,
  /** Inputs of one reduce step (the tree's fan-in). */
  fanIn: 64,
  /** Gaussian projection width of the coreset selection. */
  projectionDim: 1024,
  hnswM: 128,
  hnswEf: 4096,
  batchSize: 256,
  /** Images downloaded by a worker: larger objects are refused before their body is read. */
  imageBytes: 64 * 1024 * 1024,
  /** The share of a run's images that may be unreadable before the run fails instead of publishing. */
  defaultMaxFailedShare: 0.05,
  /** Most anomalous images shown by an unlabelled report (each one's map is held until the report is written). */
  reportTop: 200,
  /** Held-out good images of one training run (`--validation-split`): the root scores them all before publishing. */
  validationImages: 2000,
});

const ObjectKey = z.string().min(1).max(1024);
const ShardList = z
  .array(Id)
  .min(1)
  .max(PAYLOAD_LIMITS.shards)
  .superRefine((shards, ctx) => {
    const seen = new Set<string>();
    shards.forEach((s, i) => {
      if (seen.has(s)) ctx.addIssue({ code: 'custom', path: [i], message: `duplicate shard id ${JSON.stringify(s)}` });
      seen.add(s);
    });
  });
const Recipe = z.enum(RECIPE_NAMES);
const Ratio = z.number().gt(0).max(1);
const Seed = z.number().int();
const ModelRef = z.object({ category: Id, version: Id });
/** The coreset of a training run: a ratio of the training patches, or a row cap (`size`) when one is given. */
const Coreset = z.object({
  ratio: Ratio,
  seed: Seed,
  projectionDim: z.number().int().positive().max(PAYLOAD_LIMITS.projectionDim),
  /** Row cap of the bank and of every reduce step's output (absent: the ratio alone sets the sizes). */
  size: z.number().int().positive().optional(),
});
/** One input of a reduce step: a feature shard's embeddings or another reduce step's output. */
const ReduceInput = z.object({ kind: z.enum(['shard', 'reduce']), id: Id });
const ReduceInputs = z.array(ReduceInput).min(1).max(PAYLOAD_LIMITS.fanIn);

const FrameSide = z.number().int().positive().max(PAYLOAD_LIMITS.frameSide);
const Frame = z.object({
  resize: FrameSide.nullable(),
  crop: FrameSide.nullable(),
  // Tiling (--tile, --tile-overlap): each tile goes through the backbone at its own size.
  tile: FrameSide.nullable().optional(),
  tileOverlap: z.number().int().nonnegative().max(PAYLOAD_LIMITS.frameSide).optional(),
});
const ImageKeys = z.array(ObjectKey).min(1).max(PAYLOAD_LIMITS.shardImages);
/** Fail the run when more than this share of its images could not be read (default 5%). */
const MaxFailedShare = z.number().min(0).max(1).optional();

export const ExtractFeaturesPayloadSchema = z.object({
  runId: Id,
  shardId: Id,
  imageKeys: ImageKeys,
  datasetPrefix: ObjectKey,
  recipe: Recipe,
  frame: Frame,
  weights: z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits') }),
  /** Optional per-shard coreset before the global one, to bound what build-index has to load. */
  perShardCoreset: z.object({ ratio: Ratio, seed: Seed }).nullable().optional(),
  batchSize: z.number().int().min(1).max(PAYLOAD_LIMITS.batchSize),
});

export const BuildIndexPayloadSchema = z.object({
  runId: Id,
  category: Id,
  version: Id,
  recipe: Recipe,
  coreset: Coreset,
  /** Recorded in the model manifest: the weights and framing the feature workers used. */
  weights: z.object({ file: z.string().min(1), sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits') }),
  frame: Frame,
  /** Anomaly-map smoothing at the 224-pixel scale (default 4). */
  sigma: z.number().positive().optional(),
  /** Recorded in the model manifest: the paper's score re-weighting over this many neighbours (null/absent = plain max). */
  reweightNeighbours: z.number().int().positive().max(PAYLOAD_LIMITS.hnswEf).nullable().optional(),
  hnsw: z.object({
    M: z.number().int().min(2).max(PAYLOAD_LIMITS.hnswM),
    efConstruction: z.number().int().positive().max(PAYLOAD_LIMITS.hnswEf),
    efSearch: z.number().int().positive().max(PAYLOAD_LIMITS.hnswEf),
  }),
  shards: ShardList,
  maxFailedShare: MaxFailedShare,
  /** A reduce-tree run: the root's own inputs (reduce steps or shards). Absent: the root merges every shard. */
  inputs: ReduceInputs.optional(),
  /** A reduce-tree run: its fan-in and every reduce step's node id (for status, retry and cancel). */
  tree: z.object({ fanIn: z.number().int().min(2).max(PAYLOAD_LIMITS.fanIn), nodes: z.array(Id).max(PAYLOAD_LIMITS.shards) }).optional(),
  /** Incremental retraining: the bank of this version is one more input of the root; its images are not read again. */
  parentModel: ModelRef.optional(),
  /** Recorded in the manifest: where the run's images came from (`submit train --images`). */
  imagesPrefix: ObjectKey.optional(),
  /**
   * Shards (also listed in `shards`) of held-out good images (`submit train --validation-split`): not merged into the
   * bank; the root scores them against it and records the scores, from which a target-FPR threshold is set.
   */
  validationShards: ShardList.optional(),
});

/** One inner node of a training run's reduce tree: at most fan-in inputs -> one coreset (runs/<run>/reduce/<node>.bin). */
export const ReducePayloadSchema = z.object({
  runId: Id,
  node: Id,
  recipe: Recipe,
  /** `seed` is the node's own, derived from the run's seed and the node id. */
  coreset: Coreset,
  inputs: ReduceInputs,
});

export const ScoreShardPayloadSchema = z.object({
  runId: Id,
  shardId: Id,
  model: ModelRef,
  imageKeys: ImageKeys,
  datasetPrefix: ObjectKey,
});

/** The report of an unlabelled scoring run (`submit score --images`): results.csv/jsonl and the score distribution. */
export const UnlabelledReportSchema = z.object({
  kind: z.literal('unlabelled'),
  /** What the run scored (`datasets/<name>/[<folder>/]`), for the report. */
  imagesPrefix: ObjectKey,
  /** The false-positive rate on the model's held-out good images that sets the threshold (default 0.01). */
  targetFpr: z.number().min(0).max(1).optional(),
  /** How many of the most anomalous images the report shows (default 24). */
  top: z.number().int().min(1).max(PAYLOAD_LIMITS.reportTop).optional(),
});
export type UnlabelledReport = z.infer<typeof UnlabelledReportSchema>;

export const ReportPayloadSchema = z.object({
  runId: Id,
  model: ModelRef,
  shards: ShardList,
  datasetPrefix: ObjectKey,
  category: Id,
  maxFailedShare: MaxFailedShare,
  /** Absent: an evaluation report (metrics against the labels). */
  unlabelled: UnlabelledReportSchema.optional(),
});

/** One scheduled retraining: submit a training run of `dataset` for `category` (a new model version). */
export const RetrainPayloadSchema = z.object({
  dataset: Id,
  category: Id,
  recipe: Recipe.optional(),
  coresetRatio: Ratio.optional(),
  perShardCoresetRatio: Ratio.nullable().optional(),
  shardSize: z.number().int().min(1).max(PAYLOAD_LIMITS.shardImages).optional(),
  coresetSize: z.number().int().positive().optional(),
  fanIn: z.number().int().min(2).max(PAYLOAD_LIMITS.fanIn).optional(),
  validationSplit: z.number().min(0).lt(1).optional(),
});

export type ExtractFeaturesPayload = z.infer<typeof ExtractFeaturesPayloadSchema>;
export type BuildIndexPayload = z.infer<typeof BuildIndexPayloadSchema>;
export type ScoreShardPayload = z.infer<typeof ScoreShardPayloadSchema>;
export type ReportPayload = z.infer<typeof ReportPayloadSchema>;
export type RetrainPayload = z.infer<typeof RetrainPayloadSchema>;
export type ReducePayload = z.infer<typeof ReducePayloadSchema>;
export type ReduceInput = z.infer<typeof ReduceInput>;

export interface JobPayloads {
  'extract-features': ExtractFeaturesPayload;
  'build-index': BuildIndexPayload;
  'score-shard': ScoreShardPayload;
  report: ReportPayload;
  retrain: RetrainPayload;
  reduce: ReducePayload;
}

export const PAYLOAD_SCHEMAS: { [K in JobKind]: z.ZodType<JobPayloads[K]> } = {
  'extract-features': ExtractFeaturesPayloadSchema,
  'build-index': BuildIndexPayloadSchema,
  'score-shard': ScoreShardPayloadSchema,
  report: ReportPayloadSchema,
  retrain: RetrainPayloadSchema,
  reduce: ReducePayloadSchema,
};

function issuePath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || '(payload)';
}

/**
 * Returns `data` as a `kind` payload, or throws
 * `invalid <kind> payload in job <jobId>: <field>: <problem>; <field>: <problem>`.
 */
export function validatePayload<K extends JobKind>(kind: K, data: unknown, jobId: string | undefined): JobPayloads[K] {
  const schema = PAYLOAD_SCHEMAS[kind] as z.ZodType<JobPayloads[K]> | undefined;
  if (!schema) throw new Error(`unknown job kind ${JSON.stringify(kind)} (job ${jobId ?? '(no id)'})`);
  const parsed = schema.safeParse(data);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${issuePath(i.path)}: ${i.message}`);
  throw new Error(`invalid ${kind} payload in job ${jobId ?? '(no id)'}: ${problems.join('; ')}`);
}

/**
 * Refuses a run in which more than `maxShare` of the images could not be read (PermanentError naming the run, the
 * count and a few of them): a model or report built from the rest would silently describe a different data set.
 */
export function checkFailedShare(
  what: string, failed: readonly { id: string; error: string }[], total: number, maxShare: number = PAYLOAD_LIMITS.defaultMaxFailedShare,
): void {
  if (total <= 0 || failed.length / total <= maxShare) return;
  const sample = failed.slice(0, 3).map((f) => `${f.id} (${f.error})`).join('; ');
  throw new PermanentError(
    `${what}: ${failed.length} of ${total} images (${((100 * failed.length) / total).toFixed(1)}%) could not be read, more than the ${(100 * maxShare).toFixed(1)}% allowed; e.g. ${sample}`,
  );
}

/**
 * Options for every job of the pipeline. Attempts are for transient faults (S3 or Redis hiccups,
 * a killed pod); a deterministic failure still ends after 3 tries, 10 s then 20 s apart. Finished
 * jobs are kept for a week (failed: a month), long enough for `status`, bounded so Redis does not grow.
 * Note that a run id can only be submitted again once its jobs have been removed (ids are deterministic).
 */
export const defaultJobOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 10_000 },
  removeOnComplete: { age: 7 * 24 * 3600, count: 10_000 },
  removeOnFail: { age: 30 * 24 * 3600, count: 10_000 },
} as const satisfies JobsOptions;
