// Producer: uploads datasets, splits a dataset prefix into shards and enqueues the training or evaluation flow,
// and waits for runs. Everything a run needs is in its job payloads; runs/<run>/run.json records the submission.
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { basename, join, sep } from 'node:path';
import type { FlowProducer, JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { DEFAULT_HNSW, type HnswParams } from '../../shared/bank/index.js';
import { DEFAULT_PROJECTION_DIM } from '../../shared/coreset/greedy.js';
import { validationIds } from '../../shared/pipeline/validation-split.js';
import { IMAGE_EXTENSIONS, isImagePath, listImagesUnder, listStoredDataset, parseImagesPrefix } from '../../shared/distributed/dataset-store.js';
import { classifyDatasetPaths } from '../../shared/dataset/mvtec.js';
import { claimKey, readLatest, resolveVersion, versionTaken } from '../../shared/distributed/model-store.js';
import { ModelManifestSchema, type ModelManifest } from '../../shared/model/manifest.js';
import { UserError } from '../../shared/errors.js';
import { getRecipe, type RecipeName } from '../../shared/features/recipes.js';
import { DEFAULT_FRAME_SPEC, type FrameSpec } from '../../shared/image/index.js';
import type { Logger } from '../../shared/log.js';
import { PAYLOAD_LIMITS } from '../../shared/queue/jobs.js';
import {
  DEFAULT_FAN_IN, enqueueEvaluationFlow, enqueueTrainingFlow, planReduceTree, runProgress, type RunKind, type RunProgress, type ShardSpec,
} from '../../shared/queue/flows.js';
import { datasetPrefix, datasetsRoot, modelKey, runManifestKey, shardName } from '../../shared/storage/keys.js';
import type { ObjectStore } from '../../shared/storage/object-store.js';

export interface ProducerContext {
  store: ObjectStore;
  flows: FlowProducer;
  log: Logger;
}

/** A sortable, unique run id: <kind>-<category>-<UTC time>-<random>. */
export function newRunId(kind: 'train' | 'eval' | 'score', category: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${kind}-${category}-${stamp}-${randomBytes(2).toString('hex')}`;
}

export function splitShards(imageKeys: string[], shardSize: number): ShardSpec[] {
  if (!Number.isInteger(shardSize) || shardSize < 1) throw new UserError(`--shard-size must be a positive integer, got ${shardSize}`);
  if (shardSize > PAYLOAD_LIMITS.shardImages) throw new UserError(`--shard-size ${shardSize} is above the limit of ${PAYLOAD_LIMITS.shardImages} images per shard`);
  const shards: ShardSpec[] = [];
  for (let i = 0; i < imageKeys.length; i += shardSize) {
    shards.push({ shardId: shardName(shards.length), imageKeys: imageKeys.slice(i, i + shardSize) });
  }
  return shards;
}

export interface IngestedDataset {
  prefix: string;
  /** Every file uploaded (images, masks, anything else in the folder). */
  files: number;
  /** Files taken as images by `--images` runs (an image extension, no hidden segment). */
  images: number;
  /** 'mvtec' when the folder has train/good/ or test/<type>/ images (what `--dataset` runs read), else 'images'. */
  layout: 'mvtec' | 'images';
}

/**
 * Uploads a local folder to datasets/<name>/, every file under its relative path: an MVTec AD category or images in
 * any layout. A folder without an image is refused (UserError naming it) before anything is uploaded.
 */
export async function ingestDataset(store: ObjectStore, localDir: string, dataset: string): Promise<IngestedDataset> {
  const prefix = datasetPrefix(dataset);
  if (!statSync(localDir, { throwIfNoEntry: false })?.isDirectory()) throw new UserError(`folder "${localDir}" does not exist or is not a folder`);
  // Files as uploadDir takes them: linked files followed, linked folders not.
  const paths = readdirSync(localDir, { recursive: true, encoding: 'utf8' })
    .map((p) => p.split(sep).join('/'))
    .filter((p) => statSync(join(localDir, p), { throwIfNoEntry: false })?.isFile());
  const images = paths.filter(isImagePath).length;
  if (images === 0) {
    throw new UserError(`folder "${localDir}" has no images to ingest (${paths.length} files; images are ${IMAGE_EXTENSIONS.map((e) => `.${e}`).join(' ')})`);
  }
  const { train, test } = classifyDatasetPaths(paths, `folder "${localDir}"`);
  const uploaded = await store.uploadDir(localDir, prefix);
  return { prefix, files: uploaded.length, images, layout: train.length + test.length > 0 ? 'mvtec' : 'images' };
}

export interface TrainingRequest {
  /** The training images: a dataset's train/good/ images, or every image under `images` (exactly one of the two). */
  dataset?: string;
  /** A bucket prefix under datasets/<name>/ (`--images`): every image under it is a good training image, any layout. */
  images?: string;
  /** Incremental retraining (`--from-version`): a version of the category, or 'latest', whose bank joins the new images'. */
  fromVersion?: string;
  /** Row cap of the bank and of every reduce step (`--coreset-size`); the ratio applies when absent. */
  coresetSize?: number;
  /** Inputs per reduce step (`--fan-in`, default DEFAULT_FAN_IN): runs of more shards are reduced as a tree. */
  fanIn?: number;
  /**
   * Fraction of the good training images held out (`--validation-split`, as `fit` chooses them): scored against the
   * new bank, so the model has a target-FPR threshold for unlabelled scoring. At most PAYLOAD_LIMITS.validationImages.
   */
  validationSplit?: number;
  category?: string;
  runId?: string;
  version?: string;
  recipe?: RecipeName;
  coresetRatio?: number;
  perShardCoresetRatio?: number | null;
  seed?: number;
  shardSize?: number;
  batchSize?: number;
  frame?: FrameSpec;
  hnsw?: Partial<HnswParams>;
  weights: { file: string; sha256: string };
  /** Overrides of the default job options (attempts, backoff) for every job of the run. */
  jobOptions?: JobsOptions;
}

export interface SubmittedRun {
  runId: string;
  kind: RunKind;
  shards: number;
  images: number;
  alreadySubmitted: boolean;
  version?: string;
  category: string;
  /** Training runs: the reduce tree's shape (depth 1: the root merges the shards itself). */
  tree?: { fanIn: number; depth: number; nodes: number };
  /** Incremental training runs: the version the new one is reduced from. */
  parentVersion?: string;
  /** Training runs with --validation-split: the held-out images (of `images`) and their shards (besides `shards`). */
  validation?: { images: number; shards: number };
}

/** The caps of PAYLOAD_LIMITS on what a training request asks for, checked before anything is written. */
export function checkTrainingLimits(req: Pick<TrainingRequest, 'frame' | 'hnsw' | 'batchSize' | 'shardSize'>): void {
  const L = PAYLOAD_LIMITS;
  const over = (flag: string, v: number | null | undefined, max: number) => {
    if (v !== undefined && v !== null && !(Number.isInteger(v) && v >= 1 && v <= max)) throw new UserError(`${flag} ${v} is out of range: expected an integer from 1 to ${max}`);
  };
  over('--resize', req.frame?.resize, L.frameSide);
  over('--crop', req.frame?.crop, L.frameSide);
  over('--batch-size', req.batchSize, L.batchSize);
  over('--shard-size', req.shardSize, L.shardImages);
  over('HNSW M', req.hnsw?.M, L.hnswM);
  over('HNSW efConstruction', req.hnsw?.efConstruction, L.hnswEf);
  over('HNSW efSearch', req.hnsw?.efSearch, L.hnswEf);
}

/** The published version `--from-version` names (a version or 'latest'), refused by name when there is none. */
async function parentModelOf(store: ObjectStore, category: string, fromVersion: string): Promise<{ version: string; manifest: ModelManifest }> {
  const flag = `--from-version ${JSON.stringify(fromVersion)}`;
  let version = fromVersion;
  if (fromVersion === 'latest') {
    const latest = await readLatest(store, category);
    if (!latest) throw new UserError(`${flag}: category "${category}" has no model yet: train one first (or leave --from-version out)`);
    version = latest.version;
  }
  let manifest: ModelManifest | null = null;
  try {
    manifest = await store.getManifest(modelKey(category, version, 'manifest.json'), ModelManifestSchema);
  } catch (err) {
    throw new UserError(`${flag}: not a version of category "${category}" (${(err as Error).message})`);
  }
  if (!manifest) throw new UserError(`${flag}: category "${category}" has no published version "${version}"`);
  return { version, manifest };
}

/** Every image under an `--images` prefix, any layout: the training images of a run. */
async function imagesSource(store: ObjectStore, arg: string): Promise<{ datasetPrefix: string; prefix: string; keys: string[] }> {
  const images = parseImagesPrefix(arg);
  return { ...images, keys: await listImagesUnder(store, images) };
}

export async function submitTraining(ctx: ProducerContext, req: TrainingRequest): Promise<SubmittedRun> {
  checkTrainingLimits(req);
  const fanIn = req.fanIn ?? DEFAULT_FAN_IN;
  if (!Number.isInteger(fanIn) || fanIn < 2 || fanIn > PAYLOAD_LIMITS.fanIn) {
    throw new UserError(`--fan-in ${fanIn} is out of range: expected an integer from 2 to ${PAYLOAD_LIMITS.fanIn} (inputs merged by one reduce step)`);
  }
  if (req.coresetSize !== undefined && !(Number.isInteger(req.coresetSize) && req.coresetSize >= 1)) {
    throw new UserError(`--coreset-size ${req.coresetSize} is invalid: expected a positive integer (rows of the bank)`);
  }
  if ((req.dataset === undefined) === (req.images === undefined)) {
    throw new UserError('submit train: give either --dataset <name> (its train/good/ images) or --images <prefix> (every image under it), not both or neither');
  }
  const source = req.images !== undefined
    ? await imagesSource(ctx.store, req.images)
    : await listStoredDataset(ctx.store, datasetPrefix(req.dataset!), { train: true }).then(({ train }) => {
      const prefix = datasetPrefix(req.dataset!);
      return { datasetPrefix: prefix, prefix, keys: train.map((t) => prefix + t.path) };
    });
  const category = req.category ?? req.dataset ?? source.datasetPrefix.slice(datasetsRoot.length, -1);
  const parent = req.fromVersion !== undefined ? await parentModelOf(ctx.store, category, req.fromVersion) : null;
  if (parent) {
    // The new images' features must be of the same kind as the parent bank's rows.
    const pm = parent.manifest;
    const flag = `--from-version ${JSON.stringify(req.fromVersion)}`;
    if (pm.backbone.weights.sha256 !== req.weights.sha256) {
      throw new UserError(`${flag}: version ${category}/${parent.version} was trained with other weights (sha256 ${pm.backbone.weights.sha256}) than --weights (${req.weights.sha256})`);
    }
    if (req.recipe !== undefined && req.recipe !== pm.recipe) throw new UserError(`${flag}: version ${category}/${parent.version} uses the ${pm.recipe} recipe, not --recipe ${req.recipe}`);
    if (req.frame && (req.frame.resize !== pm.frame.resize || req.frame.crop !== pm.frame.crop)) {
      throw new UserError(`${flag}: version ${category}/${parent.version} was trained at --resize ${pm.frame.resize ?? 'none'} --crop ${pm.frame.crop ?? 'none'}; the new images must be framed alike`);
    }
  }
  const recipe = getRecipe(parent?.manifest.recipe ?? req.recipe ?? 'paper');
  const runId = req.runId ?? newRunId('train', category);
  runManifestKey(runId); // refuses a bad run id by its own name, before the version derived from it
  const version = req.version ?? runId.replace(/^train-/, 'v-');
  if (await versionTaken(ctx.store, category, version)) {
    // Resubmitting the same run is a no-op; another run naming a published or claimed version is refused.
    const claim = (await ctx.store.getJson(claimKey(category, version)).catch(() => null)) as { runId?: string } | null;
    const run = (await ctx.store.getJson(runManifestKey(runId)).catch(() => null)) as { version?: string } | null;
    if (claim?.runId !== runId && run?.version !== version) {
      throw new UserError(`model version ${category}/${version} already exists (or is being written by run ${claim?.runId ?? 'unknown'}); versions are never overwritten: choose another --version`);
    }
  }
  const heldOut = validationIds(source.keys, req.validationSplit ?? 0);
  if (heldOut.size > PAYLOAD_LIMITS.validationImages) {
    throw new UserError(`--validation-split ${req.validationSplit} holds out ${heldOut.size} of ${source.keys.length} images; a run scores at most ${PAYLOAD_LIMITS.validationImages}: give a split of at most ${Math.floor((PAYLOAD_LIMITS.validationImages / source.keys.length) * 1e4) / 1e4}`);
  }
  if (heldOut.size === source.keys.length) throw new UserError(`--validation-split ${req.validationSplit} holds out every one of the ${source.keys.length} images: none would be left to train on`);
  const shards = splitShards(source.keys.filter((k) => !heldOut.has(k)), req.shardSize ?? 32);
  const validationShards = splitShards([...heldOut], req.shardSize ?? 32).map((s) => ({ ...s, shardId: `v${s.shardId}` }));
  const pm = parent?.manifest;
  const seed = req.seed ?? pm?.coreset.seed ?? 0;
  const frame = pm ? pm.frame : (req.frame ?? { ...DEFAULT_FRAME_SPEC });
  const ratio = req.coresetRatio ?? pm?.coreset.ratio ?? recipe.defaultCoresetRatio;
  const size = req.coresetSize ?? (req.coresetRatio === undefined ? pm?.coreset.size : undefined);
  const coreset = { ratio, seed, projectionDim: pm?.coreset.projectionDim ?? DEFAULT_PROJECTION_DIM, ...(size !== undefined ? { size } : {}) };
  const tree = planReduceTree(shards.map((s) => s.shardId), fanIn);
  // A tree run reduces every shard by its own coreset first (at the run's ratio unless --per-shard-coreset says
  // otherwise): that is what bounds what each reduce step holds.
  const perShardRatio = req.perShardCoresetRatio ?? (tree.depth > 1 ? ratio : null);
  await ctx.store.putJson(runManifestKey(runId), {
    kind: 'training', runId, category, version, dataset: req.dataset ?? null, images: req.images !== undefined ? source.prefix : null,
    recipe: recipe.name, coreset, frame, perShardCoresetRatio: perShardRatio, weights: req.weights, createdAt: new Date().toISOString(),
    fanIn, tree: { depth: tree.depth, nodes: tree.nodes.length }, parent: parent ? { category, version: parent.version } : null,
    shards: shards.map((s) => ({ shardId: s.shardId, images: s.imageKeys.length })),
    validationShards: validationShards.map((s) => ({ shardId: s.shardId, images: s.imageKeys.length })),
  });
  const enqueued = await enqueueTrainingFlow(ctx.flows, {
    runId, category, version, recipe: recipe.name, datasetPrefix: source.datasetPrefix, frame,
    weights: { file: basename(req.weights.file), sha256: req.weights.sha256 },
    batchSize: req.batchSize ?? 8,
    perShardCoreset: perShardRatio ? { ratio: perShardRatio, seed } : null,
    coreset, hnsw: { ...DEFAULT_HNSW, ...(pm?.bank.hnsw ?? {}), ...req.hnsw }, shards, validationShards, jobOptions: req.jobOptions,
    fanIn, ...(parent ? { parentModel: { category, version: parent.version } } : {}),
    ...(req.images !== undefined ? { imagesPrefix: source.prefix } : {}),
  });
  ctx.log.info({ runId, category, version, shards: shards.length, images: source.keys.length, heldOut: heldOut.size, depth: tree.depth, parent: parent?.version }, 'training run submitted');
  return {
    runId, kind: 'training', shards: shards.length, images: source.keys.length, alreadySubmitted: enqueued.alreadySubmitted, version, category,
    ...(heldOut.size > 0 ? { validation: { images: heldOut.size, shards: validationShards.length } } : {}),
    tree: { fanIn, depth: tree.depth, nodes: tree.nodes.length }, ...(parent ? { parentVersion: parent.version } : {}),
  };
}

export interface EvaluationRequest {
  dataset: string;
  category?: string;
  /** A model version of the category, or 'latest'. */
  version?: string;
  runId?: string;
  shardSize?: number;
  /** Overrides of the default job options (attempts, backoff) for every job of the run. */
  jobOptions?: JobsOptions;
}

export async function submitEvaluation(ctx: ProducerContext, req: EvaluationRequest): Promise<SubmittedRun> {
  const category = req.category ?? req.dataset;
  const version = await resolveVersion(ctx.store, category, req.version ?? 'latest');
  const prefix = datasetPrefix(req.dataset);
  const { test } = await listStoredDataset(ctx.store, prefix, { test: true });
  const runId = req.runId ?? newRunId('eval', category);
  const shards = splitShards(test.map((t) => prefix + t.path), req.shardSize ?? 32);
  await ctx.store.putJson(runManifestKey(runId), {
    kind: 'evaluation', runId, category, version, dataset: req.dataset, createdAt: new Date().toISOString(),
    shards: shards.map((s) => ({ shardId: s.shardId, images: s.imageKeys.length })),
  });
  const enqueued = await enqueueEvaluationFlow(ctx.flows, {
    runId, category, model: { category, version }, datasetPrefix: prefix, shards, jobOptions: req.jobOptions,
  });
  ctx.log.info({ runId, category, version, shards: shards.length, images: test.length }, 'evaluation run submitted');
  return { runId, kind: 'evaluation', shards: shards.length, images: test.length, alreadySubmitted: enqueued.alreadySubmitted, version, category };
}

export interface ScoringRequest {
  /** `datasets/<name>/[<folder>/]` or `<name>[/<folder>]`: every image under it, any layout. */
  images: string;
  /** The model's category; default: the data set's name. */
  category?: string;
  /** A model version of the category, or 'latest'. */
  version?: string;
  runId?: string;
  shardSize?: number;
  /** The false-positive rate on the model's held-out good images that sets the threshold (default 0.01). */
  targetFpr?: number;
  /** How many of the most anomalous images the report shows (default 24). */
  top?: number;
  /** Only the first n images under the prefix, in key order (default: all). */
  limit?: number;
  jobOptions?: JobsOptions;
}

/**
 * An unlabelled scoring run: every image under a prefix scored in shards by the scorers (the evaluation flow's
 * score-shard jobs), then a report of kind unlabelled: reports/<run>/results.csv, results.jsonl, summary.json,
 * index.html. The model version must exist before anything is written.
 */
export async function submitScoring(ctx: ProducerContext, req: ScoringRequest): Promise<SubmittedRun> {
  const images = parseImagesPrefix(req.images);
  const category = req.category ?? images.datasetPrefix.slice(datasetsRoot.length, -1);
  const version = await resolveVersion(ctx.store, category, req.version ?? 'latest');
  if (!(await ctx.store.exists(modelKey(category, version, 'manifest.json')))) {
    throw new UserError(`model version ${category}/${version} does not exist (no ${modelKey(category, version, 'manifest.json')}): ` +
      'give --model-version latest or a published version');
  }
  if (req.limit !== undefined && !(Number.isInteger(req.limit) && req.limit >= 1)) throw new UserError(`image limit ${req.limit} is not a positive integer`);
  const keys = (await listImagesUnder(ctx.store, images)).slice(0, req.limit);
  const runId = req.runId ?? newRunId('score', category);
  const shards = splitShards(keys, req.shardSize ?? 32);
  if (shards.length > PAYLOAD_LIMITS.shards) {
    throw new UserError(`${keys.length} images under "${images.prefix}" make ${shards.length} shards, more than the ${PAYLOAD_LIMITS.shards} of one run: give a larger --shard-size or a narrower --images prefix`);
  }
  const unlabelled = { kind: 'unlabelled' as const, imagesPrefix: images.prefix, targetFpr: req.targetFpr, top: req.top };
  // An evaluation in the queues and for retention (its model is kept while it runs); `report` says which report.
  await ctx.store.putJson(runManifestKey(runId), {
    kind: 'evaluation', report: 'unlabelled', runId, category, version, dataset: images.datasetPrefix.slice(datasetsRoot.length, -1),
    images: images.prefix, createdAt: new Date().toISOString(), shards: shards.map((s) => ({ shardId: s.shardId, images: s.imageKeys.length })),
  });
  const enqueued = await enqueueEvaluationFlow(ctx.flows, {
    runId, category, model: { category, version }, datasetPrefix: images.datasetPrefix, shards, jobOptions: req.jobOptions, unlabelled,
  });
  ctx.log.info({ runId, category, version, shards: shards.length, images: keys.length, prefix: images.prefix }, 'scoring run submitted');
  return { runId, kind: 'evaluation', shards: shards.length, images: keys.length, alreadySubmitted: enqueued.alreadySubmitted, version, category };
}

/** The kind of a run, from the job that exists for it. */
export async function runKindOf(connection: Redis, runId: string, prefix: string): Promise<RunKind | null> {
  for (const kind of ['training', 'evaluation'] as const) {
    if ((await runProgress(connection, runId, kind, { prefix })).state !== 'missing') return kind;
  }
  return null;
}

/** How long `--wait` / `--watch` keep trying while Redis is unreachable (a restart, a failover) before giving up. */
export const DEFAULT_OUTAGE_MS = 5 * 60_000;

/**
 * Polls a run until it completes or fails; `onProgress` sees every poll. Redis going away (a restart) is ridden
 * out: polls are retried with backoff, the connection reopened when its client gave up, for up to `outageMs`.
 */
export async function waitForRun(
  connection: Redis, runId: string, kind: RunKind, prefix: string,
  opts: { pollMs?: number; timeoutMs?: number; outageMs?: number; onProgress?: (p: RunProgress) => void; onOutage?: (err: Error, downMs: number) => void; signal?: AbortSignal } = {},
): Promise<RunProgress> {
  const deadline = opts.timeoutMs ? Date.now() + opts.timeoutMs : Infinity;
  const outageMs = opts.outageMs ?? DEFAULT_OUTAGE_MS;
  let downSince: number | null = null;
  let failures = 0;
  for (;;) {
    if (opts.signal?.aborted) throw new Error(`stopped waiting for run ${runId}: interrupted`);
    let p: RunProgress;
    try {
      p = await runProgress(connection, runId, kind, { prefix });
      downSince = null;
      failures = 0;
    } catch (err) {
      downSince ??= Date.now();
      const down = Date.now() - downSince;
      if (down > outageMs) {
        throw new Error(`lost Redis for ${Math.round(down / 1000)} s while waiting for run ${runId} (the run goes on; see "patchcore status ${runId}"): ${(err as Error).message}`);
      }
      opts.onOutage?.(err as Error, down);
      failures++;
      await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(failures, 5)) * (0.75 + Math.random() / 2)));
      // A fail-fast client stops reconnecting after a few attempts; each call here is one more attempt.
      if (connection.status === 'end') await connection.connect().catch(() => {});
      continue;
    }
    opts.onProgress?.(p);
    if (p.state === 'completed' || p.state === 'failed') return p;
    if (Date.now() > deadline) throw new Error(`run ${runId} did not finish within ${opts.timeoutMs} ms (state ${p.state})`);
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
  }
}
