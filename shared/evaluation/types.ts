// The types an evaluation is made of, in one place: what a method yields per image, a scored image with its ground
// truth, and the figures of metrics.json. Methods, stages, the report and the job adapters all speak these.
import type { Frame } from '../image/index.js';
import type { Confusion, ScoreSummary, ThresholdRule } from '../metrics/index.js';

/** HNSW recall@1 on an image's sampled patches: hits of `total` sampled patches. Sums exactly across shards. */
export interface RecallCount {
  hits: number;
  total: number;
}

/** A method's result for one test image. */
export type ImageResult =
  | { ok: true; id: string; frame: Frame; score: number; map: Float32Array; recall?: RecallCount }
  | { ok: false; id: string; error: string };

/** An image that could not be used, and why. */
export interface FailedImage {
  id: string;
  error: string;
}

/** A scored test image as the metrics see it: its score and label (pixel data goes into a PixelHistogram). */
export interface ScoredImage {
  id: string;
  defectType: string;
  label: 0 | 1;
  score: number;
  /** PatchCore: HNSW recall@1 on this image's sampled patches (absent when not measured). */
  recall?: RecallCount | null;
}

/** How the report describes a model. */
export interface ModelDescription {
  recipe: string;
  backbone: string;
  coresetSize?: number;
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
  /** Share of the ground-truth defect pixels that lay outside the model's view (0 without a crop; null without any). */
  defect_pixels_outside_view: number | null;
  per_defect_type: Record<string, { images: number; image_auroc: number | null }>;
  score_stats: Record<string, ScoreSummary>;
  /** The threshold that decides good/defect in the report and scores.csv, how it was chosen, and its outcome. */
  decision?: { rule: ThresholdRule; threshold: number; target_fpr?: number; confusion_matrix: Confusion | null };
  hnsw_recall_at_1?: number | null;
  failed_images?: FailedImage[];
  model?: Record<string, unknown>;
  timings_ms?: Record<string, number>;
  peak_rss_mib?: number;
}
