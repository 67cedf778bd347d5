// `patchcore fit` and `patchcore evaluate`: the in-process commands over local folders (no Redis, no S3). Both
// handle the two methods: PatchCore and the convolutional autoencoder baseline; evaluate with several --model
// folders compares them in one report.
import { resolve } from 'node:path';
import { z } from 'zod';
import { AUTOENCODER_TRAINING_DEFAULTS, fitAutoencoder } from '../../shared/autoencoder/fit.js';
import { DEFAULT_AUTOENCODER_CONFIG } from '../../shared/autoencoder/architecture.js';
import { ENGINE_NAMES } from '../../shared/backbone/engine.js';
import { RECIPE_NAMES } from '../../shared/features/recipes.js';
import { createLogger } from '../../shared/log.js';
import { defaultDatasetDir, defaultWeightsPath } from '../../shared/paths.js';
import { fitModel } from '../../shared/local/fit.js';
import { compareModels, evaluateModel } from '../../shared/local/evaluate.js';
import type { EvaluationMetrics } from '../../shared/evaluation/types.js';
import { UsageError, intFlag, numberFlag, parseCommand, sizeOrNone } from '../args.js';

const positiveInt = intFlag.refine((n) => n > 0, { message: 'expected a positive integer' });

const AE = AUTOENCODER_TRAINING_DEFAULTS;

export const FIT_USAGE = `patchcore fit --data <category dir> --model <model dir> [options]
  --method patchcore|autoencoder  what to train (default patchcore); the model folder records it
  --data <dir>            MVTec AD style category folder (default: $PATCHCORE_DATA or the shared bottle set)
  --model <dir>           where to write the model folder (required)
  --seed <n>              PatchCore: coreset projection and start points; autoencoder: initial weights and
                          image order (default 0)
  --resize <n|none>       shorter side before cropping (default 256)
  --crop <n|none>         centre crop (default 224)
  --batch-size <n>        images per backbone / training batch (default 8)
  --limit <n>             use only the first n training images
  --validation-split <r>  PatchCore: hold out this fraction of the good training images and record their scores,
                          so evaluate can set a target-FPR threshold (default 0)
 PatchCore only:
  --recipe paper|seed     patch feature recipe (default paper)
  --coreset-ratio <r>     fraction of training patches kept in the bank (default 0.1 for paper, 0.01 for seed)
  --coreset-size <n>      exact bank size instead of a ratio
  --weights <h5>          Keras ResNet-50 weights (default: $PATCHCORE_WEIGHTS or the shared file)
  --engine auto|tfjs|onnx backbone engine (default auto: TF.js on a GPU, else ONNX Runtime)
 Autoencoder only (a small convolutional autoencoder on the cropped frame resized to --input-size, MSE loss):
  --epochs <n>            training epochs (default ${AE.epochs})
  --learning-rate <r>     Adam learning rate (default ${AE.learningRate})
  --input-size <n>        side of the square input, a multiple of 16 (default ${DEFAULT_AUTOENCODER_CONFIG.inputSize})`;

export const EVALUATE_USAGE = `patchcore evaluate --model <model dir> [--model <model dir> ...] --data <category dir> --out <dir> [options]
  --model <dir>           model folder written by "patchcore fit", of either method (required). Give it more
                          than once to compare models on the same test images in one report: a side-by-side
                          summary, then one section per model (methods/<name>/), metrics.json holding
                          {"methods": {<name>: metrics}}; <name> is the method, plus the folder name when two
                          models share a method
  --data <dir>            category folder with test/ and ground_truth/ (default: as for fit)
  --out <dir>             where index.html, metrics.json and scores.csv go (required)
  --weights <h5>          PatchCore models: must be the weights the model was trained with
  --engine auto|tfjs|onnx PatchCore models: backbone engine (default auto)
  --batch-size <n>        images per batch (default 8)
  --limit-per-type <n>    use only the first n test images of each type
  --recall-sample <n>     PatchCore models: test patches used to measure HNSW recall@1 (default 2000, 0 = skip)
  --threshold f1-max|target-fpr  how the good/defect threshold is chosen (default f1-max on the labelled test set;
                          target-fpr: on the good images held out by fit --validation-split; used automatically
                          when the test set lacks labelled defects)
  --target-fpr <r>        the false-positive rate allowed on those images (default 0.01)`;

