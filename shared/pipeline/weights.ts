// The backbone weights a model was trained with, and the one check that refuses to score or extract with others:
// features from other weights are meaningless against the model's bank.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { UserError, WeightsMismatchError } from '../errors.js';

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The sha256 of a weights file, or an error that names the file. */
export function weightsSha256(path: string): Promise<string> {
  return sha256File(path).catch((err: Error) => {
    throw new UserError(`weights file "${path}" cannot be read: ${err.message}`);
  });
}

const short = (sha: string) => `${sha.slice(0, 12)}...`;

/**
 * Throws WeightsMismatchError unless the weights in use (`actual` sha256) are the `expected` ones. `mismatch` words
 * the error from both shortened hashes ("570e1bfca26e..."), naming the file, model or run concerned.
 */
export function checkWeights(actual: string, expected: string, mismatch: (actual: string, expected: string) => string): void {
  if (actual !== expected) throw new WeightsMismatchError(mismatch(short(actual), short(expected)));
}

/** A local weights file against the weights a model was trained with. */
export async function checkWeightsFile(weightsPath: string, trained: { file: string; sha256: string }): Promise<void> {
  checkWeights(await weightsSha256(weightsPath), trained.sha256, (a, e) =>
    `weights file "${weightsPath}" (sha256 ${a}) is not the one this model was trained with (${trained.file}, sha256 ${e})`);
}
