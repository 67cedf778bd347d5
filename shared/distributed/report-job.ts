// Report job: the scores and maps of every score shard of an evaluation run, plus the ground-truth masks from
// the dataset -> metrics and the report under reports/<run>/ (metrics.json, scores.csv, index.html, plots,
// gallery). The report's index.html is written last.
import { decodeMask, maskToFrame } from '../image/index.js';
import type { Logger } from '../log.js';
import { computeMetrics } from '../evaluation/metrics.js';
import type { EvaluationMetrics, ScoredImage } from '../evaluation/types.js';
import { StageTimer, peakRssMiB } from '../run/timings.js';
import type { ReportPayload } from '../queue/jobs.js';
import { buildReport, type ReportImage, type ReportWriter } from '../report/index.js';
import { mapsKey, reportKey, reportPrefix, scoresKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { decodeTensorFile } from '../storage/tensor-file.js';
import { checkDatasetKeys, listStoredDataset } from './dataset-store.js';
import type { ModelCache } from './model-store.js';
import { ShardScoresSchema } from './score-shard.js';

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

export async function buildRunReport(
  p: ReportPayload, ctx: { store: ObjectStore; models: ModelCache; log: Logger },
): Promise<ReportJobResult> {
  const timer = new StageTimer();
  const t0 = performance.now();
  checkDatasetKeys(p.datasetPrefix, []);
  const { manifest } = await ctx.models.get(p.model.category, p.model.version);
  const dataset = await timer.time('list', () => listStoredDataset(ctx.store, p.datasetPrefix, { test: true }));
  const byId = new Map(dataset.test.map((img) => [img.path, img]));
  const images: (ScoredImage & ReportImage)[] = [];
  const failed: { id: string; error: string }[] = [];
  const shardOf = new Map<string, string>();
  for (const shard of p.shards) {
    const scores = await timer.time('download', () => ctx.store.getJson(scoresKey(p.runId, shard), ShardScoresSchema));
    failed.push(...scores.failed);
    const maps = scores.images.length
      ? decodeTensorFile(await timer.time('download', () => ctx.store.getObject(mapsKey(p.runId, shard))), mapsKey(p.runId, shard), 'maps')
      : null;
    for (const [i, s] of scores.images.entries()) {
      const img = byId.get(s.id);
      if (!img) {
        failed.push({ id: s.id, error: 'scored, but not a test image of the dataset' });
        continue;
      }
      // Shards never overlap when the producer made them; a hand-made run that does is refused, not double-counted.
      const earlier = shardOf.get(s.id);
      if (earlier !== undefined) throw new Error(`evaluation run ${p.runId}: image "${s.id}" was scored by shards ${earlier} and ${shard}`);
      shardOf.set(s.id, shard);
      const map = maps!.data.slice(i * maps!.header.dim, (i + 1) * maps!.header.dim);
      let mask: Uint8Array | null = img.label === 0 ? new Uint8Array(s.frame.width * s.frame.height) : null;
      if (img.maskPath) {
        // A storage fault fails the job (retried); only a mask that cannot be decoded is reported per image.
        const maskBytes = await timer.time('download', () => ctx.store.getObject(p.datasetPrefix + img.maskPath));
        try {
          mask = maskToFrame(await decodeMask(maskBytes, img.maskPath), s.frame);
        } catch (err) {
          failed.push({ id: img.maskPath, error: (err as Error).message });
        }
      }
      images.push({
        id: s.id, defectType: img.defectType, label: img.label, score: s.score, map, mask,
        height: s.frame.height, width: s.frame.width, frame: s.frame, image: () => ctx.store.getObject(s.key),
      });
    }
  }
  if (images.length === 0) throw new Error(`evaluation run ${p.runId}: no image was scored (${failed.length} failed)`);
  const metrics: EvaluationMetrics = {
    ...timer.timeSync('metrics', () => computeMetrics(images)),
    failed_images: failed,
    model: { category: p.model.category, version: p.model.version, recipe: manifest.recipe, bank: manifest.bank.count },
  };
  metrics.timings_ms = { ...timer.toJSON(), total: Math.round(performance.now() - t0) };
  metrics.peak_rss_mib = peakRssMiB();
  await timer.time('report', () =>
    buildReport(
      {
        run: {
          runId: p.runId, modelVersion: `${p.model.category}/${p.model.version}`, recipe: manifest.recipe,
          backbone: `ResNet-50 (${manifest.backbone.layers.join(', ')}), ${manifest.backbone.engine}/${manifest.backbone.backend}`,
          coresetSize: manifest.bank.count, dataset: p.datasetPrefix, createdAt: new Date().toISOString(),
          timings: metrics.timings_ms,
        },
        name: 'patchcore', images, metrics,
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
