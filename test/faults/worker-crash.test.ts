// Dying workers, duplicate deliveries and poison jobs, against one private deployment (redis-server, s3rver behind
// a fault proxy, two feature workers, an index worker and a scorer as real processes) on real bottle images.
// A run with faults must give byte for byte what the same run without faults gave; a job that can never succeed
// must end failed, with its reason, where `patchcore status` shows it.
import { after, before, test } from 'node:test';
import type { JobsOptions } from 'bullmq';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadStoredModel } from '../../shared/distributed/model-store.js';
import { enqueueTrainingFlow, jobIds } from '../../shared/queue/flows.js';
import { FEATURES_QUEUE, REPORT_QUEUE, SCORE_QUEUE } from '../../shared/queue/jobs.js';
import { embeddingsKey, modelKey, modelLatestKey, reportKey, scoresKey } from '../../shared/storage/keys.js';
import { ingestDataset, submitEvaluation, submitTraining } from '../../services/producer/submit.js';
import { makeBottleSubset } from '../helpers/subset.js';
import { Cluster, runCli, silentLog, until, withTimeout, type WorkerProcess } from './harness.js';

const TRAIN = 8;
const TEST = { good: 2, broken_large: 2, contamination: 1 };
const TEST_IMAGES = 5;
const data = makeBottleSubset({ train: TRAIN, test: TEST });
let c: Cluster;

before(async () => {
  // BATCH_SIZE 1: scorers report progress per image, so a test can catch one part-way through a shard.
  c = await Cluster.start({ workers: ['features', 'features', 'index', 'score'], env: { BATCH_SIZE: '1' } });
  await ingestDataset(c.store, data, 'mini');
});

after(async () => {
  await c?.stop();
});

const producer = () => ({ store: c.store, flows: c.flows, log: silentLog });
const train = (runId: string, version: string) =>
  submitTraining(producer(), {
    dataset: 'mini', category: 'bottle', runId, version, shardSize: 4, batchSize: 1, coresetRatio: 0.1, weights: c.weights,
  });
const evaluate = (runId: string, version: string, jobOptions?: JobsOptions) =>
  submitEvaluation(producer(), { dataset: 'mini', category: 'bottle', version, runId, shardSize: 3, jobOptions });

async function completed(runId: string, kind: 'training' | 'evaluation') {
  const p = await c.waitRun(runId, kind, 150_000);
  assert.equal(p.state, 'completed', `${runId}: ${JSON.stringify(p.failures)}\n${c.logTail()}`);
  return p;
}

const startsOf = (jobId: string) => c.workers.reduce((n, w) => n + w.events.filter((e) => e.msg === 'job started' && e.jobId === jobId).length, 0);
const bankOf = (version: string) => c.store.getObject(modelKey('bottle', version, 'bank.f32'));
const csvOf = async (runId: string) => (await c.store.getObject(reportKey(runId, 'scores.csv'))).toString();
const metricsOf = async (runId: string) => JSON.parse((await c.store.getObject(reportKey(runId, 'metrics.json'))).toString());

/** Rows of scores.csv: one per test image of the dataset, none twice. */
function assertEachImageOnce(csv: string) {
  const rows = csv.trim().split('\n').slice(1).map((l) => l.split(',')[0]);
  assert.equal(rows.length, TEST_IMAGES, csv);
  assert.equal(new Set(rows).size, TEST_IMAGES, csv);
}

let baseBank: Buffer;
let baseCsv: string;

test('baseline: a run without faults', { timeout: 120_000 }, async () => {
  await train('train-base', 'v-base');
  await completed('train-base', 'training');
  await evaluate('eval-base', 'v-base');
  await completed('eval-base', 'evaluation');
  baseBank = await bankOf('v-base');
  baseCsv = await csvOf('eval-base');
  assertEachImageOnce(baseCsv);
  assert.equal((await metricsOf('eval-base')).images, TEST_IMAGES);
});

