// In-process evaluation: score a category's test images with a model folder (PatchCore or the autoencoder
// baseline, as its manifest says), compute the metrics and write the report; or compare several model folders on
// the same test images in one report.
import { readFile, mkdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { loadAutoencoder, scoreWithAutoencoder } from '../autoencoder/evaluate.js';
import { readAutoencoderManifest } from '../autoencoder/manifest.js';
import { createBackbone, type EngineName } from '../backbone/engine.js';
import { MemoryBank } from '../bank/index.js';
import { listMvtecDataset, type DatasetImage, type MvtecDataset } from '../dataset/mvtec.js';
import { getRecipe } from '../features/recipes.js';
import { decodeMask, maskToFrame, type Frame } from '../image/index.js';
import type { Logger } from '../log.js';
import { checkModelConsistency } from '../model/consistency.js';
import { readManifest, readModelMethod, type ModelManifest, type ModelMethod } from '../model/manifest.js';
import {
  buildComparisonReport, buildReport, chooseThreshold, localFolderWriter,
  type MethodResult, type ReportImage, type RunInfo, type ThresholdChoice,
} from '../report/index.js';
import { confusionAt } from '../metrics/index.js';
import { extractFeatures } from './extract.js';
import { sha256File } from './fit.js';
import { localSources } from './local-source.js';
import { scoreImage } from './score-image.js';
import { computeMetrics, type EvaluationMetrics, type ScoredImage } from './metrics.js';
import { startProgress } from './progress.js';
import { StageTimer, peakRssMiB } from './timings.js';

/** How the test images are read and scored; shared by every model of a comparison. */
export interface ScoringOptions {
  dataDir: string;
  /** Backbone weights for PatchCore models (must be the ones they were trained with); unused by the autoencoder. */
  weightsPath: string;
  engine?: EngineName;
  batchSize?: number;
  /** Use only the first N test images of each defect type (quick runs and tests). */
  limitPerType?: number;
  /** PatchCore: test patches sampled to measure HNSW recall@1 against exact search (0 = skip). */
  recallSample?: number;
  /** How the decision threshold is chosen (default F1-max on the labelled test set). */
  threshold?: ThresholdSetting;
  logger: Logger;
}

export interface ThresholdSetting {
  rule: 'f1-max' | 'target-fpr';
  /** For 'target-fpr': the false-positive rate allowed on the model's held-out good images (default 0.01). */
  targetFpr?: number;
}

/**
 * The decision threshold: F1-max when asked for and the test set has both classes; otherwise the target FPR on the
 * good images held out at training time (fit --validation-split).
 */
export function decideThreshold(
  modelDir: string, method: ModelMethod, metrics: EvaluationMetrics, scored: readonly ScoredImage[], rule: ThresholdSetting = { rule: 'f1-max' },
): ThresholdChoice {
  const validation = method === 'patchcore' ? readManifest(modelDir).validation : undefined;
  if (rule.rule === 'f1-max' && metrics.threshold !== null) return { threshold: metrics.threshold, rule: 'f1-max' };
  if (!validation || validation.scores.length === 0) {
    throw new Error(
      rule.rule === 'target-fpr'
        ? `model "${modelDir}" has no held-out good images to set a target-FPR threshold: fit it with --validation-split`
        : `the test set has no labelled defects and good images both, and model "${modelDir}" has no held-out good images: ` +
          'fit it with --validation-split to get a target-FPR threshold',
    );
  }
  return chooseThreshold({ goodValidationScores: Float32Array.from(validation.scores), targetFpr: rule.targetFpr ?? 0.01 });
}

export interface EvaluateOptions extends ScoringOptions {
  modelDir: string;
  outDir: string;
}

export interface CompareOptions extends ScoringOptions {
  /** Two or more model folders, of any methods. */
  modelDirs: string[];
  outDir: string;
}

/** One model's results on the test set: what its report section shows. */
export interface ModelEvaluation {
  method: ModelMethod;
  modelDir: string;
  images: (ScoredImage & ReportImage)[];
  metrics: EvaluationMetrics;
  /** The report's description of the model. */
  describe: { recipe: string; backbone: string; coresetSize?: number };
  threshold: ThresholdChoice;
}

type ImageResult =
  | { ok: true; id: string; frame: Frame; score: number; map: Float32Array }
  | { ok: false; id: string; error: string };

/** A method's scoring of the test images, one result per source in order; `finish` runs once all are consumed. */
interface MethodScorer {
  results: AsyncGenerator<ImageResult>;
  /** Method-specific figures for metrics.json and the report. */
  finish(): { hnswRecall: number | null; model: Record<string, unknown>; describe: ModelEvaluation['describe'] };
  dispose(): void;
}

/** Refuses a model whose backbone weights differ from the file we would extract features with. */
export async function checkWeightsMatch(manifest: ModelManifest, weightsPath: string): Promise<void> {
  const sha = await sha256File(weightsPath);
  if (sha !== manifest.backbone.weights.sha256) {
    throw new Error(
      `weights file "${weightsPath}" (sha256 ${sha.slice(0, 12)}...) is not the one this model was trained with ` +
        `(${manifest.backbone.weights.file}, sha256 ${manifest.backbone.weights.sha256.slice(0, 12)}...)`,
    );
  }
}

function limitPerType(images: DatasetImage[], limit?: number): DatasetImage[] {
  if (!limit) return images;
  const seen = new Map<string, number>();
  return images.filter((img) => {
    const n = seen.get(img.defectType) ?? 0;
    seen.set(img.defectType, n + 1);
    return n < limit;
  });
}

/** Every `step`-th patch row, up to `sample` rows: a deterministic spread over all test images. */
function sampleRows(rows: Float32Array[], dim: number, sample: number): Float32Array {
  const total = rows.reduce((s, r) => s + r.length / dim, 0);
  const take = Math.min(sample, total);
  const step = total / take;
  const out = new Float32Array(take * dim);
  let next = 0;
  let base = 0;
  let k = 0;
  for (const r of rows) {
    const n = r.length / dim;
    while (k < take && Math.floor(next) < base + n) {
      const i = Math.floor(next) - base;
      out.set(r.subarray(i * dim, (i + 1) * dim), k * dim);
      k++;
      next += step;
    }
    base += n;
  }
  return out.subarray(0, k * dim);
}

async function patchcoreScorer(modelDir: string, root: string, test: DatasetImage[], opts: ScoringOptions, timer: StageTimer): Promise<MethodScorer> {
  const log = opts.logger;
  const manifest = readManifest(modelDir);
  const recipe = getRecipe(manifest.recipe);
  await checkWeightsMatch(manifest, opts.weightsPath);
  const bank = await timer.time('load_model', () => MemoryBank.load(modelDir));
  checkModelConsistency(manifest, bank, `model "${modelDir}"`);
  const backbone = await createBackbone({ engine: opts.engine, weightsPath: opts.weightsPath, logger: log });
  const frame = { resize: manifest.frame.resize, crop: manifest.frame.crop };
  const recallRows: Float32Array[] = [];
  async function* results(): AsyncGenerator<ImageResult> {
    for await (const r of extractFeatures(localSources(root, test), { backbone, recipe, frame, batchSize: opts.batchSize ?? 8, timer })) {
      if (!r.ok) {
        yield r;
        continue;
      }
      const { score, map } = scoreImage(bank, manifest, r.features, r.frame, timer);
      if (opts.recallSample !== 0) recallRows.push(r.features.data);
      yield { ok: true, id: r.id, frame: r.frame, score, map };
    }
  }
  return {
    results: results(),
    finish() {
      let hnswRecall: number | null = null;
      if (opts.recallSample !== 0 && recallRows.length > 0) {
        const queries = sampleRows(recallRows, bank.dim, opts.recallSample ?? 2000);
        hnswRecall = timer.timeSync('recall_check', () => bank.recallAt1(queries));
        log.info({ queries: queries.length / bank.dim, recall: hnswRecall }, 'evaluate: HNSW recall@1 against exact search');
      }
      return {
        hnswRecall,
        model: {
          dir: modelDir, method: 'patchcore', category: manifest.category, recipe: manifest.recipe, bank: manifest.bank.count,
          feature_dim: manifest.featureDim, backend: backbone.backend, engine: backbone.name,
        },
        describe: {
          recipe: manifest.recipe,
          backbone: `ResNet-50 (${manifest.backbone.layers.join(', ')}), ${backbone.name}/${backbone.backend}`,
          coresetSize: manifest.bank.count,
        },
      };
    },
    dispose: () => backbone.dispose(),
  };
}

async function autoencoderScorer(modelDir: string, root: string, test: DatasetImage[], opts: ScoringOptions, timer: StageTimer): Promise<MethodScorer> {
  const loaded = await timer.time('load_model', () => loadAutoencoder(modelDir, opts.logger));
  const { manifest } = loaded;
  const a = manifest.architecture;
  return {
    results: scoreWithAutoencoder(loaded, localSources(root, test), { batchSize: opts.batchSize ?? 8, timer }),
    finish: () => ({
      hnswRecall: null,
      model: {
        dir: modelDir, method: 'autoencoder', category: manifest.category, input_size: a.inputSize,
        encoder_channels: a.encoderChannels, latent_channels: a.latentChannels, parameters: a.parameters,
        epochs: manifest.training.epochs, final_train_loss: manifest.training.loss.at(-1) ?? null, backend: loaded.backend,
      },
      describe: {
        recipe: `autoencoder ${a.inputSize}x${a.inputSize}, channels ${a.encoderChannels.join('/')}, latent ${a.latentChannels}, ${manifest.training.epochs} epochs`,
        backbone: `none (convolutional autoencoder, ${a.parameters} parameters, TF.js ${loaded.backend})`,
      },
    }),
    dispose: () => loaded.model.dispose(),
  };
}

/** Ground truth in the model frame: the mask of a defect image, all zeros for a good one, null when unknown. */
async function groundTruth(root: string, img: DatasetImage, frame: Frame): Promise<Uint8Array | null> {
  if (img.maskPath) {
    const m = await decodeMask(await readFile(join(root, img.maskPath)), img.maskPath);
    return maskToFrame(m, frame);
  }
  return img.label === 0 ? new Uint8Array(frame.width * frame.height) : null;
}

/** Scores the test images with one model folder of any method and computes its metrics (no files written). */
export async function scoreModel(modelDir: string, dataset: MvtecDataset, test: DatasetImage[], opts: ScoringOptions): Promise<ModelEvaluation> {
  const log = opts.logger;
  const t0 = performance.now();
  const timer = new StageTimer();
  const method = readModelMethod(modelDir);
  const scorer = method === 'patchcore'
    ? await patchcoreScorer(modelDir, dataset.root, test, opts, timer)
    : await autoencoderScorer(modelDir, dataset.root, test, opts, timer);
  const byId = new Map(test.map((img) => [img.path, img]));
  const scored: (ScoredImage & ReportImage)[] = [];
  const failed: { id: string; error: string }[] = [];
  const progress = startProgress(`test images (${method})`, test.length, log);
  try {
    for await (const r of scorer.results) {
      progress.tick();
      if (!r.ok) {
        failed.push({ id: r.id, error: r.error });
        log.warn({ image: r.id, error: r.error }, 'evaluate: image failed');
        continue;
      }
      const img = byId.get(r.id)!;
      let mask: Uint8Array | null = null;
      try {
        mask = await groundTruth(dataset.root, img, r.frame);
      } catch (err) {
        failed.push({ id: img.maskPath ?? img.path, error: (err as Error).message });
        log.warn({ mask: img.maskPath, error: (err as Error).message }, 'evaluate: mask unusable, image left out of pixel metrics');
      }
      scored.push({
        id: img.path, defectType: img.defectType, label: img.label, score: r.score, map: r.map, mask,
        height: r.frame.height, width: r.frame.width, frame: r.frame, image: () => readFile(join(dataset.root, img.path)),
      });
    }
  } finally {
    progress.stop();
    scorer.dispose();
  }
  if (scored.length === 0) {
    throw new Error(`no test image of "${dataset.root}" could be scored with "${modelDir}" (${failed.length} failed; first: ${failed[0]?.error})`);
  }
  const { hnswRecall, model, describe } = scorer.finish();
  const metrics = timer.timeSync('metrics', () => computeMetrics(scored));
  const threshold = decideThreshold(modelDir, method, metrics, scored, opts.threshold);
  const labels = Uint8Array.from(scored, (s) => s.label);
  metrics.decision = {
    rule: threshold.rule, threshold: threshold.threshold, ...(threshold.targetFpr !== undefined ? { target_fpr: threshold.targetFpr } : {}),
    confusion_matrix: confusionAt(Float32Array.from(scored, (s) => s.score), labels, threshold.threshold),
  };
  return {
    method,
    modelDir,
    images: scored,
    describe,
    threshold,
    metrics: {
      ...metrics,
      hnsw_recall_at_1: hnswRecall,
      failed_images: failed,
      model,
      timings_ms: { ...timer.toJSON(), total: Math.round(performance.now() - t0) },
      peak_rss_mib: peakRssMiB(),
    },
  };
}

function testImages(opts: ScoringOptions): { dataset: MvtecDataset; test: DatasetImage[] } {
  const dataset = listMvtecDataset(opts.dataDir, { test: true });
  return { dataset, test: limitPerType(dataset.test, opts.limitPerType) };
}

/** Evaluates one model folder: metrics.json, scores.csv and the report (index.html) in outDir. */
export async function evaluateModel(opts: EvaluateOptions): Promise<EvaluationMetrics> {
  const { dataset, test } = testImages(opts);
  await mkdir(opts.outDir, { recursive: true });
  const ev = await scoreModel(opts.modelDir, dataset, test, opts);
  const t0 = performance.now();
  await buildReport(
    {
      run: {
        runId: `local-${basename(opts.modelDir)}`, modelVersion: opts.modelDir, ...ev.describe,
        dataset: dataset.root, createdAt: new Date().toISOString(), timings: ev.metrics.timings_ms,
      },
      name: ev.method, images: ev.images, metrics: ev.metrics, threshold: ev.threshold,
    },
    localFolderWriter(opts.outDir),
  );
  ev.metrics.timings_ms!.report = Math.round(performance.now() - t0);
  opts.logger.info({ outDir: opts.outDir, method: ev.method }, 'evaluate: report written (metrics.json, scores.csv, index.html)');
  return ev.metrics;
}

/** Report names of the models: the method, with the folder name added where two models share a method. */
export function methodNames(evals: readonly Pick<ModelEvaluation, 'method' | 'modelDir'>[]): string[] {
  const counts = new Map<string, number>();
  for (const e of evals) counts.set(e.method, (counts.get(e.method) ?? 0) + 1);
  const names = evals.map((e) => (counts.get(e.method)! > 1 ? `${e.method} ${basename(e.modelDir)}` : e.method));
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw new Error(`two models to compare are both named "${dup}": give the model folders distinct names`);
  return names;
}

/**
 * Evaluates several model folders on the same test images and writes one comparison report in outDir: a
 * side-by-side summary, then one section per model; metrics.json maps each method's name to its metrics.
 */
export async function compareModels(opts: CompareOptions): Promise<Record<string, EvaluationMetrics>> {
  if (opts.modelDirs.length < 2) throw new Error(`compare: give at least two model folders, got ${opts.modelDirs.length}`);
  const { dataset, test } = testImages(opts);
  // Every model folder is checked before any scoring starts, so a bad one fails fast.
  const checked = [];
  for (const modelDir of opts.modelDirs) {
    const method = readModelMethod(modelDir);
    if (method === 'patchcore') await checkWeightsMatch(readManifest(modelDir), opts.weightsPath);
    else readAutoencoderManifest(modelDir);
    checked.push({ modelDir, method });
  }
  const names = methodNames(checked);
  await mkdir(opts.outDir, { recursive: true });
  const evals: ModelEvaluation[] = [];
  for (const dir of opts.modelDirs) evals.push(await scoreModel(dir, dataset, test, opts));
  const methods: MethodResult[] = evals.map((e, i) => ({ name: names[i], images: e.images, metrics: e.metrics, threshold: e.threshold }));
  const run: RunInfo = {
    runId: `compare-${names.map((n) => n.replace(/\s+/g, '-')).join('-vs-')}`,
    modelVersion: opts.modelDirs.join(', '),
    recipe: evals.map((e, i) => `${names[i]}: ${e.describe.recipe}`).join('; '),
    backbone: evals.map((e, i) => `${names[i]}: ${e.describe.backbone}`).join('; '),
    dataset: dataset.root,
    createdAt: new Date().toISOString(),
    timings: Object.fromEntries(evals.map((e, i) => [names[i], e.metrics.timings_ms?.total ?? 0])),
  };
  await buildComparisonReport({ run, methods }, localFolderWriter(opts.outDir));
  opts.logger.info({ outDir: opts.outDir, methods: names }, 'compare: report written (metrics.json, scores.csv, index.html)');
  return Object.fromEntries(evals.map((e, i) => [names[i], e.metrics]));
}
