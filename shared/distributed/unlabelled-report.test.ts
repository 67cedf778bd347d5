// test-lane: integration (real redis-server, s3rver or Chromium)
// The unlabelled report job against a real S3-compatible server (s3rver), over score shards written as score-shard
// writes them (scores JSON and a maps tensor file; the numbers are made up, the model and the top images' pictures
// are real): rows for failed images, the failed-image limit, top N, a retried job rewriting the same results.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { pino } from 'pino';
import { PermanentError } from '../errors.js';
import { defaultDatasetDir } from '../paths.js';
import type { ReportPayload, UnlabelledReport } from '../queue/jobs.js';
import { PixelHistogram } from '../metrics/score-histogram.js';
import { mapsKey, reportKey, scoresKey } from '../storage/keys.js';
import type { ObjectStore } from '../storage/object-store.js';
import { encodeTensorFile } from '../storage/tensor-file.js';
import { makeBankDir, makeManifest } from '../../test/ops/fixtures.js';
import { useS3Store } from '../../test/helpers/s3-store.js';
import { ModelCache, uploadModel } from './model-store.js';
import { buildUnlabelledReport, heatmapKey, unlabelledThreshold } from './unlabelled-report.js';

const log = pino({ level: 'silent' });
const SIDE = 16;
// Whole-image maps at the resized resolution, as score shards write them.
const FRAME = { sourceWidth: 900, sourceHeight: 900, resizedWidth: SIDE, resizedHeight: SIDE, cropLeft: 0, cropTop: 0, width: SIDE, height: SIDE };
const PREFIX = 'datasets/shots/';
let store: ObjectStore;
let models: ModelCache;

useS3Store('patchcore-unlabelled-report', async (_server, objects) => {
  store = objects;
  models = new ModelCache(store, mkdtempSync(join(tmpdir(), 'patchcore-models-')));
  const manifest = { ...makeManifest('shots'), validation: { images: ['v0.png', 'v1.png', 'v2.png'], scores: [1, 2, 3] } };
  await uploadModel(store, 'shots', 'v1', await makeBankDir(3), manifest);
});

/** Score shards of `run`: shard k holds the images `ids[k]` with score = the number in the name; `failed` per shard. */
async function writeShards(run: string, shards: { ids: string[]; failed?: string[] }[]): Promise<string[]> {
  const picture = readFileSync(join(defaultDatasetDir('bottle'), 'test/good/000.png'));
  const names: string[] = [];
  for (const [k, shard] of shards.entries()) {
    const shardId = String(k).padStart(4, '0');
    const images = shard.ids.map((id) => ({ id, key: PREFIX + id, score: Number(/(\d+(\.\d+)?)/.exec(id)![1]), frame: FRAME }));
    // Each map's values rise from 0 to the image's score, so the image score is the map's maximum.
    const data = new Float32Array(images.length * SIDE * SIDE);
    images.forEach((im, i) => { for (let p = 0; p < SIDE * SIDE; p++) data[i * SIDE * SIDE + p] = (im.score * p) / (SIDE * SIDE - 1); });
    // One float per row and each image's size in its entry, as score shards write maps of any size.
    const n = SIDE * SIDE;
    const file = encodeTensorFile(
      { dtype: 'float32', dim: 1, count: data.length, grid: [1, 1], images: images.map((im, i) => ({ key: im.key, offset: i * n, patches: n, width: SIDE, height: SIDE })) }, data);
    const dataStart = file.length - data.byteLength;
    await store.putObject(mapsKey(run, shardId), file);
    await store.putJson(scoresKey(run, shardId), {
      runId: run, shardId, model: { category: 'shots', version: 'v1' },
      images: images.map((im, i) => ({ ...im, map: { offset: dataStart + i * n * 4, values: n } })),
      failed: (shard.failed ?? []).map((id) => ({ id, error: 'not an image (unknown format)' })),
      pixels: new PixelHistogram().toJSON(),
    });
    for (const im of images) await store.putObject(im.key, picture);
    names.push(shardId);
  }
  return names;
}

function payload(run: string, shards: string[], extra: Partial<UnlabelledReport> = {}, maxFailedShare?: number): ReportPayload & { unlabelled: UnlabelledReport } {
  return {
    runId: run, model: { category: 'shots', version: 'v1' }, shards, datasetPrefix: PREFIX, category: 'shots', maxFailedShare,
    unlabelled: { kind: 'unlabelled', imagesPrefix: PREFIX, ...extra },
  };
}

