// Input checks and the threshold sweep shared by the binary-label metrics.

import { argsortDescending } from './sort.js';

export interface ClassCounts {
  positives: number;
  negatives: number;
}

/** Checks that scores and labels pair up and that labels are 0/1; counts each class. */
export function countBinaryLabels(scores: Float32Array, labels: Uint8Array, caller: string): ClassCounts {
  if (scores.length !== labels.length) {
    throw new Error(`${caller}: scores has ${scores.length} values but labels has ${labels.length}`);
  }
  let positives = 0;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (l > 1) throw new Error(`${caller}: labels[${i}] is ${l}, expected 0 (normal) or 1 (anomalous)`);
    positives += l;
  }
  return { positives, negatives: labels.length - positives };
}

/**
 * Walks the distinct scores from the highest down and calls `visit` after each one with the cumulative counts
 * of positives (tp) and negatives (fp) scoring >= it. Tied scores are taken together, as one threshold.
 */
export function sweepThresholds(
  scores: Float32Array, labels: Uint8Array, visit: (threshold: number, tp: number, fp: number) => void,
): void {
  const order = argsortDescending(scores);
  const n = scores.length;
  let tp = 0;
  let fp = 0;
  let i = 0;
  while (i < n) {
    const s = scores[order[i]];
    while (i < n && scores[order[i]] === s) {
      if (labels[order[i]] === 1) tp++;
      else fp++;
      i++;
    }
    visit(s, tp, fp);
  }
}
