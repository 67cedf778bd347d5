// From per-image scores and the merged pixel summary to the figures of metrics.json. Pure: used by the local
// `evaluate` command and by the distributed report job alike.
import {
  confusionAt, type PixelHistogram, decideThreshold, f1Max, rocAuc, scoreStats, type ThresholdChoice, type ThresholdSetting,
} from '../metrics/index.js';
import type { EvaluationMetrics, FailedImage, RecallCount, ScoredImage } from './types.js';

/** Test patches measured for HNSW recall@1 unless told otherwise (`evaluate --recall-sample`). */
export const DEFAULT_RECALL_SAMPLE = 2000;

const round = (x: number) => Math.round(x * 1e6) / 1e6;

/**
 * metrics.json's figures: image-level from the scores, pixel-level from the summary of every image's whole-image
 * map and mask (null when no image had ground truth).
 */
export function computeMetrics(scored: ScoredImage[], pixels: PixelHistogram | null): EvaluationMetrics {
  const scores = Float32Array.from(scored, (s) => s.score);
  const labels = Uint8Array.from(scored, (s) => s.label);
  const positives = labels.reduce((a, b) => a + b, 0);
  const bothClasses = positives > 0 && positives < labels.length;

  const imagesByType: Record<string, number> = {};
  for (const s of scored) imagesByType[s.defectType] = (imagesByType[s.defectType] ?? 0) + 1;

  const perDefect: EvaluationMetrics['per_defect_type'] = {};
  for (const type of Object.keys(imagesByType).filter((t) => t !== 'good').sort()) {
    const sel = scored.filter((s) => s.defectType === type || s.label === 0);
    const hasGood = sel.some((s) => s.label === 0);
    perDefect[type] = {
      images: imagesByType[type],
      image_auroc: hasGood
        ? round(rocAuc(Float32Array.from(sel, (s) => s.score), Uint8Array.from(sel, (s) => s.label)))
        : null,
    };
  }

  const pixelAuroc = pixels?.auroc() ?? null;
  const pro = pixels?.aupro(0.3) ?? null;

  const f1 = bothClasses ? f1Max(scores, labels) : null;
  return {
    image_auroc: bothClasses ? round(rocAuc(scores, labels)) : null,
    pixel_auroc: pixelAuroc === null ? null : round(pixelAuroc),
    aupro: pro === null ? null : round(pro),
    f1_max: f1 ? round(f1.f1) : null,
    threshold: f1 ? f1.threshold : null,
    precision: f1 ? round(f1.precision) : null,
    recall: f1 ? round(f1.recall) : null,
    confusion_matrix: f1 ? f1.confusion : null,
    images: scored.length,
    images_by_type: imagesByType,
    pixel_images: pixels?.images ?? 0,
    defect_pixels_outside_view: pixels && pixels.defectPixels > 0 ? round(pixels.defectPixelsOutsideView / pixels.defectPixels) : null,
    per_defect_type: perDefect,
    score_stats: scoreStats(Array.from(scores), scored.map((s) => s.defectType)),
  };
}

/**
 * HNSW recall@1 over the images' sampled patches, as hits / total: images in id order, whole images only, up to
 * `budget` patches (at least one image). The same figure whichever shards scored which images. Null when none.
 */
export function mergeRecall(images: readonly { id: string; recall?: RecallCount | null }[], budget: number): number | null {
  let hits = 0;
  let total = 0;
  const measured = images.filter((im) => im.recall).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const { recall } of measured) {
    if (total > 0 && total + recall!.total > budget) break;
    hits += recall!.hits;
    total += recall!.total;
  }
  return total > 0 && budget > 0 ? hits / total : null;
}

export interface MetricsInput {
  images: ScoredImage[];
  /** The pixel summary of every image with ground truth, merged; null when there is none. */
  pixels: PixelHistogram | null;
  /** Images (or masks) that could not be used; listed in id order. */
  failed: FailedImage[];
  /** metrics.json's `model`: the method's record with the caller's ids. */
  model: Record<string, unknown>;
  threshold?: ThresholdSetting;
  /** Scores of good images held out at training time (target-FPR threshold). */
  validationScores?: readonly number[];
  /** Names the model in errors. */
  modelName: string;
  /** Patches measured for HNSW recall@1 (0 = not reported). */
  recallSample?: number;
}

/**
 * metrics.json without timings, and the decision threshold: the one assembly used by the local evaluate and the
 * distributed report job, so both write the same keys with the same values.
 */
export function assembleMetrics(input: MetricsInput): { metrics: EvaluationMetrics; threshold: ThresholdChoice } {
  const { images } = input;
  const metrics = computeMetrics(images, input.pixels);
  const scores = Float32Array.from(images, (s) => s.score);
  const labels = Uint8Array.from(images, (s) => s.label);
  const threshold = decideThreshold(input.threshold ?? { rule: 'f1-max' }, { scores, labels }, input.validationScores, input.modelName);
  metrics.decision = {
    rule: threshold.rule, threshold: threshold.threshold,
    ...(threshold.targetFpr !== undefined ? { target_fpr: threshold.targetFpr } : {}),
    confusion_matrix: confusionAt(scores, labels, threshold.threshold),
  };
  metrics.hnsw_recall_at_1 = mergeRecall(images, input.recallSample ?? DEFAULT_RECALL_SAMPLE);
  metrics.failed_images = [...input.failed].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  metrics.model = input.model;
  return { metrics, threshold };
}