test('a feature worker and then the index worker SIGKILLed mid-job: jobs recovered, the same model', { timeout: 180_000 }, async () => {
  assert.ok(baseBank, 'needs the baseline');
  const slowImages = c.proxy.addRule({ match: (r) => r.method === 'GET' && r.key.startsWith('datasets/mini/train/'), delayMs: 300 });
  let indexUploading!: () => void;
  const uploading = new Promise<void>((r) => (indexUploading = r));
  // Hold the second model file long enough to kill the index worker between its bank.f32 and its manifest.
  c.proxy.addRule({
    match: (r) => r.method === 'PUT' && r.key === modelKey('bottle', 'v-crash', 'bank.json'),
    delayMs: 4000, times: 1, onMatch: () => indexUploading(),
  });
  await train('train-crash', 'v-crash');

  const shardJob = jobIds.extractFeatures('train-crash', '0000');
  await c.midShard('train-crash', 'training', '0000');
  const featureWorker = await c.workerRunning(shardJob);
  await featureWorker.kill('SIGKILL');
  slowImages();
  await c.spawn('features'); // the replacement pod; it or the surviving worker recovers the stalled job

  await withTimeout('the index worker to upload the model', uploading, 120_000);
  const indexWorker: WorkerProcess = await c.workerRunning(jobIds.buildIndex('train-crash'));
  await indexWorker.kill('SIGKILL');
  // What a reader sees now: bank.f32 written, no manifest, `latest` not moved: the version does not exist yet.
  assert.ok(await c.store.exists(modelKey('bottle', 'v-crash', 'bank.f32')));
  assert.equal(await c.store.exists(modelKey('bottle', 'v-crash', 'manifest.json')), false);
  assert.equal(JSON.parse((await c.store.getObject(modelLatestKey('bottle'))).toString()).version, 'v-base');
  await assert.rejects(loadStoredModel(c.store, 'bottle', 'v-crash', mkdtempSync(join(tmpdir(), 'patchcore-reader-'))),
    /model bottle\/v-crash does not exist or is incomplete \(no models\/bottle\/v-crash\/manifest.json\)/);
  await c.spawn('index');

  const p = await completed('train-crash', 'training');
  assert.ok(startsOf(shardJob) >= 2, 'the killed shard was started again');
  assert.ok(startsOf(jobIds.buildIndex('train-crash')) >= 2, 'the killed build-index was started again');
  assert.deepEqual(p.failures, []);
  const manifest = JSON.parse((await c.store.getObject(modelKey('bottle', 'v-crash', 'manifest.json'))).toString());
  assert.equal(manifest.training.images, TRAIN);
  assert.deepEqual(manifest.training.skipped, []);
  assert.equal(manifest.coreset.trainPatches, TRAIN * 32 * 32); // the default whole-image frame: 900x900 -> 256x256, 32x32 patches
  assert.ok((await bankOf('v-crash')).equals(baseBank), 'bank.f32 differs from the run without faults');
});

test('a scorer SIGKILLed mid-shard: the shard is recovered, scores identical', { timeout: 150_000 }, async () => {
  assert.ok(baseCsv, 'needs the baseline');
  const slow = c.proxy.addRule({ match: (r) => r.method === 'GET' && r.key.startsWith('datasets/mini/test/'), delayMs: 300 });
  await evaluate('eval-crash', 'v-base');
  const shardJob = jobIds.scoreShard('eval-crash', '0000');
  await c.midShard('eval-crash', 'evaluation', '0000');
  await (await c.workerRunning(shardJob)).kill('SIGKILL');
  slow();
  await c.spawn('score');
  await completed('eval-crash', 'evaluation');
  assert.ok(startsOf(shardJob) >= 2);
  assert.equal(await csvOf('eval-crash'), baseCsv);
  assert.equal((await metricsOf('eval-crash')).images, TEST_IMAGES);
});

test('a test image unreadable for longer than the S3 client retries: the shard is retried, not scored without it', { timeout: 90_000 }, async () => {
  assert.ok(baseCsv, 'needs the baseline');
  // Five resets use up one getObject's attempts (S3_MAX_ATTEMPTS 5); the job's next attempt reads it.
  c.proxy.addRule({ match: (r) => r.method === 'GET' && r.key === 'datasets/mini/test/broken_large/000.png', reset: true, times: 5 });
  await evaluate('eval-unreadable', 'v-base', { backoff: { type: 'fixed', delay: 500 } });
  await completed('eval-unreadable', 'evaluation');
  assert.equal(await csvOf('eval-unreadable'), baseCsv);
  assert.deepEqual((await metricsOf('eval-unreadable')).failed_images, []);
  assert.ok(c.workers.some((w) => w.events.some((e) => e.msg === 'job failed' && e.willRetry === true &&
    /^image "datasets\/mini\/test\/broken_large\/000\.png" could not be read from the bucket/.test(String((e.err as { message?: string })?.message)))));
});

async function runRawJob(queueName: typeof FEATURES_QUEUE | typeof SCORE_QUEUE | typeof REPORT_QUEUE, name: string, data: unknown, jobId: string) {
  const q = c.queue(queueName);
  try {
    await q.add(name, data, { jobId, attempts: 1 });
    const state = await until(`${jobId} to finish`, async () => {
      const s = await q.getJobState(jobId);
      return s === 'completed' || s === 'failed' ? s : null;
    }, 60_000);
    const job = await q.getJob(jobId);
    assert.equal(state, 'completed', `${jobId}: ${job?.failedReason}`);
  } finally {
    await q.close();
  }
}

