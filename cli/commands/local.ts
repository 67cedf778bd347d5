// `patchcore fit` and `patchcore evaluate`: the in-process commands over local folders (no Redis, no S3). Both
// handle the two methods: PatchCore and the convolutional autoencoder baseline; evaluate with several --model
// folders compares them in one report.
import { resolve } from 'node:path';
import { fitAutoencoder } from '../../shared/autoencoder/fit.js';
import { createLogger } from '../../shared/log.js';
import { defaultWeightsPath } from '../../shared/paths.js';
import { fitModel } from '../../shared/local/fit.js';
import { compareModels, evaluateModel } from '../../shared/local/evaluate.js';
import type { EvaluationMetrics } from '../../shared/evaluation/types.js';
import { UsageError, defineCommand, heading } from '../args.js';
import { BACKBONE_OPTIONS, FRAME_OPTIONS, MODEL_OPTIONS, OPTIONS as O, TILE_OPTIONS, allOptional, frameSpecFromOptions } from '../options.js';

// Options of one method only: undefined unless given, so that giving one with the other method is refused by name.
const PATCHCORE_ONLY = allOptional([...MODEL_OPTIONS, O['coreset-size'], ...BACKBONE_OPTIONS, O.precision, O['validation-split'], ...TILE_OPTIONS]);
const AUTOENCODER_ONLY = [O.epochs, O['learning-rate'], O['input-size']] as const;

export const FIT = defineCommand({
  name: 'fit',
  synopsis: '--data <category dir> --model <model dir> [options]',
  options: [
    O.method, O.data, O.model.describe('where to write the model folder'), O.seed, ...FRAME_OPTIONS, O['batch-size'], O.limit,
    heading('PatchCore only:'),
    ...PATCHCORE_ONLY,
    heading('Autoencoder only (a small convolutional autoencoder on the cropped frame resized to --input-size, MSE loss):'),
    ...AUTOENCODER_ONLY,
  ],
});
export const FIT_USAGE = FIT.usage;

export const EVALUATE = defineCommand({
  name: 'evaluate',
  synopsis: '--model <model dir> [--model <model dir> ...] --data <category dir> --out <dir> [options]',
  options: [
    O.model.multiple().describe(`${O.model.spec.help}. Give it more than once to compare models on the same test images in one `
      + 'report: a side-by-side summary, then one section per model (methods/<name>/), metrics.json holding '
      + '{"methods": {<name>: metrics}}; <name> is the method, plus the folder name when two models share a method'),
    O.data, O.out.required(), ...BACKBONE_OPTIONS, O['batch-size'], O['limit-per-type'], O['recall-sample'], O.threshold, O['target-fpr'],
  ],
});
export const EVALUATE_USAGE = EVALUATE.usage;

export async function fitCommand(argv: string[]): Promise<void> {
  const opts = FIT.parse(argv);
  const foreign = (opts.method === 'patchcore' ? AUTOENCODER_ONLY : PATCHCORE_ONLY).find((o) => opts[o.flag] !== undefined);
  if (foreign) throw new UsageError(`patchcore fit: --${foreign.flag} does not apply to --method ${opts.method}`);
  const frame = frameSpecFromOptions(opts);

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
    validationSplit: opts['validation-split'], precision: opts.precision ?? 'fp32', logger,
  });
  process.stdout.write(
    JSON.stringify({
      model: resolve(opts.model), method: 'patchcore', recipe: manifest.recipe, precision: manifest.backbone.precision, bank: manifest.bank.count,
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
  const opts = EVALUATE.parse(argv);
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
