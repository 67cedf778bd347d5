// In-process evaluation, the local adapter over the stages: score a category's test images from a folder with a
// model folder (any method, as its manifest says), assemble metrics.json and write the report; or compare several
// model folders on the same test images in one report.
import { mkdir } from 'node:fs/promises';
import { basename } from 'node:path';
import type { EngineName } from '../backbone/engine.js';
import { listMvtecDataset, type DatasetImage, type MvtecDataset } from '../dataset/mvtec.js';
import { readGroundTruth } from '../evaluation/ground-truth.js';
import { assembleMetrics, DEFAULT_RECALL_SAMPLE } from '../evaluation/metrics.js';
import { summariseImage } from '../evaluation/whole-image.js';
import type { EvaluationMetrics, FailedImage, ModelDescription, ScoredImage } from '../evaluation/types.js';
import type { Logger } from '../log.js';
import { PixelHistogram, type ThresholdChoice, type ThresholdSetting } from '../metrics/index.js';
import { methodOf } from '../methods/index.js';
import type { ModelMethod } from '../model/manifest.js';
import { buildComparisonReport, buildReport, localFolderWriter, type Heatmap, type MethodResult, type ReportImage, type RunInfo } from '../report/index.js';
import { startProgress } from '../run/progress.js';
import { MapSpill, type SpilledMap } from './map-spill.js';
import { datasetSources, localReader, type ByteReader } from '../run/sources.js';
import type { Frame } from '../image/index.js';
import { StageTimer, peakRssMiB } from '../run/timings.js';

/** How the test images are read and scored; shared by every model of a comparison. */
export interface ScoringOptions {
  dataDir: string;
  /** Backbone weights for PatchCore models (must be the ones they were trained with); unused by the autoencoder. */
  weightsPath: string;
  engine?: EngineName;
  batchSize?: number;
  /** Use only the first N test images of each defect type (quick runs and tests). */
  limitPerType?: number;
  /** PatchCore: test patches used to measure HNSW recall@1 against exact search (0 = skip). */
  recallSample?: number;
  /** How the decision threshold is chosen (default F1-max on the labelled test set). */
  threshold?: ThresholdSetting;
  logger: Logger;
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
  /** Every image's whole-image map against its ground truth, merged. */
  pixels: PixelHistogram;
  metrics: EvaluationMetrics;
  describe: ModelDescription;
  threshold: ThresholdChoice;
  /** The maps the gallery reads back; close it once the report is written. */
  maps: MapSpill;
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

/** Reads an image's map back from the spill and its mask again; made apart so the closure holds no pixels. */
function spilledHeatmap(maps: MapSpill, at: SpilledMap, img: DatasetImage, frame: Frame, read: ByteReader): () => Promise<Heatmap> {
  return async () => ({
    map: await maps.get(at), mask: (await readGroundTruth(img, frame, read)).mask, width: frame.resizedWidth, height: frame.resizedHeight,
  });
}

/**
 * Scores the test images with one model folder of any method and computes its metrics (no report written). Each
 * image goes into the pixel summary as it is scored; its map is kept on disk (ModelEvaluation.maps), not in memory.
 */
export async function scoreModel(modelDir: string, dataset: MvtecDataset, test: DatasetImage[], opts: ScoringOptions): Promise<ModelEvaluation> {
  const log = opts.logger;
  const t0 = performance.now();
  const timer = new StageTimer();
  const method = methodOf(modelDir);
  const recallSample = opts.recallSample ?? DEFAULT_RECALL_SAMPLE;
  const scorer = await method.open(modelDir, {
    weightsPath: opts.weightsPath, engine: opts.engine, batchSize: opts.batchSize ?? 8, recall: recallSample > 0, logger: log,
  }, timer);
  const read = localReader(dataset.root);
  const byId = new Map(test.map((img) => [img.path, img]));
  const scored: (ScoredImage & ReportImage)[] = [];
  const failed: FailedImage[] = [];
  const pixels = new PixelHistogram();
  const maps = await MapSpill.open();
  const progress = startProgress(`test images (${method.name})`, test.length, log);
  try {
    for await (const r of scorer.score(datasetSources(read, test))) {
      progress.tick();
      if (!r.ok) {
        failed.push({ id: r.id, error: r.error });
        log.warn({ image: r.id, error: r.error }, 'evaluate: image failed');
        continue;
      }
      const img = byId.get(r.id)!;
      const truth = await readGroundTruth(img, r.frame, read);
      if (truth.failed) {
        failed.push(truth.failed);
        log.warn({ mask: img.maskPath, error: truth.failed.error }, 'evaluate: mask unusable, image left out of pixel metrics');
      }
      const whole = timer.timeSync('metrics', () => summariseImage(pixels, r, truth.mask));
      const at = await maps.put(whole);
      scored.push({
        id: img.path, defectType: img.defectType, label: img.label, score: r.score, recall: r.recall, image: () => read(img.path),
        heatmap: spilledHeatmap(maps, at, img, r.frame, read),
      });
    }
  } catch (err) {
    await maps.close();
    throw err;
  } finally {
    progress.stop();
    scorer.dispose();
  }
  if (scored.length === 0) {
    await maps.close();
    throw new Error(`no test image of "${dataset.root}" could be scored with "${modelDir}" (${failed.length} failed; first: ${failed[0]?.error})`);
  }
  const { metrics, threshold } = timer.timeSync('metrics', () => assembleMetrics({
    images: scored, pixels, failed, model: { dir: modelDir, ...scorer.model }, threshold: opts.threshold,
    validationScores: scorer.validationScores, modelName: `model "${modelDir}"`, recallSample,
  }));
  if (metrics.hnsw_recall_at_1 != null) log.info({ recall: metrics.hnsw_recall_at_1 }, 'evaluate: HNSW recall@1 against exact search');
  metrics.timings_ms = { ...timer.toJSON(), total: Math.round(performance.now() - t0) };
  metrics.peak_rss_mib = peakRssMiB();
  return { method: method.name, modelDir, images: scored, pixels, describe: scorer.describe, threshold, metrics, maps };
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
  try {
    await buildReport(
      {
        run: {
          runId: `local-${basename(opts.modelDir)}`, modelVersion: opts.modelDir, ...ev.describe,
          dataset: dataset.root, createdAt: new Date().toISOString(), timings: ev.metrics.timings_ms,
        },
        name: ev.method, images: ev.images, metrics: ev.metrics, threshold: ev.threshold, pixels: ev.pixels,
      },
      localFolderWriter(opts.outDir),
    );
  } finally {
    await ev.maps.close();
  }
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
    const method = methodOf(modelDir);
    await method.check(modelDir, opts);
    checked.push({ modelDir, method: method.name });
  }
  const names = methodNames(checked);
  await mkdir(opts.outDir, { recursive: true });
  const evals: ModelEvaluation[] = [];
  try {
    for (const dir of opts.modelDirs) evals.push(await scoreModel(dir, dataset, test, opts));
    await writeComparison(evals, names, dataset, opts);
  } finally {
    for (const e of evals) await e.maps.close();
  }
  opts.logger.info({ outDir: opts.outDir, methods: names }, 'compare: report written (metrics.json, scores.csv, index.html)');
  return Object.fromEntries(evals.map((e, i) => [names[i], e.metrics]));
}

async function writeComparison(evals: ModelEvaluation[], names: string[], dataset: MvtecDataset, opts: CompareOptions): Promise<void> {
  const methods: MethodResult[] = evals.map((e, i) => ({ name: names[i], images: e.images, metrics: e.metrics, threshold: e.threshold, pixels: e.pixels }));
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
}
