// From per-image scores and anomaly maps to the figures of metrics.json. Pure: used by the local `evaluate`
// command and by the distributed report job alike.
import { aupro, f1Max, rocAuc, scoreStats, type Confusion, type ScoreSummary } from '../metrics/index.js';

export interface ScoredImage {
  id: string;
  defectType: string;
  label: 0 | 1;
  score: number;
  /** Anomaly map in the model frame (height x width), or null when maps were not kept. */
  map: Float32Array | null;
  /** Ground truth in the model frame (0/1), or null when unknown (defect image without a usable mask). */
  mask: Uint8Array | null;
  height: number;
  width: number;
}

export interface EvaluationMetrics {
  image_auroc: number | null;
  pixel_auroc: number | null;
  aupro: number | null;
  f1_max: number | null;
  threshold: number | null;
  precision: number | null;
  recall: number | null;
  confusion_matrix: Confusion | null;
  images: number;
  images_by_type: Record<string, number>;
  pixel_images: number;
  per_defect_type: Record<string, { images: number; image_auroc: number | null }>;
  score_stats: Record<string, ScoreSummary>;
  hnsw_recall_at_1?: number | null;
  /** The threshold that decides good/defect in the report and scores.csv, how it was chosen, and its outcome. */
  decision?: { rule: 'f1-max' | 'target-fpr'; threshold: number; target_fpr?: number; confusion_matrix: Confusion | null };
  failed_images?: { id: string; error: string }[];
  model?: Record<string, unknown>;
  timings_ms?: Record<string, number>;
  peak_rss_mib?: number;
}

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
