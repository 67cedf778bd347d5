import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_HNSW } from '../bank/index.js';
import { getRecipe } from '../features/recipes.js';
import { ModelManifestSchema } from '../model/manifest.js';
import { buildPatchcoreManifest } from './model-manifest.js';

test('buildPatchcoreManifest: a valid manifest that names its method and keeps the scoring settings given', () => {
  const input = {
    category: 'bottle', recipe: getRecipe('paper'), grid: [28, 28] as [number, number],
    weights: { file: '/some/dir/weights.h5', sha256: 'ab'.repeat(32) }, engine: 'onnx', backend: 'cpu',
    frame: { resize: 256, crop: 224 }, coreset: { ratio: 0.1, projectionDim: 128, seed: 0, trainPatches: 7840 },
    bank: { count: 784, hnsw: DEFAULT_HNSW },
    scoring: { sigma: 4, reweightNeighbours: 3 }, training: { images: 10, skipped: [], timings_ms: { coreset: 5 } },
  };
  const m = buildPatchcoreManifest(input);
  assert.doesNotThrow(() => ModelManifestSchema.parse(m));
  assert.equal(m.method, 'patchcore');
  assert.deepEqual(m.scoring, { sigma: 4, reweightNeighbours: 3 });
  assert.equal(m.backbone.weights.file, 'weights.h5');
  assert.deepEqual([m.featureDim, m.bank.dim, m.coreset.target], [1024, 1024, 784]);
  assert.deepEqual(buildPatchcoreManifest({ ...input, scoring: {} }).scoring, { sigma: 4, reweightNeighbours: null });
});
