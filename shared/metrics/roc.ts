// ROC curve and its area for anomaly scores (label 1 = anomalous = positive).
// Thresholds sit at the distinct score values, so a positive and a negative with the same
// score move the curve diagonally and contribute half a pair, as in sklearn's roc_auc_score.

import { countBinaryLabels, sweepThresholds } from './binary.js';

export interface RocCurve {
  fpr: number[];
  tpr: number[];
  /** thresholds[k] is the score at which point k is reached (score >= threshold is positive); the start point has +Infinity. */
  thresholds: number[];
}

function requireBothClasses(positives: number, negatives: number, caller: string): void {
  if (positives === 0 || negatives === 0) {
    throw new Error(
      `${caller}: labels contain only one class (${positives} anomalous, ${negatives} normal); ROC needs both`,
    );
  }
}

/** Area under the ROC curve. */
export function rocAuc(scores: Float32Array, labels: Uint8Array): number {
  const { positives, negatives } = countBinaryLabels(scores, labels, 'rocAuc');
  requireBothClasses(positives, negatives, 'rocAuc');
  // Twice the area in units of (positive, negative) pairs: integer-valued, so exact in a double.
  let doubledArea = 0;
  let prevTp = 0;
  let prevFp = 0;
  sweepThresholds(scores, labels, (_, tp, fp) => {
    doubledArea += (fp - prevFp) * (prevTp + tp);
    prevTp = tp;
    prevFp = fp;
  });
  return doubledArea / (2 * positives * negatives);
}

/**
 * ROC curve with one point per distinct score plus the (0,0) start. With maxPoints, evenly
 * spaced points are kept (first and last included) so a plot stays small.
 */
export function rocCurve(scores: Float32Array, labels: Uint8Array, maxPoints?: number): RocCurve {
  if (maxPoints !== undefined && !(Number.isInteger(maxPoints) && maxPoints >= 2)) {
    throw new Error(`rocCurve: maxPoints must be an integer >= 2, got ${maxPoints}`);
  }
  const { positives, negatives } = countBinaryLabels(scores, labels, 'rocCurve');
  requireBothClasses(positives, negatives, 'rocCurve');
  const fpr = [0];
  const tpr = [0];
  const thresholds = [Infinity];
  sweepThresholds(scores, labels, (s, tp, fp) => {
    fpr.push(fp / negatives);
    tpr.push(tp / positives);
    thresholds.push(s);
  });
  if (maxPoints === undefined || fpr.length <= maxPoints) return { fpr, tpr, thresholds };
  return decimate({ fpr, tpr, thresholds }, maxPoints);
}

function decimate(curve: RocCurve, maxPoints: number): RocCurve {
  const last = curve.fpr.length - 1;
  const out: RocCurve = { fpr: [], tpr: [], thresholds: [] };
  // The stride exceeds 1 here, so rounded indices are strictly increasing.
  for (let k = 0; k < maxPoints; k++) {
    const j = Math.round((k * last) / (maxPoints - 1));
    out.fpr.push(curve.fpr[j]);
    out.tpr.push(curve.tpr[j]);
    out.thresholds.push(curve.thresholds[j]);
  }
  return out;
}
