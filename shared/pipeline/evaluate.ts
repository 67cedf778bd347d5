// In-process evaluation: score a category's test images with a model folder and compute the metrics.
import { readFile, mkdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createBackbone, type EngineName } from '../backbone/engine.js';
import { MemoryBank } from '../bank/index.js';
import { listMvtecDataset, type DatasetImage } from '../dataset/mvtec.js';
import { getRecipe } from '../features/recipes.js';
import { decodeMask, maskToFrame } from '../image/index.js';
import type { Logger } from '../log.js';
import { readManifest, type ModelManifest } from '../model/manifest.js';
import { buildReport, localFolderWriter, type ReportImage } from '../report/index.js';
import { extractFeatures } from './extract.js';
import { sha256File } from './fit.js';
import { localSources } from './local-source.js';
import { scoreImage } from './score-image.js';
import { computeMetrics, type EvaluationMetrics, type ScoredImage } from './metrics.js';
import { startProgress } from './progress.js';
import { StageTimer, peakRssMiB } from './timings.js';

export interface EvaluateOptions {
  modelDir: string;
  dataDir: string;
  outDir: string;
  weightsPath: string;
  engine?: EngineName;
  batchSize?: number;
  /** Use only the first N test images of each defect type (quick runs and tests). */
  limitPerType?: number;
  /** Test patches sampled to measure HNSW recall@1 against exact search (0 = skip). */
  recallSample?: number;
  logger: Logger;
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

export async function evaluateModel(opts: EvaluateOptions): Promise<EvaluationMetrics> {
  const log = opts.logger;
  const t0 = performance.now();
  const timer = new StageTimer();
  const manifest = readManifest(opts.modelDir);
  const recipe = getRecipe(manifest.recipe);
  const dataset = listMvtecDataset(opts.dataDir, { test: true });
  const test = limitPerType(dataset.test, opts.limitPerType);
  await checkWeightsMatch(manifest, opts.weightsPath);
  const bank = await timer.time('load_model', () => MemoryBank.load(opts.modelDir));
  if (bank.dim !== recipe.dim) {
    throw new Error(`model "${opts.modelDir}": bank has ${bank.dim}-d entries but recipe ${recipe.name} makes ${recipe.dim}-d features`);
  }
  await mkdir(opts.outDir, { recursive: true });

  const backbone = await createBackbone({ engine: opts.engine, weightsPath: opts.weightsPath, logger: log });
  const frame = { resize: manifest.frame.resize, crop: manifest.frame.crop };
  const byId = new Map(test.map((img) => [img.path, img]));
  const scored: (ScoredImage & ReportImage)[] = [];
  const failed: { id: string; error: string }[] = [];
  const recallRows: Float32Array[] = [];
  const progress = startProgress('test images', test.length, log);
  try {
    for await (const r of extractFeatures(localSources(dataset.root, test), {
      backbone, recipe, frame, batchSize: opts.batchSize ?? 8, timer,
    })) {
      progress.tick();
      const img = byId.get(r.id)!;
      if (!r.ok) {
        failed.push({ id: r.id, error: r.error });
        log.warn({ image: r.id, error: r.error }, 'evaluate: image failed');
        continue;
      }
      const { features, frame: f } = r;
      const { score, map } = scoreImage(bank, manifest, features, f, timer);
      let mask: Uint8Array | null = null;
      if (img.maskPath) {
        try {
          const m = await decodeMask(await readFile(join(dataset.root, img.maskPath)), img.maskPath);
          mask = maskToFrame(m, f);
        } catch (err) {
          failed.push({ id: img.maskPath, error: (err as Error).message });
          log.warn({ mask: img.maskPath, error: (err as Error).message }, 'evaluate: mask unusable, image left out of pixel metrics');
        }
      } else if (img.label === 0) {
        mask = new Uint8Array(f.width * f.height);
      }
      if (opts.recallSample !== 0) recallRows.push(features.data);
      scored.push({
        id: img.path, defectType: img.defectType, label: img.label, score, map, mask, height: f.height, width: f.width,
        frame: f, image: () => readFile(join(dataset.root, img.path)),
      });
    }
  } finally {
    progress.stop();
    backbone.dispose();
  }

  let hnswRecall: number | null = null;
  if (opts.recallSample !== 0 && recallRows.length > 0) {
    const queries = sampleRows(recallRows, bank.dim, opts.recallSample ?? 2000);
    hnswRecall = timer.timeSync('recall_check', () => bank.recallAt1(queries));
    log.info({ queries: queries.length / bank.dim, recall: hnswRecall }, 'evaluate: HNSW recall@1 against exact search');
  }

  const metrics = timer.timeSync('metrics', () => computeMetrics(scored));
  const result: EvaluationMetrics = {
    ...metrics,
    hnsw_recall_at_1: hnswRecall,
    failed_images: failed,
    model: {
      dir: opts.modelDir, category: manifest.category, recipe: manifest.recipe, bank: manifest.bank.count,
      feature_dim: manifest.featureDim, backend: backbone.backend, engine: backbone.name,
    },
    timings_ms: { ...timer.toJSON(), total: Math.round(performance.now() - t0) },
    peak_rss_mib: peakRssMiB(),
  };
  await timer.time('report', () =>
    buildReport(
      {
        run: {
          runId: `local-${basename(opts.modelDir)}`, modelVersion: opts.modelDir, recipe: manifest.recipe,
          backbone: `ResNet-50 (${manifest.backbone.layers.join(', ')}), ${backbone.name}/${backbone.backend}`,
          coresetSize: manifest.bank.count, dataset: dataset.root, createdAt: new Date().toISOString(),
          timings: result.timings_ms,
        },
        name: 'patchcore', images: scored, metrics: result,
      },
      localFolderWriter(opts.outDir),
    ),
  );
  log.info({ outDir: opts.outDir }, 'evaluate: report written (metrics.json, scores.csv, index.html)');
  return result;
}
