// Report job, an adapter over the stages: the scores and pixel summaries of every score shard of an evaluation run
// -> metrics.json (assembled exactly as by the local evaluate) and the report under reports/<run>/ (metrics.json,
// scores.csv, index.html, plots, gallery). The pixel summaries are merged, so its memory holds one image-level record
// per test image and no pixels; only the gallery's maps (and masks) are fetched, one at a time, by byte range.
// index.html is written last. Its timings cover the whole run: training (features, index) and evaluation (score,
// report) jobs.
import { readGroundTruth } from '../evaluation/ground-truth.js';
import { assembleMetrics } from '../evaluation/metrics.js';
import type { EvaluationMetrics, FailedImage, ScoredImage } from '../evaluation/types.js';
import type { Logger } from '../log.js';
import { PixelHistogram } from '../metrics/index.js';
import { describePatchcore, patchcoreModelRecord } from '../methods/patchcore.js';
import { checkFailedShare, type ReportPayload } from '../queue/jobs.js';
import { buildReport, type ReportImage, type ReportWriter } from '../report/index.js';
import type { ByteReader } from '../run/sources.js';
import {
  StageTimer, jobTimingRows, jobTimings, peakRssMiB, queueWaitMs, sumJobTimings, type JobTimings, type QueuedJob,
} from '../run/timings.js';
import { mapsKey, reportKey, reportPrefix, scoresKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { classifyDatasetPaths } from '../dataset/mvtec.js';
import { checkDatasetKeys, listRelative } from './dataset-store.js';
import type { ModelCache } from './model-store.js';
import { ShardScoresSchema, ShardTimingsSchema, scoreTimingsKey } from './score-shard.js';

export interface ReportJobResult {
  runId: string;
  images: number;
  failed: number;
  metrics: Pick<EvaluationMetrics, 'image_auroc' | 'pixel_auroc' | 'aupro' | 'f1_max' | 'threshold' | 'confusion_matrix'>;
  reportPrefix: string;
  timings_ms: Record<string, number>;
}

export function storeReportWriter(store: ObjectStore, runId: string): ReportWriter {
  return { put: async (rel, body, contentType) => void (await store.putObject(reportKey(runId, rel), body, contentType)) };
}

/** One image's whole-image map from a shard's maps file, by byte range (float32, little-endian). */
async function readMap(
  key: string, at: { offset: number; values: number }, get: (range: { start: number; end: number }) => Promise<Buffer>,
): Promise<Float32Array> {
  const bytes = await get({ start: at.offset, end: at.offset + at.values * 4 });
  if (bytes.length !== at.values * 4) throw new Error(`maps file "${key}": expected ${at.values * 4} bytes at ${at.offset}, got ${bytes.length}`);
  const out = new Float32Array(at.values);
  for (let i = 0; i < at.values; i++) out[i] = bytes.readFloatLE(i * 4);
  return out;
}

export async function buildRunReport(
  p: ReportPayload, ctx: { store: ObjectStore; models: ModelCache; log: Logger; job?: QueuedJob },
): Promise<ReportJobResult> {
  const timer = new StageTimer();
  const t0 = performance.now();
  checkDatasetKeys(p.datasetPrefix, []);
  const { manifest } = await timer.time('load_model', () => ctx.models.get(p.model.category, p.model.version));
  // Only the test images and their masks are listed: the training images (an archive, maybe) are not the report's.
  const dataset = await timer.time('list', async () => {
    const under = async (folder: string) => (await listRelative(ctx.store, p.datasetPrefix + folder)).map((rel) => folder + rel);
    return classifyDatasetPaths([...(await under('test/')), ...(await under('ground_truth/'))], `"${p.datasetPrefix}"`, { test: true });
  });
  // A storage fault fails the job (retried); only a mask that cannot be decoded is reported per image.
  const read: ByteReader = (rel) => timer.time('download', () => ctx.store.getObject(p.datasetPrefix + rel));
  const byId = new Map(dataset.test.map((img) => [img.path, img]));
  const images: (ScoredImage & ReportImage)[] = [];
  const failed: FailedImage[] = [];
  const shardOf = new Map<string, string>();
  const pixels = new PixelHistogram();
  const scoreJobs: JobTimings[] = [];
  let lastShardDone = 0;
  let engine = { name: manifest.backbone.engine, backend: manifest.backbone.backend };
  for (const [n, shard] of p.shards.entries()) {
    const scores = await timer.time('download', () => ctx.store.getJson(scoresKey(p.runId, shard), ShardScoresSchema));
    if (n === 0 && scores.engine && scores.backend) engine = { name: scores.engine, backend: scores.backend };
    // Absent for runs scored before shards recorded their timings.
    const timings = await timer.time('download', () => ctx.store.getManifest(scoreTimingsKey(p.runId, shard), ShardTimingsSchema));
    if (timings) {
      scoreJobs.push(jobTimings(timings.timings_ms, timings.queue_wait_ms));
      lastShardDone = Math.max(lastShardDone, timings.finished_at);
    }
    failed.push(...scores.failed);
    pixels.merge(PixelHistogram.fromJSON(scores.pixels, scoresKey(p.runId, shard)));
    for (const s of scores.images) {
      const img = byId.get(s.id);
      if (!img) {
        failed.push({ id: s.id, error: 'scored, but not a test image of the dataset' });
        continue;
      }
      // Shards never overlap when the producer made them; a hand-made run that does is refused, not double-counted.
      const earlier = shardOf.get(s.id);
      if (earlier !== undefined) throw new Error(`evaluation run ${p.runId}: image "${s.id}" was scored by shards ${earlier} and ${shard}`);
      shardOf.set(s.id, shard);
      const mapsAt = mapsKey(p.runId, shard);
      const { frame, map } = s;
      images.push({
        id: s.id, defectType: img.defectType, label: img.label, score: s.score, recall: s.recall ?? null, image: () => ctx.store.getObject(s.key),
        heatmap: async () => ({
          map: await readMap(mapsAt, map, (range) => timer.time('download', () => ctx.store.getObject(mapsAt, { range }))),
          mask: (await readGroundTruth(img, frame, read)).mask, width: frame.resizedWidth, height: frame.resizedHeight,
        }),
      });
    }
  }
  if (images.length === 0) throw new Error(`evaluation run ${p.runId}: no image was scored (${failed.length} failed)`);
  checkFailedShare(`evaluation run ${p.runId}`, failed, images.length + failed.length, p.maxFailedShare);
  const { metrics, threshold } = timer.timeSync('metrics', () => assembleMetrics({
    images, pixels, failed, model: { version: p.model.version, ...patchcoreModelRecord(manifest, engine) },
    validationScores: manifest.validation?.scores, modelName: `model ${p.model.category}/${p.model.version}`,
  }));
  // The evaluation's stages summed over its jobs, like a local evaluate's, then where the whole run's time went.
  const reportJob = jobTimings(timer.toJSON(), queueWaitMs(ctx.job, lastShardDone));
  const evaluationStages = sumJobTimings([...scoreJobs, reportJob]).by_stage_ms;
  metrics.timings_ms = {
    ...Object.fromEntries(Object.entries(evaluationStages).map(([k, v]) => [k, Math.round(v)])),
    total: Math.round(performance.now() - t0),
    ...jobTimingRows({
      ...(manifest.training.jobs ?? {}),
      ...(scoreJobs.length ? { score: sumJobTimings(scoreJobs) } : {}),
      report: reportJob,
    }),
  };
  metrics.peak_rss_mib = peakRssMiB();
  await timer.time('report', () =>
    buildReport(
      {
        run: {
          runId: p.runId, modelVersion: `${p.model.category}/${p.model.version}`, ...describePatchcore(manifest, engine),
          dataset: p.datasetPrefix, createdAt: new Date().toISOString(), timings: metrics.timings_ms,
        },
        name: 'patchcore', images, metrics, threshold, pixels,
      },
      storeReportWriter(ctx.store, p.runId),
    ),
  );
  ctx.log.info({ runId: p.runId, images: images.length, image_auroc: metrics.image_auroc }, 'report written');
  return {
    runId: p.runId, images: images.length, failed: failed.length, reportPrefix: reportPrefix(p.runId), timings_ms: timer.toJSON(),
    metrics: {
      image_auroc: metrics.image_auroc, pixel_auroc: metrics.pixel_auroc, aupro: metrics.aupro,
      f1_max: metrics.f1_max, threshold: metrics.threshold, confusion_matrix: metrics.confusion_matrix,
    },
  };
}
