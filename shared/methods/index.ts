// The methods a model folder can hold, by the name its manifest declares.
import { readModelMethod, type ModelMethod } from '../model/manifest.js';
import { autoencoder } from './autoencoder.js';
import type { Method } from './method.js';
import { patchcore } from './patchcore.js';

export type { Method, MethodOptions, MethodScorer } from './method.js';
export { patchcore, scorePatchcore, patchcoreModelRecord, describePatchcore, type PatchcoreScoring } from './patchcore.js';
export { autoencoder } from './autoencoder.js';

export const METHODS: Record<ModelMethod, Method> = { patchcore, autoencoder };

/** The method of a model folder, as its manifest says. */
export function methodOf(modelDir: string): Method {
  return METHODS[readModelMethod(modelDir)];
}
