// `patchcore fit` and `patchcore evaluate`: the in-process commands over local folders (no Redis, no S3).
import { resolve } from 'node:path';
import { z } from 'zod';
import { ENGINE_NAMES } from '../../shared/backbone/engine.js';
import { RECIPE_NAMES } from '../../shared/features/recipes.js';
import { createLogger } from '../../shared/log.js';
import { defaultDatasetDir, defaultWeightsPath } from '../../shared/paths.js';
import { fitModel } from '../../shared/pipeline/fit.js';
import { evaluateModel } from '../../shared/pipeline/evaluate.js';
import { intFlag, numberFlag, parseCommand, sizeOrNone } from '../args.js';

const positiveInt = intFlag.refine((n) => n > 0, { message: 'expected a positive integer' });

export const FIT_USAGE = `patchcore fit --data <category dir> --model <model dir> [options]
  --data <dir>            MVTec AD style category folder (default: $PATCHCORE_DATA or the shared bottle set)
  --model <dir>           where to write the model folder (required)
  --recipe paper|seed     patch feature recipe (default paper)
  --coreset-ratio <r>     fraction of training patches kept in the bank (default 0.1 for paper, 0.01 for seed)
  --coreset-size <n>      exact bank size instead of a ratio
  --seed <n>              seed of the coreset's projection and start points (default 0)
  --weights <h5>          Keras ResNet-50 weights (default: $PATCHCORE_WEIGHTS or the shared file)
  --engine auto|tfjs|onnx backbone engine (default auto: TF.js on a GPU, else ONNX Runtime)
  --resize <n|none>       shorter side before cropping (default 256)
  --crop <n|none>         centre crop (default 224)
  --batch-size <n>        images per backbone batch (default 8)
  --limit <n>             use only the first n training images`;

export const EVALUATE_USAGE = `patchcore evaluate --model <model dir> --data <category dir> --out <dir> [options]
  --model <dir>           model folder written by "patchcore fit" (required)
  --data <dir>            category folder with test/ and ground_truth/ (default: as for fit)
  --out <dir>             where metrics.json and scores.csv go (required)
  --weights <h5>          must be the weights the model was trained with
  --engine auto|tfjs|onnx backbone engine (default auto)
  --batch-size <n>        images per backbone batch (default 8)
  --limit-per-type <n>    use only the first n test images of each type
  --recall-sample <n>     test patches used to measure HNSW recall@1 (default 2000, 0 = skip)`;

export async function fitCommand(argv: string[]): Promise<void> {
  const opts = parseCommand(
    'fit',
    argv,
    {
      data: { type: 'string' }, model: { type: 'string' }, recipe: { type: 'string' },
      'coreset-ratio': { type: 'string' }, 'coreset-size': { type: 'string' }, seed: { type: 'string' },
      weights: { type: 'string' }, engine: { type: 'string' }, resize: { type: 'string' }, crop: { type: 'string' },
      'batch-size': { type: 'string' }, limit: { type: 'string' },
    },
    z.object({
      data: z.string().default(() => defaultDatasetDir()),
      model: z.string({ error: 'is required' }),
      recipe: z.enum(RECIPE_NAMES).default('paper'),
      'coreset-ratio': numberFlag.refine((r) => r > 0 && r <= 1, { message: 'expected a ratio in (0, 1]' }).optional(),
      'coreset-size': positiveInt.optional(),
      seed: intFlag.default(0),
      weights: z.string().default(() => defaultWeightsPath()),
      engine: z.enum(ENGINE_NAMES).default('auto'),
      resize: sizeOrNone.default(256),
      crop: sizeOrNone.default(224),
      'batch-size': positiveInt.default(8),
      limit: positiveInt.optional(),
    }),
  );
  const logger = createLogger('patchcore-fit');
  const manifest = await fitModel({
    dataDir: resolve(opts.data), modelDir: resolve(opts.model), weightsPath: resolve(opts.weights), engine: opts.engine,
    recipe: opts.recipe, coresetRatio: opts['coreset-ratio'], coresetTarget: opts['coreset-size'], seed: opts.seed,
    frame: { resize: opts.resize, crop: opts.crop }, batchSize: opts['batch-size'], limit: opts.limit, logger,
  });
  process.stdout.write(
    JSON.stringify({
      model: resolve(opts.model), recipe: manifest.recipe, bank: manifest.bank.count,
      train_patches: manifest.coreset.trainPatches, images: manifest.training.images,
      skipped: manifest.training.skipped.length, timings_ms: manifest.training.timings_ms,
      peak_rss_mib: manifest.training.peak_rss_mib,
    }, null, 2) + '\n',
  );
}

export async function evaluateCommand(argv: string[]): Promise<void> {
  const opts = parseCommand(
    'evaluate',
    argv,
    {
      model: { type: 'string' }, data: { type: 'string' }, out: { type: 'string' }, weights: { type: 'string' }, engine: { type: 'string' },
      'batch-size': { type: 'string' }, 'limit-per-type': { type: 'string' }, 'recall-sample': { type: 'string' },
    },
    z.object({
      model: z.string({ error: 'is required' }),
      data: z.string().default(() => defaultDatasetDir()),
      out: z.string({ error: 'is required' }),
      weights: z.string().default(() => defaultWeightsPath()),
      engine: z.enum(ENGINE_NAMES).default('auto'),
      'batch-size': positiveInt.default(8),
      'limit-per-type': positiveInt.optional(),
      'recall-sample': intFlag.refine((n) => n >= 0, { message: 'expected 0 or more' }).default(2000),
    }),
  );
  const logger = createLogger('patchcore-evaluate');
  const m = await evaluateModel({
    modelDir: resolve(opts.model), dataDir: resolve(opts.data), outDir: resolve(opts.out),
    weightsPath: resolve(opts.weights), engine: opts.engine, batchSize: opts['batch-size'], limitPerType: opts['limit-per-type'],
    recallSample: opts['recall-sample'], logger,
  });
  const summary = {
    image_auroc: m.image_auroc, pixel_auroc: m.pixel_auroc, aupro: m.aupro, f1_max: m.f1_max,
    threshold: m.threshold, confusion_matrix: m.confusion_matrix, images: m.images,
    hnsw_recall_at_1: m.hnsw_recall_at_1, failed_images: m.failed_images?.length ?? 0,
    timings_ms: m.timings_ms, peak_rss_mib: m.peak_rss_mib, metrics: resolve(opts.out, 'metrics.json'),
  };
  process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
}
