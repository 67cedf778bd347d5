// `patchcore benchmark`: fit and evaluate every category under a root (in this process, or through the queues
// with --distributed), optionally the PyTorch reference beside each, and one results table over them all.
import { join, resolve } from 'node:path';
import { findCategories } from '../../shared/benchmark/categories.js';
import { checkReference } from '../../shared/benchmark/reference.js';
import { distributedRunner, localRunner, runBenchmark } from '../../shared/benchmark/run.js';
import { getRecipe } from '../../shared/features/recipes.js';
import type { FrameSpec } from '../../shared/image/index.js';
import { createLogger } from '../../shared/log.js';
import { sharedDir } from '../../shared/paths.js';
import { UsageError, defineCommand, heading } from '../args.js';
import { FRAME_OPTIONS, MODEL_OPTIONS, OPTIONS as O, allOptional, frameSpecFromOptions } from '../options.js';

// Undefined unless given: fitModel and evaluateModel apply their defaults, and --distributed refuses them by name
// (patchcore demo trains with the defaults).
const LOCAL_ONLY = allOptional([...FRAME_OPTIONS, ...MODEL_OPTIONS, O['batch-size'], O.limit, O['limit-per-type']]);

export const BENCHMARK = defineCommand({
  name: 'benchmark',
  synopsis: '--data <root> --out <dir> [--categories a,b] [--compare] [--distributed] [options]',
  about: 'Each category\'s model and report go to <out>/<category>/; results.md, results.json and index.html to <out>.\n'
    + 'A category that fails is reported with its error in the table and the others go on (exit code 1 at the end).',
  options: [
    O.data.describe('a folder holding category folders (MVTec AD layout: train/, test/, ground_truth/) at most two levels '
      + 'down, or one category folder').default(() => join(sharedDir(), 'datasets'), 'the shared datasets folder'),
    O.categories,
    O.out.required().describe('folder for results.md, results.json, index.html and one folder per category'),
    O.compare, O.distributed, O.weights, O.engine.optional(),
    heading('Model settings of every category (in this process only, not with --distributed):'),
    ...LOCAL_ONLY,
  ],
});
export const BENCHMARK_USAGE = BENCHMARK.usage;

export async function benchmarkCommand(argv: string[]): Promise<void> {
  const opts = BENCHMARK.parse(argv);
  if (opts.distributed) {
    const local = LOCAL_ONLY.find((o) => opts[o.flag] !== undefined);
    if (local) throw new UsageError(`patchcore benchmark: --${local.flag} does not apply with --distributed (the queued runs use the defaults)`);
  }
  const limited = [O.limit, O['limit-per-type']].find((o) => opts[o.flag] !== undefined);
  if (opts.compare && limited) {
    throw new UsageError(`patchcore benchmark: --${limited.flag} does not apply with --compare (the reference always uses every image)`);
  }
  const categories = findCategories(opts.data, opts.categories);
  if (opts.compare) checkReference();

  const logger = createLogger('benchmark');
  const weightsPath = resolve(opts.weights);
  const recipe = opts.recipe ?? 'paper';
  const coresetRatio = opts['coreset-ratio'] ?? getRecipe(recipe).defaultCoresetRatio;
  // The same framing as `fit`: a preset (--frame, default whole), overridden by --resize/--crop.
  const frame: FrameSpec = frameSpecFromOptions({ ...opts, frame: opts.frame ?? 'whole' });
  const settings: Record<string, unknown> = {
    recipe, coreset_ratio: coresetRatio, frame, engine: opts.engine ?? 'auto', weights: weightsPath,
    ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
    ...(opts['limit-per-type'] !== undefined ? { limit_per_type: opts['limit-per-type'] } : {}),
  };
  const runner = opts.distributed
    ? distributedRunner({ weightsPath, engine: opts.engine })
    : localRunner({
      weightsPath, engine: opts.engine, recipe, coresetRatio, frame, batchSize: opts['batch-size'], limit: opts.limit,
      limitPerType: opts['limit-per-type'], logger,
    });
  const outDir = resolve(opts.out);
  const results = await runBenchmark({
    root: resolve(opts.data), categories, outDir, mode: opts.distributed ? 'distributed' : 'local', settings, runner, logger,
    reference: opts.compare ? { recipe, coreset: coresetRatio, weightsPath } : undefined,
  });
  process.stdout.write(JSON.stringify({
    results: join(outDir, 'results.json'), table: join(outDir, 'results.md'), index: join(outDir, 'index.html'),
    categories: results.categories.map((c) => (c.status === 'ok'
      ? { category: c.category, image_auroc: c.image_auroc, pixel_auroc: c.pixel_auroc, aupro: c.aupro, fit_s: c.fit_s, evaluate_s: c.evaluate_s }
      : { category: c.category, error: c.error })),
  }, null, 2) + '\n');
  const failed = results.categories.filter((c) => c.status === 'failed').map((c) => c.category);
  if (failed.length > 0) {
    throw new Error(`${failed.length} of ${results.categories.length} categories failed (${failed.join(', ')}); see ${join(outDir, 'results.md')}`);
  }
}
