import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackboneEngine } from '../backbone/engine.js';
import type { FeatureRecipe } from '../features/recipes.js';
import { PAPER_FRAME_SPEC, loadModelInput } from '../image/index.js';
import { defaultDatasetDir } from '../paths.js';
import { nhwc } from '../tensor.js';
import { DECODE_POOL_MIN_IMAGES, extractFeatures, type ExtractedImage } from './extract.js';
import type { ImageSource } from '../run/sources.js';
import { StageTimer } from '../run/timings.js';

// A stand-in backbone and recipe: each image's "feature" is the sum of its preprocessed input, per channel, so
// the test sees exactly what the decoder and preprocessing delivered, without the cost of the network.
const sumBackbone: BackboneEngine = {
  name: 'stub',
  backend: 'js',
  async run(input) {
    const out = new Float32Array(input.n * 3);
    const size = input.h * input.w * 3;
    for (let i = 0; i < input.n; i++) for (let p = 0; p < size; p++) out[i * 3 + (p % 3)] += input.data[i * size + p];
    return { conv2_block3_out: nhwc(out, input.n, 1, 1, 3) };
  },
  dispose() {},
};
const sumRecipe: FeatureRecipe = {
  name: 'paper', layers: ['conv2_block3_out'], dim: 3, defaultCoresetRatio: 0.1, stride: null,
  embed: (maps, i) => ({ data: maps.conv2_block3_out.data.slice(i * 3, i * 3 + 3), gridH: 1, gridW: 1, dim: 3 }),
};

async function run(sources: ImageSource[], decodeWorkers: number, prefetchBatches: number): Promise<{ results: ExtractedImage[]; timer: StageTimer }> {
  const timer = new StageTimer();
  const results: ExtractedImage[] = [];
  for await (const r of extractFeatures(sources, { backbone: sumBackbone, recipe: sumRecipe, frame: PAPER_FRAME_SPEC, batchSize: 4, timer, decodeWorkers, prefetchBatches })) {
    results.push(r);
  }
  return { results, timer };
}

test('decoding in a worker ahead of the backbone delivers exactly what inline, on-demand decoding does, in order, with per-image failures', async () => {
  const dir = join(defaultDatasetDir(), 'train', 'good');
  const files = readdirSync(dir).sort().slice(0, DECODE_POOL_MIN_IMAGES + 1);
  const sources: ImageSource[] = files.map((f) => ({ id: f, read: () => readFile(join(dir, f)) }));
  sources.splice(5, 0, { id: 'broken.png', read: async () => Buffer.from('\x89PNG\r\n\x1a\n not really') });
  sources.splice(9, 0, { id: 'unreadable.png', read: async () => { throw new Error('EACCES: permission denied'); } });

  const inline = await run(sources, 0, 0);
  const pooled = await run(sources, 1, 2);
  assert.deepEqual(pooled.results.map((r) => r.id), sources.map((s) => s.id));
  assert.deepEqual(pooled.results, inline.results);
  const broken = pooled.results[5];
  assert.ok(!broken.ok && /Cannot decode image "broken\.png"/.test(broken.error), JSON.stringify(broken));
  const unreadable = pooled.results[9];
  assert.ok(!unreadable.ok && /EACCES/.test(unreadable.error));
  // The features are those of the real preprocessing of each file.
  const first = pooled.results[0];
  assert.ok(first.ok);
  const { input } = await loadModelInput(join(dir, files[0]), PAPER_FRAME_SPEC);
  const want = [0, 0, 0];
  for (let p = 0; p < input.length; p++) want[p % 3] += input[p];
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(first.features.data[c] - want[c]) <= 1e-3 * Math.abs(want[c]) + 1);
  for (const t of [inline.timer, pooled.timer]) {
    const ms = t.toJSON();
    assert.ok(ms.decode > 0 && ms.decode_wait >= 0 && ms.backbone >= 0, JSON.stringify(ms));
  }
});
