// Input checks shared by the binary-label metrics.

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
