// The reduce tree of a training run: each node merges at most fan-in inputs (feature shards' embeddings or other
// nodes' outputs) and keeps a coreset of them, however many images the run has. A step spools its inputs to a local
// file as it downloads them (16 MiB at a time), so it holds one chunk of an input, the projected rows of all its
// inputs (projectionDim of each row's dim floats, 1/8 at 1024 -> 128) and its output: at most fan-in x (rows of one
// input) x projectionDim floats plus the row cap, never the full rows of every input. Inner nodes write
// runs/<run>/reduce/<node>.bin; the root (merge-index.ts) writes the bank.
//
// A node's output size: the row cap (`coreset.size`) when the run has one, else `ratio` x the training patches
// below it; never more than its input rows (then the rows pass through unchanged, no selection). Selected rows keep
// their input order. Inputs are read in the order the payload lists them and each node's seed is fixed by the
// producer, so the same inputs give the same output bytes: a retried or repeated job overwrites an object with itself.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { getRecipe, type FeatureRecipe } from '../features/recipes.js';
import { ModelManifestSchema, type ModelManifest } from '../model/manifest.js';
import { checkFailedShare, type ReduceInput, type ReducePayload } from '../queue/jobs.js';
import { inputJobId } from '../queue/flows.js';
import { StageTimer, jobTimings, peakRssMiB, queueWaitMs, sumJobTimings, type JobTimings, type QueuedJob } from '../run/timings.js';
import { embeddingsKey, modelKey, reduceKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { encodeTensorFile } from '../storage/tensor-file.js';
import { readTensorRows } from '../storage/tensor-rows.js';
import { PermanentError } from '../errors.js';
import { RowSpool } from '../coreset/row-source.js';
import { selectRowsInThread } from './coreset-thread.js';
import type { ShardFeaturesResult } from './shard-features.js';

/** What a reduce job returns: its output and a summary of everything below it, for the nodes above and the root. */
export interface ReduceResult {
  node: string;
  key: string;
  /** Rows written, and the rows its inputs had. */
  rows: number;
  inputRows: number;
  /** Training patches of the images below (before any reduction). */
  patches: number;
  images: number;
  /** Images below that could not be read. */
  failed: { id: string; error: string }[];
  engine: string;
  backend: string;
  bytes: number;
  /** Summed timings of the feature jobs below, and of the reduce jobs below including this one. */
  jobs: { features: JobTimings; reduce: JobTimings };
  timings_ms: Record<string, number>;
  queue_wait_ms: number | null;
  finished_at: number;
  peak_rss_mib: number;
}

export type InputResult = ShardFeaturesResult | ReduceResult;

export function inputKey(runId: string, input: ReduceInput): string {
  return input.kind === 'shard' ? embeddingsKey(runId, input.id) : reduceKey(runId, input.id);
}

/** Rows a node or the root keeps of `rows` input rows standing for `patches` training patches. */
export function reduceTarget(coreset: { ratio: number; size?: number }, patches: number, rows: number): number {
  const wanted = coreset.size ?? Math.max(1, Math.round(coreset.ratio * patches));
  return Math.min(wanted, rows);
}

/** The inputs' rows, spooled in input order to a local file, with what their headers say. */
export interface GatheredInputs {
  spool: RowSpool;
  rows: number;
  patches: number;
  images: number;
  grid: [number, number];
  bytes: number;
}

/** A bank of an earlier version that joins the inputs first (incremental retraining). */
export interface PriorBank {
  category: string;
  version: string;
  manifest: ModelManifest;
  rows: Float32Array;
}

/** Runs `fn` with a fresh path for a row spool in a private temporary folder, removed afterwards. */
export async function withRowSpoolPath<T>(fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'patchcore-rows-'));
  try {
    return await fn(join(dir, 'rows.f32'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Downloads the inputs one at a time, a chunk of rows at a time, and appends their rows to a spool file at
 * `spoolPath`, so a step holds at most one chunk of an input (16 MiB), never the merged rows (the coreset then reads
 * the spool in chunks). `prior` rows go first. Throws naming the file on a mismatch of recipe, dims or row count
 * (against the inputs' job results, where known), and on an image that two shard inputs both hold. Images of
 * different sizes have their own grids; `grid` is the first input's, which the manifest records as a local fit does.
 */
export async function gatherInputs(
  store: ObjectStore, runId: string, recipe: FeatureRecipe, inputs: readonly ReduceInput[],
  results: ReadonlyMap<string, InputResult>, timer: StageTimer, spoolPath: string, prior?: PriorBank,
): Promise<GatheredInputs> {
  const dim = recipe.dim;
  const spool = await RowSpool.create(spoolPath, dim);
  try {
    if (prior) await spool.append(prior.rows);
    let patches = prior?.manifest.coreset.trainPatches ?? 0;
    let images = 0;
    let bytes = 0;
    let grid: [number, number] | null = prior ? prior.manifest.grid : null;
    const inputOfImage = new Map<string, string>();
    for (const input of inputs) {
      const key = inputKey(runId, input);
      const expected = results.get(inputJobId(runId, input))?.rows;
      // The header is checked before any row is read; the rows go to the spool a chunk at a time.
      const { header: h, bytes: size } = await readTensorRows(store, key, timer, (h) => {
        if (h.dim !== dim || h.recipe !== recipe.name) {
          throw new Error(`embeddings file "${key}" holds ${String(h.recipe)} features of ${h.dim} dims; this run uses ${recipe.name} (${dim})`);
        }
        if (expected !== undefined && h.count !== expected) throw new Error(`embeddings file "${key}" has ${h.count} rows; its job reported ${expected}`);
        // Shards never overlap when the producer made them; a run whose shards do is refused, not double-counted.
        for (const img of h.images) {
          const earlier = inputOfImage.get(img.key);
          if (earlier !== undefined) throw new Error(`training run ${runId}: image "${img.key}" is in shards ${earlier} and ${input.id}`);
          inputOfImage.set(img.key, input.id);
        }
      }, (rows) => timer.time('spool', () => spool.append(rows)));
      bytes += size;
      if (h.count > 0 && grid === null) grid = h.grid;
      patches += Number(h.patches ?? h.count);
      images += input.kind === 'shard' ? h.images.length : Number(h.imagesBelow ?? 0);
    }
    return { spool, rows: spool.rows, patches, images, grid: grid ?? [1, 1], bytes };
  } finally {
    await spool.close();
  }
}

/** What the inputs' jobs report about everything below them: skipped images, engines and job timings. */
export function summarizeInputs(runId: string, inputs: readonly ReduceInput[], results: ReadonlyMap<string, InputResult>) {
  const failed: { id: string; error: string }[] = [];
  const features: JobTimings[] = [];
  const reduce: JobTimings[] = [];
  let engine = 'unknown';
  let backend = 'unknown';
  let lastDone = 0;
  for (const input of inputs) {
    // The root tolerates a child whose result is gone (its images then count as read); a reduce step has them all.
    const r = results.get(inputJobId(runId, input));
    if (!r) continue;
    failed.push(...r.failed);
    if (engine === 'unknown') ({ engine, backend } = r);
    lastDone = Math.max(lastDone, r.finished_at ?? 0);
    if (input.kind === 'shard') {
      const s = r as ShardFeaturesResult;
      features.push(jobTimings(s.timings_ms, s.queue_wait_ms ?? null));
    } else {
      const n = r as ReduceResult;
      features.push(n.jobs.features);
      reduce.push(n.jobs.reduce);
    }
  }
  return { failed, engine, backend, lastDone, features: sumJobTimings(features), reduce: reduce.length ? sumJobTimings(reduce) : null };
}

/** One inner node: merge the inputs, keep a coreset, write runs/<run>/reduce/<node>.bin. */
export async function reduceNode(
  p: ReducePayload, results: ReadonlyMap<string, InputResult>, ctx: { store: ObjectStore; log: Logger; job?: QueuedJob },
): Promise<ReduceResult> {
  const timer = new StageTimer();
  const recipe = getRecipe(p.recipe);
  const below = summarizeInputs(p.runId, p.inputs, results);
  const { gathered, out } = await withRowSpoolPath(async (spoolPath) => {
    const gathered = await gatherInputs(ctx.store, p.runId, recipe, p.inputs, results, timer, spoolPath);
    const target = reduceTarget(p.coreset, gathered.patches, gathered.rows);
    // Below the target the rows pass through unchanged (at most `target` of them).
    const out = target < gathered.rows
      ? (await timer.time('coreset', () =>
        selectRowsInThread(spoolPath, gathered.rows, recipe.dim, { target, projectionDim: p.coreset.projectionDim, seed: p.coreset.seed }))).rows
      : gathered.spool.source().readRows(Uint32Array.from({ length: gathered.rows }, (_, i) => i));
    return { gathered, out };
  });
  const rows = out.length / recipe.dim;
  const body = encodeTensorFile(
    {
      dtype: 'float32', dim: recipe.dim, count: rows, grid: gathered.grid, images: [], recipe: recipe.name,
      runId: p.runId, node: p.node, inputs: p.inputs, patches: gathered.patches, imagesBelow: gathered.images,
      coreset: p.coreset,
    },
    out,
  );
  const key = reduceKey(p.runId, p.node);
  await timer.time('upload', () => ctx.store.putObject(key, body));
  ctx.log.info({ node: p.node, inputs: p.inputs.length, inputRows: gathered.rows, rows, patches: gathered.patches }, 'reduce step written');
  const timings = timer.toJSON();
  const wait = queueWaitMs(ctx.job, below.lastDone);
  const own = jobTimings(timings, wait);
  return {
    node: p.node, key, rows, inputRows: gathered.rows, patches: gathered.patches, images: gathered.images,
    failed: below.failed, engine: below.engine, backend: below.backend, bytes: body.length,
    jobs: { features: below.features, reduce: sumJobTimings(below.reduce ? [below.reduce, own] : [own]) },
    timings_ms: timings, queue_wait_ms: wait, finished_at: Date.now(), peak_rss_mib: peakRssMiB(),
  };
}

/**
 * The bank rows of a published version, checked against its manifest (size and sha256): the prior input of an
 * incremental run. Refuses (PermanentError) a version of another recipe or weights than the run's.
 */
export async function readPriorBank(
  store: ObjectStore, model: { category: string; version: string }, expect: { recipe: string; weightsSha256: string },
): Promise<PriorBank> {
  const what = `model ${model.category}/${model.version}`;
  const manifest = await store.getManifest(modelKey(model.category, model.version, 'manifest.json'), ModelManifestSchema);
  if (!manifest) throw new PermanentError(`${what} has no manifest: it is not a published version`);
  if (manifest.recipe !== expect.recipe) throw new PermanentError(`${what} uses the ${manifest.recipe} recipe; this run uses ${expect.recipe}`);
  if (manifest.backbone.weights.sha256 !== expect.weightsSha256) {
    throw new PermanentError(`${what} was trained with other weights (sha256 ${manifest.backbone.weights.sha256}) than this run's (${expect.weightsSha256})`);
  }
  const entry = manifest.files?.find((f) => f.name === 'bank.f32');
  if (!entry) throw new PermanentError(`${what}: its manifest lists no bank.f32`);
  const body = await store.getObject(modelKey(model.category, model.version, 'bank.f32'));
  if (body.length !== entry.size || createHash('sha256').update(body).digest('hex') !== entry.sha256) {
    throw new PermanentError(`${what}: bank.f32 in storage does not match the manifest (size or sha256)`);
  }
  if (body.length !== manifest.bank.count * manifest.featureDim * 4) {
    throw new PermanentError(`${what}: bank.f32 has ${body.length} bytes, expected count x dim x 4 = ${manifest.bank.count} x ${manifest.featureDim} x 4`);
  }
  const rows = new Float32Array(manifest.bank.count * manifest.featureDim);
  new Uint8Array(rows.buffer).set(body);
  return { ...model, manifest, rows };
}

/** The root's failed-share check over everything below it. */
export function checkRunFailures(runId: string, failed: { id: string; error: string }[], images: number, maxShare?: number): void {
  checkFailedShare(`training run ${runId}`, failed, images + failed.length, maxShare);
}
