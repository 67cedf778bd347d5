// Reads the reference tensors of ../shared/reference (raw little-endian float32, NHWC, N = 1).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { referenceDir } from '../../shared/paths.js';
import { nhwc, type NhwcTensor } from '../../shared/tensor.js';

export const REFERENCE_IMAGES = ['train_good_000', 'test_broken_large_000'] as const;
export type ReferenceImage = (typeof REFERENCE_IMAGES)[number];
export type ReferenceArray =
  | 'input' | 'conv2_block3_out' | 'conv3_block4_out' | 'conv4_block6_out' | 'patchcore_features';

interface ManifestEntry { file: string; shape: number[] }

export function readReference(image: ReferenceImage, array: ReferenceArray): NhwcTensor {
  const manifest = JSON.parse(readFileSync(join(referenceDir(), 'manifest.json'), 'utf8')) as {
    images: Array<Record<string, ManifestEntry | string>>;
  };
  const entry = manifest.images
    .map((m) => m[array] as ManifestEntry | undefined)
    .find((e) => e?.file === `${image}.${array}.f32`);
  if (!entry) throw new Error(`reference manifest has no ${image}.${array}`);
  const buf = readFileSync(join(referenceDir(), entry.file));
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const [n, h, w, c] = entry.shape;
  return nhwc(data, n, h, w, c);
}

/** max |a - b| / max |b|: the agreement measure the reference README asks for. */
export function relativeMaxError(actual: Float32Array, expected: Float32Array): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
  }
  return maxDiff / maxRef;
}
