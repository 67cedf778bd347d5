// From per-image scores and anomaly maps to the figures of metrics.json. Pure: used by the local `evaluate`
// command and by the distributed report job alike.
import {
  aupro, confusionAt, decideThreshold, f1Max, rocAuc, scoreStats, type ThresholdChoice, type ThresholdSetting,
} from '../metrics/index.js';
import type { EvaluationMetrics, FailedImage, RecallCount, ScoredImage } from './types.js';

/** Test patches measured for HNSW recall@1 unless told otherwise (`evaluate --recall-sample`). */
export const DEFAULT_RECALL_SAMPLE = 2000;

const round = (x: number) => Math.round(x * 1e6) / 1e6;

export function computeMetrics(scored: ScoredImage[]): EvaluationMetrics {
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

  // Pixel metrics over the images whose ground truth is known and whose maps share the first one's frame.
  const withMask = scored.filter((s) => s.mask && s.map);
  const frame = withMask[0];
  const pix = withMask.filter((s) => s.height === frame.height && s.width === frame.width);
  let pixelAuroc: number | null = null;
  let pro: number | null = null;
  const anyDefectPixel = pix.some((s) => s.mask!.some((v) => v === 1));
  if (pix.length > 0 && anyDefectPixel) {
    const n = frame.height * frame.width;
    const allMaps = new Float32Array(pix.length * n);
    const allMasks = new Uint8Array(pix.length * n);
    pix.forEach((s, i) => {
      allMaps.set(s.map!, i * n);
      allMasks.set(s.mask!, i * n);
    });
    if (allMasks.some((v) => v === 0)) {
      pixelAuroc = round(rocAuc(allMaps, allMasks));
      pro = round(aupro(pix.map((s) => s.map!), pix.map((s) => s.mask!), frame.height, frame.width, 0.3));
    }
  }

  const f1 = bothClasses ? f1Max(scores, labels) : null;
  return {
    image_auroc: bothClasses ? round(rocAuc(scores, labels)) : null,
    pixel_auroc: pixelAuroc,
    aupro: pro,
    f1_max: f1 ? round(f1.f1) : null,
    threshold: f1 ? f1.threshold : null,
    precision: f1 ? round(f1.precision) : null,
    recall: f1 ? round(f1.recall) : null,
    confusion_matrix: f1 ? f1.confusion : null,
    images: scored.length,
    images_by_type: imagesByType,
    pixel_images: pix.length,
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
  const metrics = computeMetrics(images);
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
