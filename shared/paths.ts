// Where the read-only data and weights live. Everything is overridable so a user can point the
// same code at their own copies; the defaults find `../shared` beside the checkout, as on CI.
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Root of the shared data folder: $PATCHCORE_SHARED_DIR, else `../shared` beside the checkout. */
export function sharedDir(): string {
  return resolve(process.env.PATCHCORE_SHARED_DIR ?? join(repoRoot, '..', 'shared'));
}

/** The Keras ImageNet ResNet-50 weights: $PATCHCORE_WEIGHTS, else the shared truncated file. */
export function defaultWeightsPath(): string {
  return resolve(
    process.env.PATCHCORE_WEIGHTS ?? join(sharedDir(), 'weights', 'resnet50_imagenet_keras_conv1-conv4.h5'),
  );
}

/** An MVTec AD category folder: $PATCHCORE_DATA, else the shared copy of `category`. */
export function defaultDatasetDir(category = 'bottle'): string {
  return resolve(process.env.PATCHCORE_DATA ?? join(sharedDir(), 'datasets', 'mvtec_ad', category));
}

/** Tensors from an independent implementation, used by the numerical tests. */
export function referenceDir(): string {
  return join(sharedDir(), 'reference');
}