test('rows for every image, failed ones included; top N over all shards; a retried job writes the same results', { timeout: 120_000 }, async () => {
  const shards = await writeShards('run-a', [
    { ids: ['a/s-0.5.png', 'a/s-4.png', 'a/s-2.5.png'], failed: ['a/broken.png'] },
    { ids: ['b/s-3.5.png', 'b/s-1.png'] },
    { ids: ['s-9.png', 's-0.25.png', 's-3.png'] },
  ]);
  const first = await buildUnlabelledReport(payload('run-a', shards, { top: 3, targetFpr: 0.34 }, 0.2), { store, models, log });
  assert.equal(first.images, 8);
  assert.equal(first.failed, 1);
  // 3 held-out scores 1, 2, 3: at most 34% of them flagged means the threshold is 3 (one of three is >= 3).
  assert.equal(first.threshold, 3);
  assert.equal(first.anomalous, 4);
  const csv = (await store.getObject(reportKey('run-a', 'results.csv'))).toString();
  const lines = csv.trim().split('\n');
  assert.equal(lines[0], 'image,score,anomalous,map');
  assert.equal(lines.length, 1 + 9);
  assert.ok(lines.includes('a/broken.png,,,'), csv);
  assert.ok(lines.includes(`b/s-3.5.png,3.50000000,1,${heatmapKey('run-a', 'b/s-3.5.png')}`), csv);
  assert.ok(lines.includes(`s-3.png,3.00000000,1,${heatmapKey('run-a', 's-3.png')}`), 'score == threshold is anomalous');
  assert.ok(lines.includes(`b/s-1.png,1.00000000,0,${heatmapKey('run-a', 'b/s-1.png')}`), csv);
  const jsonl = (await store.getObject(reportKey('run-a', 'results.jsonl'))).toString().trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(jsonl.find((r) => r.image === 'a/broken.png'), { image: 'a/broken.png', key: `${PREFIX}a/broken.png`, score: null, anomalous: null, map: null, error: 'not an image (unknown format)' });
  const summary = JSON.parse((await store.getObject(reportKey('run-a', 'summary.json'))).toString());
  assert.deepEqual(summary.top.map((t: { image: string }) => t.image), ['s-9.png', 'a/s-4.png', 'b/s-3.5.png']);
  assert.deepEqual(summary.heatmap_range, [0, 9]);
  assert.deepEqual(summary.failed_images, [{ id: 'a/broken.png', error: 'not an image (unknown format)' }]);
  assert.equal(summary.histogram.length, 40);
  assert.equal(summary.histogram[0].start, 0.25);
  assert.equal(summary.histogram.at(-1).end, 9);
  assert.equal(summary.histogram.reduce((s: number, b: { count: number }) => s + b.count, 0), 8);
  for (const id of ['a/s-0.5.png', 's-9.png']) assert.ok(await store.exists(heatmapKey('run-a', id)), id);
  assert.ok(await store.exists(reportKey('run-a', 'gallery/0003.png')));
  assert.equal(await store.exists(reportKey('run-a', 'gallery/0004.png')), false, 'only the top 3');
  // A retry (the job after a crash) rewrites the same rows.
  await buildUnlabelledReport(payload('run-a', shards, { top: 3, targetFpr: 0.34 }, 0.2), { store, models, log });
  assert.equal((await store.getObject(reportKey('run-a', 'results.csv'))).toString(), csv);
});

test('more unreadable images than allowed fail the report for good, naming the run; nothing scored is an error too', { timeout: 60_000 }, async () => {
  const shards = await writeShards('run-b', [{ ids: ['s-1.png'], failed: ['x.png', 'y.png'] }]);
  await assert.rejects(buildUnlabelledReport(payload('run-b', shards), { store, models, log }),
    (err: Error) => err instanceof PermanentError && /^scoring run run-b: 2 of 3 images \(66\.7%\) could not be read/.test(err.message));
  assert.equal(await store.exists(reportKey('run-b', 'index.html')), false);
  const none = await writeShards('run-c', [{ ids: [], failed: ['z.png'] }]);
  await assert.rejects(buildUnlabelledReport(payload('run-c', none), { store, models, log }), { message: /^scoring run run-c: no image was scored \(1 failed, e\.g\. z\.png: not an image/ });
});

test('unlabelledThreshold: the target FPR on the held-out good scores, or none with the reason', () => {
  assert.deepEqual(unlabelledThreshold([1, 2, 3, 4], 0.25, 'model m/v'), { choice: { threshold: 4, rule: 'target-fpr', targetFpr: 0.25 }, note: null });
  const none = unlabelledThreshold(undefined, 0.01, 'model m/v');
  assert.equal(none.choice, null);
  assert.match(none.note!, /^model m\/v has no held-out good images to set a threshold \(fit it with --validation-split\)/);
});
