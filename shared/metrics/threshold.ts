// Decision threshold choice: the score cut (score >= threshold means anomalous) with the best F1.

import { countBinaryLabels, sweepThresholds } from './binary.js';

export interface Confusion {
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

export interface F1Max {
  f1: number;
  threshold: number;
  precision: number;
  recall: number;
  confusion: Confusion;
}

/** Confusion matrix of the rule `score >= threshold` is anomalous (label 1). */
export function confusionAt(scores: Float32Array, labels: Uint8Array, threshold: number): Confusion {
  countBinaryLabels(scores, labels, 'confusionAt');
  if (Number.isNaN(threshold)) throw new Error('confusionAt: threshold is NaN');
  let tp = 0;
  let fp = 0;
  let tn = 0;
  let fn = 0;
  for (let i = 0; i < scores.length; i++) {
    const predicted = scores[i] >= threshold;
    if (labels[i] === 1) {
      if (predicted) tp++;
      else fn++;
    } else if (predicted) fp++;
    else tn++;
  }
  return { tp, fp, tn, fn };
}

/**
 * Threshold among the distinct scores that maximises F1. On equal F1 the higher threshold
 * wins (fewer alarms for the same F1).
 */
export function f1Max(scores: Float32Array, labels: Uint8Array): F1Max {
  const { positives, negatives } = countBinaryLabels(scores, labels, 'f1Max');
  if (positives === 0) throw new Error('f1Max: labels contain no anomalous sample (1), so F1 is undefined');
  let bestF1 = -1;
  let bestThreshold = 0;
  let bestTp = 0;
  let bestFp = 0;
  sweepThresholds(scores, labels, (s, tp, fp) => {
    // 2PR/(P+R) written with counts: defined even when tp = 0.
    const f1 = (2 * tp) / (2 * tp + fp + (positives - tp));
    if (f1 > bestF1) {
      bestF1 = f1;
      bestThreshold = s;
      bestTp = tp;
      bestFp = fp;
    }
  });
  return {
    f1: bestF1,
    threshold: bestThreshold,
    precision: bestTp / (bestTp + bestFp),
    recall: bestTp / positives,
    confusion: { tp: bestTp, fp: bestFp, tn: negatives - bestFp, fn: positives - bestTp },
  };
}
