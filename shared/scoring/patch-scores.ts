// Patch and image anomaly scores: a patch's score is its distance to the nearest memory-bank
// entry; an image's score is its largest patch score, optionally re-weighted as in the PatchCore
// paper (eq. 7) by how isolated the matched bank entry is.

import type { MemoryBank } from '../bank/memory-bank.js';

/** Euclidean distance from each patch (row of `features`, bank.dim wide) to its nearest bank entry. */
export function patchScores(bank: MemoryBank, features: Float32Array, opts: { exact?: boolean } = {}): Float32Array {
  if (features.length % bank.dim !== 0) {
    throw new Error(`patchScores: features has ${features.length} values, not a multiple of the bank dim ${bank.dim}`);
  }
  const r = opts.exact ? bank.exactNearest(features, 1) : bank.nearest(features, 1);
  return r.distances;
}

export interface ReweightOptions {
  bank: MemoryBank;
  /** This image's patch features (scores.length x dim, row-major). */
  features: Float32Array;
  dim: number;
  /** b, the size of the neighbourhood N_b(m*) of the matched bank entry (anomalib's default is 9). */
  neighbours: number;
}

/**
 * Image score from one image's patch scores: the maximum s*, or with `reweight`
 * s = (1 - exp(||m_test* - m*||) / sum_{m in N_b(m*)} exp(||m_test* - m||)) * s*,
 * where m_test* is the highest-scoring patch, m* its nearest bank entry and N_b(m*) the b nearest
 * bank entries to m* (m* included). As in anomalib, b = 1 means no re-weighting. The neighbour
 * look-ups are exact (two queries per image).
 */
export function imageScore(scores: Float32Array, opts: { reweight?: ReweightOptions } = {}): number {
  if (scores.length === 0) throw new Error('imageScore: scores is empty');
  // Lowest index among equal maxima, like torch.argmax.
  let top = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[top]) top = i;
  const sStar = scores[top];
  const rw = opts.reweight;
  if (!rw) return sStar;

  const { bank, features, dim, neighbours } = rw;
  if (dim !== bank.dim) throw new Error(`imageScore: reweight dim ${dim} differs from the bank dim ${bank.dim}`);
  if (features.length !== scores.length * dim) {
    throw new Error(
      `imageScore: reweight features has ${features.length} values, expected scores x dim = ${scores.length} x ${dim} = ${scores.length * dim}`,
    );
  }
  if (!Number.isInteger(neighbours) || neighbours < 1) {
    throw new Error(`imageScore: reweight neighbours must be a positive integer, got ${neighbours}`);
  }
  const b = Math.min(neighbours, bank.count);
  if (b === 1) return sStar;

  const testPatch = features.subarray(top * dim, (top + 1) * dim);
  const mStar = bank.exactNearest(testPatch, 1).indices[0];
  const support = bank.exactNearest(bank.data.subarray(mStar * dim, (mStar + 1) * dim), b).indices;
  const dists = new Float64Array(b);
  let maxDist = -Infinity;
  for (let i = 0; i < b; i++) {
    dists[i] = euclidean(testPatch, bank.data, support[i] * dim, dim);
    if (dists[i] > maxDist) maxDist = dists[i];
  }
  // Softmax of the distances, shifted by the maximum so exp cannot overflow.
  let denominator = 0;
  for (let i = 0; i < b; i++) denominator += Math.exp(dists[i] - maxDist);
  const numerator = Math.exp(euclidean(testPatch, bank.data, mStar * dim, dim) - maxDist);
  return (1 - numerator / denominator) * sStar;
}

function euclidean(a: Float32Array, bank: Float32Array, offset: number, dim: number): number {
  let s = 0;
  for (let j = 0; j < dim; j++) {
    const e = a[j] - bank[offset + j];
    s += e * e;
  }
  return Math.sqrt(s);
}