const PATCHCORE_ONLY = ['recipe', 'coreset-ratio', 'coreset-size', 'weights', 'engine', 'validation-split'] as const;
const AUTOENCODER_ONLY = ['epochs', 'learning-rate', 'input-size'] as const;

export async function fitCommand(argv: string[]): Promise<void> {
  const opts = parseCommand(
    'fit',
    argv,
    {
      method: { type: 'string' }, data: { type: 'string' }, model: { type: 'string' }, recipe: { type: 'string' },
      'coreset-ratio': { type: 'string' }, 'coreset-size': { type: 'string' }, seed: { type: 'string' },
      weights: { type: 'string' }, engine: { type: 'string' }, resize: { type: 'string' }, crop: { type: 'string' },
      'batch-size': { type: 'string' }, limit: { type: 'string' }, 'validation-split': { type: 'string' },
      epochs: { type: 'string' }, 'learning-rate': { type: 'string' }, 'input-size': { type: 'string' },
    },
    z.object({
      method: z.enum(['patchcore', 'autoencoder']).default('patchcore'),
      data: z.string().default(() => defaultDatasetDir()),
      model: z.string({ error: 'is required' }),
      recipe: z.enum(RECIPE_NAMES).optional(),
      'coreset-ratio': numberFlag.refine((r) => r > 0 && r <= 1, { message: 'expected a ratio in (0, 1]' }).optional(),
      'coreset-size': positiveInt.optional(),
      seed: intFlag.default(0),
      weights: z.string().optional(),
      engine: z.enum(ENGINE_NAMES).optional(),
      resize: sizeOrNone.default(256),
      crop: sizeOrNone.default(224),
      'batch-size': positiveInt.default(8),
      limit: positiveInt.optional(),
      'validation-split': numberFlag.refine((r) => r >= 0 && r < 1, { message: 'expected a fraction in [0, 1)' }).optional(),
      epochs: positiveInt.optional(),
      'learning-rate': numberFlag.refine((r) => r > 0 && r < 1, { message: 'expected a rate in (0, 1)' }).optional(),
      'input-size': positiveInt.refine((n) => n % 16 === 0, { message: 'expected a multiple of 16' }).optional(),
    }),
  );
  const foreign = (opts.method === 'patchcore' ? AUTOENCODER_ONLY : PATCHCORE_ONLY).find((k) => opts[k] !== undefined);
  if (foreign) throw new UsageError(`patchcore fit: --${foreign} does not apply to --method ${opts.method}`);
  const frame = { resize: opts.resize, crop: opts.crop };

  if (opts.method === 'autoencoder') {
    const logger = createLogger('patchcore-fit');
    const m = await fitAutoencoder({
      dataDir: resolve(opts.data), modelDir: resolve(opts.model), frame, seed: opts.seed, batchSize: opts['batch-size'],
      limit: opts.limit, epochs: opts.epochs, learningRate: opts['learning-rate'],
      config: opts['input-size'] ? { inputSize: opts['input-size'] } : undefined, logger,
    });
    const t = m.training;
    process.stdout.write(
      JSON.stringify({
        model: resolve(opts.model), method: m.method, input_size: m.architecture.inputSize,
        parameters: m.architecture.parameters, epochs: t.epochs, loss: t.loss.map((l) => Number(l.toPrecision(4))),
        images: t.images, skipped: t.skipped.length, backend: t.backend, timings_ms: t.timings_ms, peak_rss_mib: t.peak_rss_mib,
      }, null, 2) + '\n',
    );
    return;
  }

  const logger = createLogger('patchcore-fit');
  const manifest = await fitModel({
    dataDir: resolve(opts.data), modelDir: resolve(opts.model), weightsPath: resolve(opts.weights ?? defaultWeightsPath()),
    engine: opts.engine ?? 'auto', recipe: opts.recipe ?? 'paper', coresetRatio: opts['coreset-ratio'],
    coresetTarget: opts['coreset-size'], seed: opts.seed, frame, batchSize: opts['batch-size'], limit: opts.limit,
    validationSplit: opts['validation-split'], logger,
  });
  process.stdout.write(
    JSON.stringify({
      model: resolve(opts.model), method: 'patchcore', recipe: manifest.recipe, bank: manifest.bank.count,
      train_patches: manifest.coreset.trainPatches, images: manifest.training.images,
      skipped: manifest.training.skipped.length, timings_ms: manifest.training.timings_ms,
      peak_rss_mib: manifest.training.peak_rss_mib,
    }, null, 2) + '\n',
  );
}