test('a run submitted twice, and shard jobs delivered twice: outputs are idempotent, no image counted twice', { timeout: 120_000 }, async () => {
  assert.ok(baseCsv, 'needs the baseline');
  // The same training run again: nothing is added, nothing runs again.
  const manifestBefore = await c.store.getObject(modelKey('bottle', 'v-base', 'manifest.json'));
  const again = await train('train-base', 'v-base');
  assert.equal(again.alreadySubmitted, true);
  // Two producers submitting one evaluation run at once: one flow, each shard scored once.
  await Promise.all([evaluate('eval-twice', 'v-base'), evaluate('eval-twice', 'v-base')]);
  await completed('eval-twice', 'evaluation');
  assert.equal(await csvOf('eval-twice'), baseCsv);
  for (const shard of ['0000', '0001']) assert.equal(startsOf(jobIds.scoreShard('eval-twice', shard)), 1, shard);
  assert.equal(startsOf(jobIds.buildIndex('train-base')), 1);
  assert.ok((await c.store.getObject(modelKey('bottle', 'v-base', 'manifest.json'))).equals(manifestBefore));

  // A shard delivered a second time (a zombie worker finishing late looks the same): same objects, same report.
  const features = c.queue(FEATURES_QUEUE);
  const score = c.queue(SCORE_QUEUE);
  const report = c.queue(REPORT_QUEUE);
  const featureData = (await features.getJob(jobIds.extractFeatures('train-base', '0000')))!.data;
  const scoreData = (await score.getJob(jobIds.scoreShard('eval-base', '0000')))!.data;
  const reportData = (await report.getJob(jobIds.report('eval-base')))!.data;
  await Promise.all([features.close(), score.close(), report.close()]);
  const embeddingsBefore = await c.store.getObject(embeddingsKey('train-base', '0000'));
  const scoresBefore = await c.store.getObject(scoresKey('eval-base', '0000'));
  await runRawJob(FEATURES_QUEUE, 'extract-features', featureData, 'dup-features');
  await runRawJob(SCORE_QUEUE, 'score-shard', scoreData, 'dup-score');
  await runRawJob(REPORT_QUEUE, 'report', reportData, 'dup-report');
  assert.ok((await c.store.getObject(embeddingsKey('train-base', '0000'))).equals(embeddingsBefore));
  assert.ok((await c.store.getObject(scoresKey('eval-base', '0000'))).equals(scoresBefore));
  const csv = await csvOf('eval-base');
  assertEachImageOnce(csv);
  assert.equal(csv, baseCsv);
  assert.equal((await metricsOf('eval-base')).images, TEST_IMAGES);
});

test('poison jobs (images gone from the bucket, another weights file) fail every attempt; status reports why', { timeout: 90_000 }, async () => {
  const common = {
    category: 'bottle', recipe: 'paper' as const, datasetPrefix: 'datasets/mini/', frame: { resize: 256, crop: 224 },
    batchSize: 1, coreset: { ratio: 0.1, seed: 0, projectionDim: 128 }, hnsw: { M: 16, efConstruction: 200, efSearch: 64 },
    jobOptions: { attempts: 2, backoff: { type: 'fixed', delay: 200 } },
  };
  await enqueueTrainingFlow(c.flows, {
    ...common, runId: 'poison-missing', version: 'v-missing', weights: { file: 'w.h5', sha256: c.weights.sha256 },
    shards: [{ shardId: '0000', imageKeys: ['datasets/mini/train/good/gone-0.png', 'datasets/mini/train/good/gone-1.png'] }],
  });
  await enqueueTrainingFlow(c.flows, {
    ...common, runId: 'poison-weights', version: 'v-weights', weights: { file: 'other.h5', sha256: 'f'.repeat(64) },
    shards: [{ shardId: '0000', imageKeys: ['datasets/mini/train/good/000.png'] }],
  });
  const missing = await c.waitRun('poison-missing', 'training', 60_000);
  const weights = await c.waitRun('poison-weights', 'training', 60_000);
  for (const p of [missing, weights]) {
    assert.equal(p.state, 'failed');
    assert.equal(p.counts.failed, 1);
  }
  // A missing object may come back (retried, then given up); other weights never will (failed at once).
  assert.equal(missing.failures.find((x) => x.shardId === '0000')!.attemptsMade, 2, 'retried, then given up');
  assert.equal(weights.failures.find((x) => x.shardId === '0000')!.attemptsMade, 1, 'a permanent error is not retried');
  assert.match(missing.failures[0].reason,
    /^image "datasets\/mini\/train\/good\/gone-0.png" could not be read from the bucket: object "datasets\/mini\/train\/good\/gone-0.png" not found in bucket "patchcore-faults"/);
  assert.match(weights.failures[0].reason, /^this worker's weights \(sha256 570e1bfca26e\.\.\.\) are not the run's \(ffffffffffff\.\.\.\)/);
  assert.equal(await c.store.exists(modelKey('bottle', 'v-missing', 'manifest.json')), false);

  const status = await runCli(['status', 'poison-missing'], { ...c.env, LOG_LEVEL: 'warn' });
  assert.equal(status.code, 0, status.stderr);
  const shown = JSON.parse(status.stdout);
  assert.equal(shown.state, 'failed');
  assert.match(shown.failures[0].reason, /gone-0.png" could not be read from the bucket/);
  const watched = await runCli(['status', 'poison-weights', '--watch'], { ...c.env, LOG_LEVEL: 'warn' });
  assert.equal(watched.code, 1);
  assert.match(watched.stderr, /patchcore status: training run poison-weights failed:\n {2}poison-weights~features~0000: this worker's weights/);
});
