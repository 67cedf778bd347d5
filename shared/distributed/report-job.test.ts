// test-lane: integration (real s3rver, real backbone on real images)
// Score shards and the report job on a real S3-compatible server: a dataset mixing real bottle (900x900) and VisA
// capsules (600x400) images, scored whole (no crop) in two shards; the model is a small random bank (real code,
// random numbers: the figures are meaningless, the structure is what is checked). The report must merge the
// shards' pixel summaries and fetch only the maps it shows, each by its byte range: no whole maps file.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createBackbone } from '../backbone/engine.js';
import { PixelHistogram } from '../metrics/index.js';
import { defaultWeightsPath, sharedDir } from '../paths.js';
import { mapsKey, reportKey, scoresKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { makeBankDir, makeManifest } from '../../test/ops/fixtures.js';
import { useS3Store } from '../../test/helpers/s3-store.js';
import { ModelCache, uploadModel } from './model-store.js';
import { buildRunReport } from './report-job.js';
import { ModelBackbones, ShardScoresSchema, scoreShard } from './score-shard.js';

const log = pino({ level: 'silent' });
const prefix = 'datasets/mixed/';
// Real files: two bottle and two capsules test images, each kind with one defect and its mask.
const files: Record<string, string> = {
  'test/good/bottle-000.png': 'mvtec_ad/bottle/test/good/000.png',
  'test/broken_large/bottle-003.png': 'mvtec_ad/bottle/test/broken_large/003.png',
  'ground_truth/broken_large/bottle-003_mask.png': 'mvtec_ad/bottle/ground_truth/broken_large/003_mask.png',
  'test/good/capsules-000.jpg': 'visa/capsules/test/good/000.jpg',
  'test/bad/capsules-058.jpg': 'visa/capsules/test/bad/058.jpg',
  'ground_truth/bad/capsules-058_mask.png': 'visa/capsules/ground_truth/bad/058_mask.png',
};
let store: ObjectStore;
const work = mkdtempSync(join(tmpdir(), 'patchcore-report-job-'));

useS3Store('patchcore-report-job', async (_server, objects) => {
  store = objects;
  for (const [rel, src] of Object.entries(files)) await store.putObject(prefix + rel, readFileSync(join(sharedDir(), 'datasets', src)));
});

after(async () => {
  rmSync(work, { recursive: true, force: true });
});

test('mixed image sizes in shards; the report merges summaries and fetches only the gallery maps, by byte range', async () => {
  const manifest = { ...makeManifest('mixed'), frame: { resize: 256, crop: null } };
  await uploadModel(store, 'mixed', 'v1', await makeBankDir(3), manifest, { runId: 'train-mixed' });
  const models = new ModelCache(store, join(work, 'cache'));
  const backbones = new ModelBackbones(await createBackbone({ engine: 'onnx', weightsPath: defaultWeightsPath() }), () => {
    throw new Error('fp32 only');
  });
  const model = { category: 'mixed', version: 'v1' };
  const shards = [
    ['test/good/bottle-000.png', 'test/bad/capsules-058.jpg'],
    ['test/good/capsules-000.jpg', 'test/broken_large/bottle-003.png'],
  ];
  try {
    for (const [i, keys] of shards.entries()) {
      const r = await scoreShard(
        { runId: 'eval-mixed', shardId: `000${i}`, model, imageKeys: keys.map((k) => prefix + k), datasetPrefix: prefix },
        { store, models, backbones, weightsSha256: manifest.backbone.weights.sha256, log, batchSize: 1 },
      );
      assert.deepEqual([r.images, r.failed], [2, 0], `shard ${i}: a bottle and a capsules image together`);
    }
  } finally {
    await backbones.dispose();
  }
  const shardScores = await Promise.all([0, 1].map((i) => store.getJson(scoresKey('eval-mixed', `000${i}`), ShardScoresSchema)));
  const sizes = shardScores.flatMap((s) => s.images.map((im) => `${im.frame.resizedWidth}x${im.frame.resizedHeight}`)).sort();
  assert.deepEqual(sizes, ['256x256', '256x256', '384x256', '384x256']);
  for (const s of shardScores) assert.equal(s.pixels.images, 2);

  const calls: { key: string; range?: { start: number; end: number } }[] = [];
  const getObject = store.getObject.bind(store);
  store.getObject = (key, opts) => {
    calls.push({ key, range: opts?.range });
    return getObject(key, opts);
  };
  try {
    const r = await buildRunReport(
      { runId: 'eval-mixed', model, shards: ['0000', '0001'], datasetPrefix: prefix, category: 'mixed' },
      { store, models, log },
    );
    assert.equal(r.images, 4);
  } finally {
    store.getObject = getObject;
  }
  const mapCalls = calls.filter((c) => c.key.includes('/maps/'));
  // The gallery shows all four images: four map reads, each exactly one image's map, never a whole file.
  assert.equal(mapCalls.length, 4);
  const byKey = new Map(shardScores.flatMap((s, i) => s.images.map((im) => [`${mapsKey('eval-mixed', `000${i}`)}@${im.map.offset}`, im.map.values])));
  for (const c of mapCalls) {
    assert.ok(c.range, `${c.key} fetched whole`);
    assert.equal(c.range!.end - c.range!.start, byKey.get(`${c.key}@${c.range!.start}`)! * 4);
  }
  // A byte range is exactly that slice of the object.
  const whole = await getObject(mapsKey('eval-mixed', '0000'));
  const { offset, values } = shardScores[0].images[1].map;
  assert.ok(whole.length > values * 4);
  assert.ok((await getObject(mapsKey('eval-mixed', '0000'), { range: { start: offset, end: offset + values * 4 } })).equals(whole.subarray(offset, offset + values * 4)));
  await assert.rejects(getObject(mapsKey('eval-mixed', '0000'), { range: { start: 8, end: 8 } }), /byte range \[8, 8\) must be non-empty/);

  const metrics = JSON.parse((await getObject(reportKey('eval-mixed', 'metrics.json'))).toString());
  assert.equal(metrics.pixel_images, 4);
  // No crop: nothing outside the view.
  assert.equal(metrics.defect_pixels_outside_view, 0);
  const merged = PixelHistogram.fromJSON(shardScores[1].pixels, 'b').merge(PixelHistogram.fromJSON(shardScores[0].pixels, 'a'));
  assert.equal(metrics.pixel_auroc, Math.round(merged.auroc()! * 1e6) / 1e6);
  assert.equal(metrics.aupro, Math.round(merged.aupro()! * 1e6) / 1e6);
  assert.ok(await store.exists(reportKey('eval-mixed', 'gallery/4.png')));
});