function metricsSummary(m: EvaluationMetrics): Record<string, unknown> {
  return {
    image_auroc: m.image_auroc, pixel_auroc: m.pixel_auroc, aupro: m.aupro, f1_max: m.f1_max,
    threshold: m.threshold, confusion_matrix: m.confusion_matrix, decision: m.decision, images: m.images,
    hnsw_recall_at_1: m.hnsw_recall_at_1, failed_images: m.failed_images?.length ?? 0,
    timings_ms: m.timings_ms, peak_rss_mib: m.peak_rss_mib,
  };
}

export async function evaluateCommand(argv: string[]): Promise<void> {
  const opts = parseCommand(
    'evaluate',
    argv,
    {
      model: { type: 'string', multiple: true }, data: { type: 'string' }, out: { type: 'string' }, weights: { type: 'string' },
      engine: { type: 'string' }, 'batch-size': { type: 'string' }, 'limit-per-type': { type: 'string' },
      'recall-sample': { type: 'string' }, threshold: { type: 'string' }, 'target-fpr': { type: 'string' },
    },
    z.object({
      model: z.array(z.string(), { error: 'is required' }).min(1, { message: 'is required' }),
      data: z.string().default(() => defaultDatasetDir()),
      out: z.string({ error: 'is required' }),
      weights: z.string().default(() => defaultWeightsPath()),
      engine: z.enum(ENGINE_NAMES).default('auto'),
      'batch-size': positiveInt.default(8),
      'limit-per-type': positiveInt.optional(),
      'recall-sample': intFlag.refine((n) => n >= 0, { message: 'expected 0 or more' }).default(2000),
      threshold: z.enum(['f1-max', 'target-fpr']).default('f1-max'),
      'target-fpr': numberFlag.refine((r) => r >= 0 && r < 1, { message: 'expected a rate in [0, 1)' }).optional(),
    }),
  );
  const logger = createLogger('patchcore-evaluate');
  const scoring = {
    dataDir: resolve(opts.data), weightsPath: resolve(opts.weights), engine: opts.engine, batchSize: opts['batch-size'],
    limitPerType: opts['limit-per-type'], recallSample: opts['recall-sample'],
    threshold: { rule: opts.threshold, targetFpr: opts['target-fpr'] }, logger,
  };
  const models = opts.model.map((m) => resolve(m));
  const dup = models.find((m, i) => models.indexOf(m) !== i);
  if (dup !== undefined) throw new UsageError(`patchcore evaluate: --model "${dup}" is given twice`);
  const outDir = resolve(opts.out);
  if (models.length === 1) {
    const m = await evaluateModel({ ...scoring, modelDir: models[0], outDir });
    const summary = { method: m.model?.method, ...metricsSummary(m), metrics: resolve(outDir, 'metrics.json') };
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
    return;
  }
  const all = await compareModels({ ...scoring, modelDirs: models, outDir });
  const methods = Object.fromEntries(Object.entries(all).map(([name, m]) => [name, { model: m.model?.dir, ...metricsSummary(m) }]));
  process.stdout.write(JSON.stringify({ methods, report: resolve(outDir, 'index.html'), metrics: resolve(outDir, 'metrics.json') }, null, 2) + '\n');
}
