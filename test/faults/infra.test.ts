// Infrastructure faults during a training run, against one private deployment (redis-server with an append-only
// file, s3rver behind a fault proxy, two feature workers and an index worker as real processes): Redis crashing and
// coming back, the S3 server away for a while, an upload cut off half-way, and objects truncated in the bucket.
// Every run must end with the model a run without faults gives, or a reader must refuse what it was given.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ShardFeaturesResult } from '../../shared/distributed/shard-features.js';
import { mergeShardsIntoModel } from '../../shared/distributed/merge-index.js';
import { loadStoredModel } from '../../shared/distributed/model-store.js';
import { jobIds } from '../../shared/queue/flows.js';
import { INDEX_QUEUE, type BuildIndexPayload } from '../../shared/queue/jobs.js';
import { embeddingsKey, modelKey } from '../../shared/storage/keys.js';
import { decodeTensorFile } from '../../shared/storage/tensor-file.js';
import { ingestDataset, submitTraining } from '../../services/producer/submit.js';
import { makeBottleSubset } from '../helpers/subset.js';
import { Cluster, silentLog, withTimeout } from './harness.js';

const TRAIN = 8;
const data = makeBottleSubset({ train: TRAIN, test: {} });
let c: Cluster;

before(async () => {
  // fsync on every write: even a SIGKILL of redis-server loses no acknowledged queue state.
  c = await Cluster.start({ workers: ['features', 'features', 'index'], redis: { appendOnly: true, appendFsync: 'always' } });
  await ingestDataset(c.store, data, 'mini');
});

after(async () => {
  await c?.stop();
});

// Job retries a little faster than production's 10 s / 20 s, so an outage that outlasts the S3 client's own
// retries is retried by the queue within the test's time.
const train = (runId: string, shardSize = 4) =>
  submitTraining({ store: c.store, flows: c.flows, log: silentLog }, {
    dataset: 'mini', category: 'bottle', runId, version: runId.replace(/^train-/, 'v-'), shardSize, batchSize: 1,
    coresetRatio: 0.1, weights: c.weights, jobOptions: { attempts: 4, backoff: { type: 'exponential', delay: 1000 } },
  });
