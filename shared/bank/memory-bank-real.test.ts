// The search MemoryBank chooses, on real bottle patch features (the real backbone on real images): a bank just
// above EXACT_SEARCH_MAX_ROWS scores through HNSW with recall@1 >= 0.99 and true distances; one just below
// searches exactly; the HNSW bank survives a save/load round trip with checksums.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXACT_SEARCH_MAX_ROWS, MemoryBank, BANK_FILES } from './memory-bank.js';
import { createBackbone } from '../backbone/engine.js';
import { listMvtecDataset } from '../dataset/mvtec.js';
import { getRecipe } from '../features/recipes.js';
import { PAPER_FRAME_SPEC } from '../image/preprocess.js';
import { defaultDatasetDir, defaultWeightsPath } from '../paths.js';
import { extractFeatures } from '../pipeline/extract.js';
import { localSources } from '../run/sources.js';
import { StageTimer } from '../run/timings.js';

const DIM = 1024;
const PATCHES = 784;

async function bottleFeatures(trainImages: number): Promise<{ train: Float32Array; test: Float32Array }> {
  const dataset = listMvtecDataset(defaultDatasetDir('bottle'), { train: true, test: true });
  const test = [dataset.test.find((t) => t.defectType === 'broken_large')!, dataset.test.find((t) => t.defectType === 'good')!];
  const images = [...dataset.train.slice(0, trainImages), ...test];
  const backbone = await createBackbone({ engine: 'onnx', weightsPath: defaultWeightsPath() });
  const all = new Float32Array(images.length * PATCHES * DIM);
  let at = 0;
  try {
    for await (const r of extractFeatures(localSources(dataset.root, images), {
      backbone, recipe: getRecipe('paper'), frame: PAPER_FRAME_SPEC, batchSize: 8, timer: new StageTimer(),
    })) {
      assert.ok(r.ok, `${r.id} failed`);
      all.set(r.features.data, at);
      at += r.features.data.length;
    }
  } finally {
    backbone.dispose();
  }
  assert.equal(at, all.length);
  const split = trainImages * PATCHES * DIM;
  return { train: all.subarray(0, split), test: all.subarray(split) };
}

test('real bottle patches: HNSW scores banks above EXACT_SEARCH_MAX_ROWS (recall@1 >= 0.99, true distances), exact search below', async (t) => {
  const images = Math.floor(EXACT_SEARCH_MAX_ROWS / PATCHES) + 1;
  const { train, test: queries } = await bottleFeatures(images);
  const nq = queries.length / DIM;

  // Every patch of the first training images: more near-duplicate rows than a coreset, the harder case.
  const large = new MemoryBank(DIM, images * PATCHES, train);
  assert.ok(large.count > EXACT_SEARCH_MAX_ROWS);
  assert.equal(large.buildHnsw(), true);
  assert.equal(large.searchesExactly, false);
  const got = large.nearest(queries, 1);
  const exact = large.exactNearest(queries, 1);
  const recall = large.recallAt1(queries);
  t.diagnostic(`${large.count}-row bank, ${nq} test patches: recall@1 ${recall}`);
  assert.ok(recall >= 0.99, `recall ${recall}`);
  let misses = 0;
  for (let q = 0; q < nq; q++) {
    // A miss returns a farther row, never a distance below the true nearest one.
    assert.ok(got.distances[q] >= exact.distances[q] * (1 - 1e-5), `query ${q}`);
    if (got.indices[q] === exact.indices[q]) assert.ok(Math.abs(got.distances[q] - exact.distances[q]) <= 1e-5 * exact.distances[q]);
    else misses++;
  }
  assert.ok(misses / nq <= 0.01, `${misses} misses`);

  // One image fewer: exact search scores, and no index is built for it.
  const small = new MemoryBank(DIM, (images - 1) * PATCHES, train.subarray(0, (images - 1) * PATCHES * DIM));
  assert.ok(small.count <= EXACT_SEARCH_MAX_ROWS);
  assert.equal(small.buildHnsw(), false);
  assert.equal(small.hasHnsw, false);
  assert.deepEqual(small.nearest(queries, 1), small.exactNearest(queries, 1));
  assert.equal(small.recallAt1(queries), 1);

  const dir = await mkdtemp(join(tmpdir(), 'bank-real-'));
  try {
    await large.save(dir);
    const meta = JSON.parse(await readFile(join(dir, BANK_FILES.meta), 'utf8'));
    assert.equal(meta.hnswSha256, createHash('sha256').update(await readFile(join(dir, BANK_FILES.usearch))).digest('hex'));
    const loaded = await MemoryBank.load(dir, { dim: DIM });
    assert.equal(loaded.searchesExactly, false);
    assert.deepEqual(loaded.nearest(queries, 1), got);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
