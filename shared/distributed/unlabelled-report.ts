// Report job of an unlabelled scoring run (`submit score --images`), an adapter over the score shards' outputs:
// reports/<run>/results.csv and results.jsonl (one row per image: score, anomalous at the model's threshold, the
// key of its heatmap), maps/<image id>.png (every image's anomaly map as an inferno heatmap over one range for the
// run), summary.json, plots/score-histogram.svg, gallery/<rank>.png (the most anomalous images) and index.html,
// written last. Memory does not grow with the number of images: the shards are read one at a time, twice (first
// the scores only, for the histogram's range, the heatmaps' range and which images are the top N; then with their
// maps), the rows stream to temporary files, and only the top N maps are held.
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { thresholdAtFpr, type ThresholdChoice } from '../metrics/threshold.js';
import { checkFailedShare, PAYLOAD_LIMITS, type ReportPayload, type UnlabelledReport } from '../queue/jobs.js';
import { renderOverlay } from '../report/heatmap.js';
import {
  RESULTS_CSV_HEADER, RunningStats, ScoreHistogram, TopScores, binnedHistogramPlot, renderUnlabelledPage, resultCsvLine,
  resultJsonLine, type ResultRow, type TopImageView,
} from '../report/unlabelled.js';
import { StageTimer, jobTimingRows, jobTimings, peakRssMiB, queueWaitMs, sumJobTimings, type JobTimings, type QueuedJob } from '../run/timings.js';
import { mapsKey, reportKey, reportPrefix, scoresKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { decodeTensorFile, imageRows } from '../storage/tensor-file.js';
import { checkDatasetKeys } from './dataset-store.js';
import type { ModelCache } from './model-store.js';
import { ShardScoresSchema, ShardTimingsSchema, scoreTimingsKey, type ShardScores } from './score-shard.js';

export const DEFAULT_TARGET_FPR = 0.01;
export const DEFAULT_TOP = 24;
const HISTOGRAM_BINS = 40;
/** Heatmap PNGs written at once. */
const PUT_CONCURRENCY = 8;

/** reports/<run>/maps/<image id>.png: the object key of an image's heatmap (the id keeps its extension). */
export const heatmapKey = (runId: string, imageId: string): string => reportKey(runId, `maps/${imageId}.png`);

export interface UnlabelledReportResult {
  runId: string;
  images: number;
  failed: number;
  anomalous: number | null;
  threshold: number | null;
  reportPrefix: string;
  timings_ms: Record<string, number>;
}

/** The model's threshold: the target FPR on its held-out good images; null (with why) when it has none. */
export function unlabelledThreshold(validationScores: readonly number[] | undefined, targetFpr: number, model: string):
  { choice: ThresholdChoice | null; note: string | null } {
  if (!validationScores || validationScores.length === 0) {
    return { choice: null, note: `${model} has no held-out good images to set a threshold (fit it with --validation-split); anomalous is left empty` };
  }
  return { choice: { threshold: thresholdAtFpr(validationScores, targetFpr), rule: 'target-fpr', targetFpr }, note: null };
}

interface TopEntry {
  id: string;
  score: number;
}

interface HeldMap {
  key: string;
  /** Over the whole image at the resized resolution. */
  map: Float32Array;
  width: number;
  height: number;
}

/** Runs `tasks` with at most `limit` in flight; the first failure is thrown once the others settle. */
async function runLimited(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, tasks.length) }, async () => {
    while (next < tasks.length) await tasks[next++]();
  });
  const settled = await Promise.allSettled(lanes);
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

function writeLine(out: WriteStream, line: string): Promise<void> {
  return out.write(line) ? Promise.resolve() : new Promise((r) => out.once('drain', () => r()));
}

