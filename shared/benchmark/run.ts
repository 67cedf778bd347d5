// `patchcore benchmark`: every category fitted and evaluated in turn (in this process, or through the queues by
// `patchcore demo`), optionally the PyTorch reference on the same folder, each category's outputs under
// <out>/<category>/, and the results table rewritten after every category, so an interrupted benchmark keeps
// what it finished. A category that fails is recorded with its error and the others go on.
import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { EngineName } from '../backbone/engine.js';
import type { RecipeName } from '../features/recipes.js';
import type { FrameSpec } from '../image/index.js';
import type { Logger } from '../log.js';
import { fitModel } from '../local/fit.js';
import { evaluateModel } from '../local/evaluate.js';
import { repoRoot } from '../paths.js';
import type { BenchmarkCategory } from './categories.js';
import {
  REFERENCE_FRAME, REFERENCE_PYTHON, readReferenceRun, referenceArgs, referenceVariant, runReference,
} from './reference.js';
import {
  figureRatios, withThroughput, writeResults, type BenchmarkResults, type CategoryFigures, type CategoryResult, type ReferenceOutcome,
} from './results.js';

/** One category's figures and where its report (index.html) was written. */
export interface CategoryOutcome {
  figures: CategoryFigures;
  report: string;
}

/** Fits and evaluates one category, writing everything under `dir`. */
export type CategoryRunner = (category: BenchmarkCategory, dir: string) => Promise<CategoryOutcome>;

export interface ReferenceSettings {
  recipe: RecipeName;
  coreset: number;
  weightsPath: string;
  python?: string;
}

export interface BenchmarkOptions {
  root: string;
  categories: BenchmarkCategory[];
  outDir: string;
  mode: BenchmarkResults['mode'];
  /** Recorded in results.json as they are. */
  settings: Record<string, unknown>;
  runner: CategoryRunner;
  /** Run the reference on each category too. */
  reference?: ReferenceSettings;
  logger: Logger;
}

export async function runBenchmark(opts: BenchmarkOptions): Promise<BenchmarkResults> {
  const log = opts.logger;
  await mkdir(opts.outDir, { recursive: true });
  const results: BenchmarkResults = {
    created_at: new Date().toISOString(), mode: opts.mode, data: opts.root, settings: opts.settings,
    reference: opts.reference
      ? { variant: referenceVariant(opts.reference.recipe), coreset: opts.reference.coreset, frame: REFERENCE_FRAME }
      : null,
    categories: [],
  };
  for (const category of opts.categories) {
    const dir = join(opts.outDir, category.name);
    await mkdir(dir, { recursive: true });
    log.info({ category: category.name, data: category.dir }, 'benchmark: category started');
    let result: CategoryResult;
    try {
      const { figures, report } = await opts.runner(category, dir);
      result = { category: category.name, data: category.dir, status: 'ok', ...figures, report: relative(opts.outDir, report) };
      log.info({ category: category.name, image_auroc: figures.image_auroc, fit_s: figures.fit_s, evaluate_s: figures.evaluate_s }, 'benchmark: category done');
    } catch (err) {
      const error = (err as Error).message;
      result = { category: category.name, data: category.dir, status: 'failed', error };
      log.error({ category: category.name, error }, 'benchmark: category failed; going on with the others');
    }
    if (opts.reference) {
      result.reference = await referenceOn(category, dir, opts.reference, log);
      if (result.status === 'ok' && result.reference.status === 'ok') result.ratio = figureRatios(result, result.reference);
    }
    results.categories.push(result);
    await writeResults(opts.outDir, results);
  }
  return results;
}

async function referenceOn(category: BenchmarkCategory, dir: string, s: ReferenceSettings, log: Logger): Promise<ReferenceOutcome> {
  const out = join(dir, 'reference.json');
  const variant = referenceVariant(s.recipe);
  try {
    log.info({ category: category.name, variant, coreset: s.coreset }, 'benchmark: running the reference');
    await runReference(s.python ?? REFERENCE_PYTHON, referenceArgs({ data: category.dir, weights: s.weightsPath, out, recipe: s.recipe, coreset: s.coreset }));
    const run = readReferenceRun(out, variant, s.coreset);
    return {
      status: 'ok',
      ...withThroughput({
        image_auroc: run.metrics.image_auroc, pixel_auroc: run.metrics.pixel_auroc, aupro: run.metrics['aupro_0.3'],
        f1_max: run.metrics.f1_max.f1, bank: run.counts.memory_bank, train_images: run.counts.train_images,
        test_images: run.counts.test_images, fit_s: run.timings_s.train_total_s, evaluate_s: run.timings_s.test_total_s,
      }),
    };
  } catch (err) {
    const error = (err as Error).message;
    log.error({ category: category.name, error }, 'benchmark: the reference failed on this category');
    return { status: 'failed', error };
  }
}