const slowTrainImages = () => c.proxy.addRule({ match: (r) => r.method === 'GET' && r.key.startsWith('datasets/mini/train/'), delayMs: 300 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function assertSameModel(runId: string) {
  const p = await c.waitRun(runId, 'training', 150_000);
  assert.equal(p.state, 'completed', `${runId}: ${JSON.stringify(p.failures)}\n${c.logTail()}`);
  const version = runId.replace(/^train-/, 'v-');
  const manifest = JSON.parse((await c.store.getObject(modelKey('bottle', version, 'manifest.json'))).toString());
  assert.equal(manifest.training.images, TRAIN, 'an image was lost');
  assert.deepEqual(manifest.training.skipped, []);
  assert.equal(manifest.coreset.trainPatches, TRAIN * 32 * 32); // the default whole-image frame: 900x900 -> 256x256, 32x32 patches
  assert.ok((await c.store.getObject(modelKey('bottle', version, 'bank.f32'))).equals(baseBank), `${runId}: bank.f32 differs from the run without faults`);
  return p;
}

let baseBank: Buffer;

test('baseline: the run without faults', { timeout: 90_000 }, async () => {
  await train('train-base');
  const p = await c.waitRun('train-base', 'training', 80_000);
  assert.equal(p.state, 'completed', JSON.stringify(p.failures));
  baseBank = await c.store.getObject(modelKey('bottle', 'v-base', 'bank.f32'));
});

test('Redis killed mid-shard and restarted on the same port and AOF: workers reconnect, the run completes', { timeout: 180_000 }, async () => {
  assert.ok(baseBank, 'needs the baseline');
  const slow = slowTrainImages();
  await train('train-redis');
  await c.midShard('train-redis', 'training', '0000');
  await c.redis.restart({ crash: true, downMs: 1500 });
  slow();
  await assertSameModel('train-redis');
  for (const w of c.liveWorkers()) {
    assert.ok(w.events.some((e) => e.msg === 'redis connection error'), `${w.name} did not notice the outage`);
    assert.ok(w.events.some((e) => e.msg === 'redis connection restored'), `${w.name} did not reconnect`);
  }
});

const retriedBecause = (re: RegExp) =>
  c.workers.some((w) => w.events.some((e) => e.msg === 'job failed' && e.willRetry === true && re.test(String((e.err as { message?: string })?.message))));

test('an image unreadable for longer than the S3 client retries: the attempt fails and is retried, not the image skipped', { timeout: 120_000 }, async () => {
  assert.ok(baseBank, 'needs the baseline');
  // Five resets use up one getObject's attempts (S3_MAX_ATTEMPTS 5); the job's next attempt reads it.
  const key = 'datasets/mini/train/good/002.png';
  c.proxy.addRule({ match: (r) => r.method === 'GET' && r.key === key, reset: true, times: 5 });
  await train('train-unreadable');
  await assertSameModel('train-unreadable');
  assert.ok(retriedBecause(/^image "datasets\/mini\/train\/good\/002\.png" could not be read from the bucket: S3 getObject/),
    `no attempt failed on the unreadable image\n${c.logTail()}`);
});

test('the S3 server stopped for 6 s mid-shard and restarted on the same port and directory: the same model', { timeout: 180_000 }, async () => {
  assert.ok(baseBank, 'needs the baseline');
  const slow = slowTrainImages();
  await train('train-s3');
  await c.midShard('train-s3', 'training', '0000');
  const droppedBefore = c.proxy.dropped.length;
  await c.s3.kill();
  await sleep(6000);
  await c.s3.restart();
  slow();
  await assertSameModel('train-s3');
  assert.ok(c.proxy.dropped.length > droppedBefore, 'no request met the outage');
});

test('an upload cut off half-way is retried, and the partial object is never read as complete', { timeout: 120_000 }, async () => {
  assert.ok(baseBank, 'needs the baseline');
  const key = embeddingsKey('train-cut', '0000');
  let cut!: () => void;
  const wasCut = new Promise<void>((r) => (cut = r));
  // Newest rule first: the first PUT is cut after 1 MB, the retry is then held 1.5 s while we look.
  c.proxy.addRule({ match: (r) => r.method === 'PUT' && r.key === key, delayMs: 1500, times: 1 });
  c.proxy.addRule({ match: (r) => r.method === 'PUT' && r.key === key, cutAfterBytes: 1 << 20, times: 1, onMatch: () => cut() });
  await train('train-cut', 2); // 2 images a shard: 6.4 MB, one PutObject
  await withTimeout('the embeddings upload', wasCut, 60_000);
  await sleep(600);
  const seen = await c.store.getObject(key).then(
    (buf) => {
      try {
        decodeTensorFile(buf, key);
        return 'complete';
      } catch (err) {
        return (err as Error).message;
      }
    },
    (err: Error) => err.message,
  );
  assert.notEqual(seen, 'complete', 'a cut-off upload was readable as a complete embeddings file');
  await assertSameModel('train-cut');
  const file = decodeTensorFile(await c.store.getObject(key), key);
  assert.equal(file.header.images.length, 2);
});

test('objects truncated in the bucket are refused by their readers, naming the object', { timeout: 60_000 }, async () => {
  assert.ok(baseBank, 'needs the baseline');
  // Embeddings: the index job's tensor-file checks.
  const key = embeddingsKey('train-base', '0001');
  const whole = await c.store.getObject(key);
  await c.store.putObject(key, whole.subarray(0, whole.length - 4096));
  const index = c.queue(INDEX_QUEUE);
  const job = (await index.getJob(jobIds.buildIndex('train-base')))!;
  await index.close();
  const payload = { ...(job.data as BuildIndexPayload), version: 'v-never' };
  await assert.rejects(mergeShardsIntoModel(payload, new Map<string, ShardFeaturesResult>(), { store: c.store, log: silentLog }),
    /embeddings file "runs\/train-base\/embeddings\/0001\.bin" is truncated: expected \d+ data bytes, found \d+/);
  assert.equal(await c.store.exists(modelKey('bottle', 'v-never', 'manifest.json')), false);
  await c.store.putObject(key, whole);

  // A model whose bank.f32 lost its tail: bank.json's sizes and checksum refuse it.
  for (const f of ['bank.usearch', 'bank.hnsw', 'bank.json', 'manifest.json'] as const) {
    // The index file exists only for banks large enough to be searched through one.
    if (!(await c.store.exists(modelKey('bottle', 'v-base', f)))) continue;
    await c.store.putObject(modelKey('bottle', 'v-trunc', f), await c.store.getObject(modelKey('bottle', 'v-base', f)));
  }
  await c.store.putObject(modelKey('bottle', 'v-trunc', 'bank.f32'), baseBank.subarray(0, baseBank.length - 1024));
  await assert.rejects(loadStoredModel(c.store, 'bottle', 'v-trunc', mkdtempSync(join(tmpdir(), 'patchcore-reader-'))),
    /bank\.f32 has \d+ bytes, expected count x dim x 4 = \d+ x 1024 x 4 = \d+/);
});