function closeStream(out: WriteStream): Promise<void> {
  return new Promise((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

export async function buildUnlabelledReport(
  p: ReportPayload & { unlabelled: UnlabelledReport },
  ctx: { store: ObjectStore; models: ModelCache; log: Logger; job?: QueuedJob },
): Promise<UnlabelledReportResult> {
  const timer = new StageTimer();
  const t0 = performance.now();
  checkDatasetKeys(p.datasetPrefix, []);
  const top = p.unlabelled.top ?? DEFAULT_TOP;
  const targetFpr = p.unlabelled.targetFpr ?? DEFAULT_TARGET_FPR;
  const modelName = `model ${p.model.category}/${p.model.version}`;
  const { manifest } = await timer.time('load_model', () => ctx.models.get(p.model.category, p.model.version));
  const { choice, note } = unlabelledThreshold(manifest.validation?.scores, targetFpr, modelName);
  const readScores = (shard: string): Promise<ShardScores> =>
    timer.time('download', () => ctx.store.getJson(scoresKey(p.runId, shard), ShardScoresSchema));

  // Pass 1, scores only: their range, the top N, the failures; and the score jobs' timings, summed as they come.
  let scoreJobs: JobTimings | null = null;
  let lastShardDone = 0;
  const range = new RunningStats();
  const best = new TopScores<TopEntry>(top);
  const failed: { id: string; error: string }[] = [];
  for (const shard of p.shards) {
    const scores = await readScores(shard);
    for (const s of scores.images) {
      range.add(s.score);
      best.add({ id: s.id, score: s.score });
    }
    failed.push(...scores.failed);
    const t = await timer.time('download', () => ctx.store.getManifest(scoreTimingsKey(p.runId, shard), ShardTimingsSchema));
    if (t) {
      const job = jobTimings(t.timings_ms, t.queue_wait_ms);
      scoreJobs = scoreJobs ? sumJobTimings([scoreJobs, job]) : job;
      lastShardDone = Math.max(lastShardDone, t.finished_at);
    }
  }
  if (range.count === 0) throw new Error(`scoring run ${p.runId}: no image was scored (${failed.length} failed${failed[0] ? `, e.g. ${failed[0].id}: ${failed[0].error}` : ''})`);
  checkFailedShare(`scoring run ${p.runId}`, failed, range.count + failed.length, p.maxFailedShare);
  const topIds = new Map(best.sorted().map((e, i) => [e.id, i]));
  const held: (HeldMap | undefined)[] = new Array(topIds.size);
  // One colour range for every heatmap of the run: 0 is a patch equal to a bank entry; the top is the highest score.
  const heatmapRange: [number, number] = [0, range.max > 0 ? range.max : 1];
  const histogram = new ScoreHistogram(range.min, range.max, HISTOGRAM_BINS);
  const stats = new RunningStats();
  let anomalous = 0;

  // Pass 2, shard by shard with its maps: rows, histogram, heatmaps; the top N maps are kept for the gallery.
  const dir = await mkdtemp(join(tmpdir(), 'patchcore-unlabelled-'));
  try {
    const csvPath = join(dir, 'results.csv');
    const jsonlPath = join(dir, 'results.jsonl');
    const csv = createWriteStream(csvPath);
    const jsonl = createWriteStream(jsonlPath);
    await writeLine(csv, RESULTS_CSV_HEADER);
    const emit = async (row: ResultRow) => {
      await writeLine(csv, resultCsvLine(row));
      await writeLine(jsonl, resultJsonLine(row));
    };
    for (const shard of p.shards) {
      const scores = await readScores(shard);
      const maps = scores.images.length
        ? decodeTensorFile(await timer.time('download', () => ctx.store.getObject(mapsKey(p.runId, shard))), mapsKey(p.runId, shard), 'maps')
        : null;
      const mapIndex = new Map(maps?.header.images.map((e, i) => [e.key, i]) ?? []);
      const puts: (() => Promise<void>)[] = [];
      for (const s of scores.images) {
        const i = mapIndex.get(s.key);
        if (i === undefined) throw new Error(`scoring run ${p.runId}: shard ${shard} has no map for "${s.key}" (${mapsKey(p.runId, shard)})`);
        const map = imageRows(maps!, i);
        // Maps cover the whole image at the model's resized resolution (-Infinity where the model did not look).
        const width = s.frame.resizedWidth;
        const height = s.frame.resizedHeight;
        if (map.length !== width * height) throw new Error(`scoring run ${p.runId}: the map of "${s.key}" has ${map.length} values, not ${width}x${height}`);
        const isAnomalous = choice ? s.score >= choice.threshold : null;
        if (isAnomalous) anomalous++;
        histogram.add(s.score);
        stats.add(s.score);
        const mapKey = heatmapKey(p.runId, s.id);
        await emit({ image: s.id, key: s.key, score: s.score, anomalous: isAnomalous, map: mapKey });
        const rank = topIds.get(s.id);
        if (rank !== undefined) held[rank] = { key: s.key, map: map.slice(), width, height };
        puts.push(async () => {
          const png = await timer.time('heatmaps', () => renderOverlay({ id: s.id, map, width, height }, { range: heatmapRange, size: Math.max(width, height), alpha: 1 }));
          await timer.time('upload', () => ctx.store.putObject(mapKey, png.png, 'image/png'));
        });
      }
      await runLimited(puts, PUT_CONCURRENCY);
      for (const f of scores.failed) await emit({ image: f.id, key: p.datasetPrefix + f.id, score: null, anomalous: null, map: null, error: f.error });
    }
    await closeStream(csv);
    await closeStream(jsonl);
    await timer.time('upload', () => ctx.store.putObject(reportKey(p.runId, 'results.csv'), createReadStream(csvPath), 'text/csv; charset=utf-8'));
    await timer.time('upload', () => ctx.store.putObject(reportKey(p.runId, 'results.jsonl'), createReadStream(jsonlPath), 'application/x-ndjson'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  // The gallery of the top N: each map over its image, in the same colour range.
  const topViews: TopImageView[] = [];
  const ranked = best.sorted();
  for (const [rank, e] of ranked.entries()) {
    const h = held[rank];
    if (!h) throw new Error(`scoring run ${p.runId}: the map of top image "${e.id}" was not found in the second pass`);
    const image = await timer.time('download', () => ctx.store.getObject(h.key, { maxBytes: PAYLOAD_LIMITS.imageBytes }));
    const overlay = await timer.time('report', () => renderOverlay(
      { id: e.id, map: h.map, width: h.width, height: h.height, image }, { range: heatmapRange }));
    const gallery = `gallery/${String(rank + 1).padStart(4, '0')}.png`;
    await timer.time('upload', () => ctx.store.putObject(reportKey(p.runId, gallery), overlay.png, 'image/png'));
    held[rank] = undefined;
    topViews.push({
      rank: rank + 1, image: e.id, score: e.score, anomalous: choice ? e.score >= choice.threshold : null, gallery,
      mapHref: `maps/${e.id}.png`, width: overlay.width, height: overlay.height,
    });
  }

  const bins = histogram.toJSON();
  const histogramSvg = await timer.time('report', () => binnedHistogramPlot(bins, choice?.threshold ?? null));
  await timer.time('upload', () => ctx.store.putObject(reportKey(p.runId, 'plots/score-histogram.svg'), histogramSvg, 'image/svg+xml'));
  const createdAt = new Date().toISOString();
  // The report job's stages, then where the run's time went: score and report jobs (compute, storage, queue wait).
  const timings = {
    ...timer.toJSON(), total: Math.round(performance.now() - t0),
    ...jobTimingRows({ ...(scoreJobs ? { score: scoreJobs } : {}), report: jobTimings(timer.toJSON(), queueWaitMs(ctx.job, lastShardDone)) }),
  };
  const summary = {
    kind: 'unlabelled',
    run: p.runId,
    model: { category: p.model.category, version: p.model.version },
    images_prefix: p.unlabelled.imagesPrefix,
    images: stats.count,
    failed_images: failed,
    threshold: choice ? { value: choice.threshold, rule: choice.rule, target_fpr: choice.targetFpr } : null,
    threshold_note: note,
    anomalous: choice ? anomalous : null,
    score_stats: stats.toJSON(),
    histogram: bins,
    heatmap_range: heatmapRange,
    top: topViews.map((t) => ({ rank: t.rank, image: t.image, score: t.score, anomalous: t.anomalous, map: heatmapKey(p.runId, t.image), gallery: reportKey(p.runId, t.gallery) })),
    files: { results_csv: reportKey(p.runId, 'results.csv'), results_jsonl: reportKey(p.runId, 'results.jsonl'), maps: reportKey(p.runId, 'maps/') },
    created_at: createdAt,
    timings_ms: timings,
    peak_rss_mib: peakRssMiB(),
  };
  await ctx.store.putJson(reportKey(p.runId, 'summary.json'), summary);
  const html = renderUnlabelledPage({
    runId: p.runId, modelVersion: `${p.model.category}/${p.model.version}`, imagesPrefix: p.unlabelled.imagesPrefix, createdAt,
    images: stats.count, failed: failed.length, anomalous: summary.anomalous, threshold: choice, thresholdNote: note,
    stats: summary.score_stats, histogramSvg, heatmapRange, top: topViews,
  });
  await ctx.store.putObject(reportKey(p.runId, 'index.html'), html, 'text/html; charset=utf-8');
  ctx.log.info({ runId: p.runId, images: stats.count, failed: failed.length, anomalous: summary.anomalous }, 'unlabelled report written');
  return {
    runId: p.runId, images: stats.count, failed: failed.length, anomalous: summary.anomalous, threshold: choice?.threshold ?? null,
    reportPrefix: reportPrefix(p.runId), timings_ms: timer.toJSON(),
  };
}
