// Per-class summary of image scores (e.g. how far 'good' and each defect type are apart).

export interface ScoreSummary {
  count: number;
  mean: number;
  /** Population standard deviation (ddof 0). */
  std: number;
  min: number;
  p25: number;
  median: number;
  p75: number;
  max: number;
}

/** Quantile q of ascending-sorted values by linear interpolation between order statistics (numpy's default). */
function quantileSorted(sorted: Float64Array, q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function summarise(values: Float64Array): ScoreSummary {
  values.sort();
  const n = values.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += values[i];
  const mean = sum / n;
  let squares = 0;
  for (let i = 0; i < n; i++) squares += (values[i] - mean) ** 2;
  return {
    count: n,
    mean,
    std: Math.sqrt(squares / n),
    min: values[0],
    p25: quantileSorted(values, 0.25),
    median: quantileSorted(values, 0.5),
    p75: quantileSorted(values, 0.75),
    max: values[n - 1],
  };
}

/** Summary of scores[i] grouped by classes[i]; keys appear in order of first occurrence. */
export function scoreStats(scores: ArrayLike<number>, classes: string[]): Record<string, ScoreSummary> {
  if (scores.length !== classes.length) {
    throw new Error(`scoreStats: scores has ${scores.length} values but classes has ${classes.length}`);
  }
  const members = new Map<string, number[]>();
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (!Number.isFinite(s)) throw new Error(`scoreStats: scores[${i}] is ${s}, expected a finite number`);
    let list = members.get(classes[i]);
    if (list === undefined) {
      list = [];
      members.set(classes[i], list);
    }
    list.push(s);
  }
  // fromEntries defines own properties, so a class named '__proto__' is safe.
  return Object.fromEntries([...members].map(([name, list]) => [name, summarise(Float64Array.from(list))]));
}
