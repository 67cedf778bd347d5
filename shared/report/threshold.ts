// Decision threshold for the report (score >= threshold means anomalous), and the words that say how it
// was chosen: F1-max when the test set is labelled, else a target false-positive rate on good images.
import { f1Max } from '../metrics/index.js';

export type ThresholdRule = 'f1-max' | 'target-fpr';

export interface ThresholdChoice {
  threshold: number;
  rule: ThresholdRule;
  /** Only for rule 'target-fpr': the false-positive rate aimed at, 0..1. */
  targetFpr?: number;
}

function checkScores(scores: ArrayLike<number>, name: string, caller: string): void {
  if (scores.length === 0) throw new Error(`${caller}: ${name} is empty`);
  for (let i = 0; i < scores.length; i++) {
    if (!Number.isFinite(scores[i])) throw new Error(`${caller}: ${name}[${i}] is ${scores[i]}, expected a finite number`);
  }
}

function checkTargetFpr(targetFpr: number, caller: string): void {
  if (!(targetFpr >= 0 && targetFpr <= 1)) {
    throw new Error(`${caller}: targetFpr must be a number in [0, 1], got ${targetFpr}`);
  }
}

/** The smallest double above x (x finite). */
function nextUp(x: number): number {
  if (x === 0) return Number.MIN_VALUE;
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  view.setBigUint64(0, x > 0 ? bits + 1n : bits - 1n);
  return view.getFloat64(0);
}

/**
 * The smallest threshold whose false-positive rate on the good scores, #(score >= t) / n, is <= targetFpr.
 * Candidates are the distinct good scores (as for rocCurve and f1Max, so the threshold is an observed
 * score); when even the highest good score flags too many images, the threshold is the next double above
 * it, so no good image is flagged.
 */
export function thresholdAtFpr(goodScores: ArrayLike<number>, targetFpr: number): number {
  checkScores(goodScores, 'goodScores', 'thresholdAtFpr');
  checkTargetFpr(targetFpr, 'thresholdAtFpr');
  const sorted = Float64Array.from(goodScores).sort().reverse();
  const n = sorted.length;
  let best = nextUp(sorted[0]);
  // Walk down the distinct values; the flagged count at value v is the number of scores >= v.
  let i = 0;
  while (i < n) {
    const v = sorted[i];
    while (i < n && sorted[i] === v) i++;
    if (i / n > targetFpr) break;
    best = v;
  }
  return best;
}

export interface ChooseThresholdInput {
  /** Test scores with their labels: F1-max is used when both classes are present. */
  scores?: Float32Array;
  labels?: Uint8Array;
  /** Scores of good (normal) validation images: used with targetFpr when the test set is not usable. */
  goodValidationScores?: ArrayLike<number>;
  /** Default 0.01. */
  targetFpr?: number;
}

/** F1-max on labelled test scores when both classes exist, otherwise a target FPR on good validation scores. */
export function chooseThreshold(input: ChooseThresholdInput): ThresholdChoice {
  const { scores, labels } = input;
  if (scores && labels) {
    if (scores.length !== labels.length) {
      throw new Error(`chooseThreshold: scores has ${scores.length} values but labels has ${labels.length}`);
    }
    let positives = 0;
    for (let i = 0; i < labels.length; i++) positives += labels[i] === 1 ? 1 : 0;
    if (positives > 0 && positives < labels.length) {
      return { threshold: f1Max(scores, labels).threshold, rule: 'f1-max' };
    }
  }
  const good = input.goodValidationScores;
  if (!good || good.length === 0) {
    throw new Error(
      'chooseThreshold: no labelled test set with both classes and no goodValidationScores; cannot choose a threshold',
    );
  }
  const targetFpr = input.targetFpr ?? 0.01;
  return { threshold: thresholdAtFpr(good, targetFpr), rule: 'target-fpr', targetFpr };
}

function formatPercent(p: number): string {
  return `${Number((p * 100).toPrecision(3))}%`;
}

/** How the threshold was chosen, in words for the report. */
export function describeThresholdRule(choice: ThresholdChoice): string {
  if (choice.rule === 'f1-max') return 'F1-max on labelled test set';
  return `target FPR ${formatPercent(choice.targetFpr ?? NaN)} on good validation images`;
}