export interface LocalRunSettings {
  weightsPath: string;
  engine?: EngineName;
  recipe?: RecipeName;
  coresetRatio?: number;
  frame?: FrameSpec;
  batchSize?: number;
  /** Only the first n training images, and the first n test images of each type (quick runs). */
  limit?: number;
  limitPerType?: number;
  logger: Logger;
}

/** Fit and evaluate in this process: the model in <dir>/model, the report in <dir>/report. */
export function localRunner(s: LocalRunSettings): CategoryRunner {
  return async (category, dir) => {
    const modelDir = join(dir, 'model');
    const reportDir = join(dir, 'report');
    const t0 = performance.now();
    const manifest = await fitModel({
      dataDir: category.dir, modelDir, weightsPath: s.weightsPath, engine: s.engine, recipe: s.recipe, coresetRatio: s.coresetRatio,
      frame: s.frame, batchSize: s.batchSize, limit: s.limit, logger: s.logger,
    });
    const t1 = performance.now();
    const metrics = await evaluateModel({
      modelDir, outDir: reportDir, dataDir: category.dir, weightsPath: s.weightsPath, engine: s.engine, batchSize: s.batchSize,
      limitPerType: s.limitPerType, logger: s.logger,
    });
    const t2 = performance.now();
    return {
      report: join(reportDir, 'index.html'),
      figures: withThroughput({
        image_auroc: metrics.image_auroc, pixel_auroc: metrics.pixel_auroc, aupro: metrics.aupro, f1_max: metrics.f1_max,
        bank: manifest.bank.count, train_images: manifest.training.images, test_images: metrics.images,
        fit_s: (t1 - t0) / 1000, evaluate_s: (t2 - t1) / 1000,
      }),
    };
  };
}

export interface DistributedRunSettings {
  weightsPath: string;
  /** PATCHCORE_ENGINE for the workers. */
  engine?: EngineName;
  /** Extra arguments of `patchcore demo` (--feature-workers, --shard-size). */
  demoArgs?: string[];
}

/** The fields of `patchcore demo`'s summary (its stdout) read here. */
interface DemoSummary {
  training: { bank: number; images: number } | null;
  wall_ms: { train_ms: number; evaluate_ms: number };
  metrics: string;
  report: string;
}

/**
 * Through the queues: `patchcore demo --data <category> --out <dir>` in a child process (its own Redis, s3rver
 * and workers unless REDIS_URL / S3_ENDPOINT are set), the report in <dir>/report. fit and evaluate seconds are
 * the wall times of the training and evaluation runs, from submission to the last job.
 */
export function distributedRunner(s: DistributedRunSettings): CategoryRunner {
  return async (category, dir) => {
    const args = [join(repoRoot, 'bin', 'patchcore.js'), 'demo', '--data', category.dir, '--out', dir, '--weights', s.weightsPath, ...(s.demoArgs ?? [])];
    const env = { ...process.env, ...(s.engine ? { PATCHCORE_ENGINE: s.engine } : {}) };
    const stdout = await new Promise<string>((resolveRun, reject) => {
      const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', (e) => reject(new Error(`cannot start patchcore demo: ${e.message}`)));
      child.on('close', (code, signal) => {
        if (code === 0) resolveRun(out);
        else reject(new Error(`patchcore demo on ${category.dir} exited with ${signal ?? `code ${code}`} (workers' log: ${join(dir, 'workers.log')})`));
      });
    });
    const summary = JSON.parse(stdout) as DemoSummary;
    if (!summary.training) throw new Error(`patchcore demo on ${category.dir} reported no training result`);
    const metrics = JSON.parse(await readFile(summary.metrics, 'utf8')) as {
      image_auroc: number | null; pixel_auroc: number | null; aupro: number | null; f1_max: number | null; images: number;
    };
    return {
      report: summary.report,
      figures: withThroughput({
        image_auroc: metrics.image_auroc, pixel_auroc: metrics.pixel_auroc, aupro: metrics.aupro, f1_max: metrics.f1_max,
        bank: summary.training.bank, train_images: summary.training.images, test_images: metrics.images,
        fit_s: summary.wall_ms.train_ms / 1000, evaluate_s: summary.wall_ms.evaluate_ms / 1000,
      }),
    };
  };
}
