// The one threshold module: the decision threshold (score >= threshold means anomalous) with the best F1, a
// target false-positive rate on good images, the choice between them, and the words that say how it was chosen.

import { UserError } from '../errors.js';
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

/** How an evaluation chooses its threshold: F1-max on the labelled test set (default) or a target FPR. */
export interface ThresholdSetting {
  rule: ThresholdRule;
  /** For 'target-fpr': the false-positive rate allowed on the model's held-out good images (default 0.01). */
  targetFpr?: number;
}

/**
 * An evaluation's decision threshold: F1-max when asked for and the test set has both classes; otherwise the target
 * FPR on the good images held out at training time (fit --validation-split). `model` names the model in errors.
 */
export function decideThreshold(
  setting: ThresholdSetting, test: { scores: Float32Array; labels: Uint8Array },
  validationScores: readonly number[] | undefined, model: string,
): ThresholdChoice {
  const positives = test.labels.reduce((a, b) => a + b, 0);
  if (setting.rule === 'f1-max' && positives > 0 && positives < test.labels.length) return chooseThreshold(test);
  if (!validationScores || validationScores.length === 0) {
    throw new UserError(
      setting.rule === 'target-fpr'
        ? `${model} has no held-out good images to set a target-FPR threshold: fit it with --validation-split`
        : `the test set has no labelled defects and good images both, and ${model} has no held-out good images: ` +
          'fit it with --validation-split to get a target-FPR threshold',
    );
  }
  return chooseThreshold({ goodValidationScores: validationScores, targetFpr: setting.targetFpr ?? 0.01 });
}

function formatPercent(p: number): string {
  return `${Number((p * 100).toPrecision(3))}%`;
}

/** How the threshold was chosen, in words for the report. */
export function describeThresholdRule(choice: ThresholdChoice): string {
  if (choice.rule === 'f1-max') return 'F1-max on labelled test set';
  return `target FPR ${formatPercent(choice.targetFpr ?? NaN)} on good validation images`;
}
