// test-lane: integration (real redis-server, s3rver or Chromium)
// Flows against a real redis-server: children processed, parent sees their results, ids deduplicate,
// a failing shard is retried with backoff and its reason shows in runProgress.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Queue, type FlowProducer } from 'bullmq';
import type { Redis } from 'ioredis';
import { createRedisConnection, redisConfigFromEnv } from './config.js';
import {
  collectShardResults,
  createFlowProducer,
  enqueueEvaluationFlow,
  enqueueTrainingFlow,
  jobIds,
  runProgress,
  shardIdOfJobId,
  type TrainingRunSpec,
} from './flows.js';
import { FEATURES_QUEUE, INDEX_QUEUE, REPORT_QUEUE, SCORE_QUEUE, type QueueName } from './jobs.js';
import { startRedisServer, waitFor, type RedisServer } from '../embedded/redis-server.js';
import { WorkerRuntime, type JobHandler, type WorkerRuntimeOptions } from './worker-runtime.js';

const quiet = pino({ level: 'silent' });
// The hash-tagged prefix a Redis Cluster deployment would use; it must work end to end.
const PREFIX = '{pc}';

let redis: RedisServer;
let conn: Redis;
let producer: FlowProducer;
const workers: { close(opts?: { graceMs?: number }): Promise<void> }[] = [];

function startWorker<Q extends QueueName>(queue: Q, handler: JobHandler<Q>, opts: Partial<WorkerRuntimeOptions> = {}) {
  return new WorkerRuntime(queue, handler, { connection: conn, prefix: PREFIX, logger: quiet, handleSignals: false, ...opts }).start();
}

before(async () => {
  redis = await startRedisServer();
  const cfg = redisConfigFromEnv({ REDIS_URL: redis.url, QUEUE_PREFIX: PREFIX });
  conn = createRedisConnection(cfg);
  producer = createFlowProducer(conn, cfg.prefix);
});

after(async () => {
  await Promise.all(workers.map((w) => w.close({ graceMs: 0 })));
  await producer.close();
  await conn.quit();
  await redis.stop();
});

function trainingSpec(runId: string, shards: string[]): TrainingRunSpec {
  return {
    runId,
    category: 'bottle',
    version: 'v1',
    recipe: 'paper',
    datasetPrefix: 'datasets/bottle/',
    frame: { resize: 256, crop: 224 },
    weights: { file: 'resnet50.h5', sha256: '0f'.repeat(32) },
    batchSize: 4,
    coreset: { ratio: 0.1, seed: 0, projectionDim: 128 },
    hnsw: { M: 16, efConstruction: 200, efSearch: 64 },
    shards: shards.map((shardId, i) => ({ shardId, imageKeys: Array.from({ length: i + 1 }, (_, k) => `train/good/${shardId}-${k}.png`) })),
  };
}

async function jobTotals(name: QueueName): Promise<Record<string, number>> {
  const q = new Queue(name, { connection: conn, prefix: PREFIX });
  try {
    const counts = await q.getJobCounts();
    return Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0));
  } finally {
    await q.close();
  }
}

test('job ids are deterministic, contain no ":" and give their shard back', () => {
  assert.equal(jobIds.extractFeatures('run-1', '0003'), 'run-1~features~0003');
  assert.equal(jobIds.buildIndex('run-1'), 'run-1~index');
  assert.equal(shardIdOfJobId('{pc}:patchcore-features:run-1~features~0003'), '0003');
  assert.equal(shardIdOfJobId('run.1~score~a-b'), 'a-b');
  assert.equal(shardIdOfJobId('run-1~index'), null);
});

test('training flow: submitted twice, children run once, parent sees their return values', async () => {
  const spec = trainingSpec('train-1', ['0000', '0001', '0002']);
  const first = await enqueueTrainingFlow(producer, spec);
  const second = await enqueueTrainingFlow(producer, spec);
  assert.deepEqual(first, {
    runId: 'train-1',
    parentJobId: 'train-1~index',
    childJobIds: ['train-1~features~0000', 'train-1~features~0001', 'train-1~features~0002'],
    alreadySubmitted: false,
  });
  assert.equal(second.alreadySubmitted, true);
  assert.deepEqual(await jobTotals(FEATURES_QUEUE), { waiting: 3 });
  assert.deepEqual(await jobTotals(INDEX_QUEUE), { 'waiting-children': 1 });
  const queued = await runProgress(conn, 'train-1', 'training', { prefix: PREFIX });
  assert.equal(queued.state, 'queued');
  assert.deepEqual(queued.counts, { total: 3, done: 0, active: 0, waiting: 3, delayed: 0, failed: 0, missing: 0 });

  const featureCalls: string[] = [];
  let indexCalls = 0;
  workers.push(
    await startWorker(
      FEATURES_QUEUE,
      async (p, ctx) => {
        featureCalls.push(p.shardId);
        await ctx.progress({ images: p.imageKeys.length, of: p.imageKeys.length });
        return { shardId: p.shardId, patches: p.imageKeys.length * 784 };
      },
      { concurrency: 2 },
    ),
    await startWorker(
      INDEX_QUEUE,
      async (p, ctx) => {
        indexCalls++;
        const results = await collectShardResults<{ shardId: string; patches: number }>(ctx.job, p.shards);
        let patches = 0;
        for (const [shard, r] of results) {
          assert.equal(r.shardId, shard);
          patches += r.patches;
        }
        return { category: p.category, patches, shards: [...results.keys()].sort() };
      },
    ),
  );

  const done = await waitFor('training run to complete', async () => {
    const p = await runProgress(conn, 'train-1', 'training', { prefix: PREFIX });
    return p.state === 'completed' ? p : null;
  });
  assert.deepEqual(done.counts, { total: 3, done: 3, active: 0, waiting: 0, delayed: 0, failed: 0, missing: 0 });
  assert.deepEqual(done.failures, []);
  assert.deepEqual(done.shards.map((s) => [s.shardId, s.state, s.progress]), [
    ['0000', 'completed', { images: 1, of: 1 }],
    ['0001', 'completed', { images: 2, of: 2 }],
    ['0002', 'completed', { images: 3, of: 3 }],
  ]);
  const index = new Queue(INDEX_QUEUE, { connection: conn, prefix: PREFIX });
  const parent = await index.getJob('train-1~index');
  await index.close();
  assert.deepEqual(parent?.returnvalue, { category: 'bottle', patches: 6 * 784, shards: ['0000', '0001', '0002'] });
  assert.deepEqual(featureCalls.sort(), ['0000', '0001', '0002']);
  assert.equal(indexCalls, 1);

  // A third submission after completion adds nothing and runs nothing.
  const third = await enqueueTrainingFlow(producer, spec);
  assert.equal(third.alreadySubmitted, true);
  assert.deepEqual(await jobTotals(FEATURES_QUEUE), { completed: 3 });
  assert.deepEqual(await jobTotals(INDEX_QUEUE), { completed: 1 });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(featureCalls.length, 3);
  assert.equal(indexCalls, 1);
});

test('evaluation flow: a failing shard is retried with backoff, then fails the run with its reason', async () => {
  const attemptsAt: number[] = [];
  let reportCalls = 0;
  const score = await startWorker(
    SCORE_QUEUE,
    async (p) => {
      if (p.shardId === '0001') {
        attemptsAt.push(Date.now());
        throw new Error(`cannot decode ${p.imageKeys[0]}: truncated PNG`);
      }
      return { scored: p.imageKeys.length };
    },
  );
  workers.push(
    score,
    await startWorker(
      REPORT_QUEUE,
      async () => {
        reportCalls++;
        return null;
      },
    ),
  );
  const submitted = await enqueueEvaluationFlow(producer, {
    runId: 'eval-1',
    category: 'bottle',
    model: { category: 'bottle', version: 'v1' },
    datasetPrefix: 'datasets/bottle/',
    shards: [
      { shardId: '0000', imageKeys: ['test/good/000.png'] },
      { shardId: '0001', imageKeys: ['test/broken_large/000.png'] },
    ],
    jobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 60 } },
  });
  assert.equal(submitted.parentJobId, 'eval-1~report');

  const failed = await waitFor('evaluation run to fail', async () => {
    const p = await runProgress(conn, 'eval-1', 'evaluation', { prefix: PREFIX });
    return p.state === 'failed' && p.parent?.state === 'failed' ? p : null;
  });
  assert.deepEqual(failed.counts, { total: 2, done: 1, active: 0, waiting: 0, delayed: 0, failed: 1, missing: 0 });
  assert.equal(failed.failures.length, 2);
  assert.deepEqual(failed.failures[0], {
    jobId: 'eval-1~score~0001',
    shardId: '0001',
    reason: 'cannot decode test/broken_large/000.png: truncated PNG',
    attemptsMade: 3,
  });
  assert.equal(failed.failures[1].jobId, 'eval-1~report');
  assert.match(failed.failures[1].reason, /eval-1~score~0001/);
  assert.equal(reportCalls, 0);
  // Exponential backoff: 60 ms, then 120 ms.
  assert.equal(attemptsAt.length, 3);
  assert.ok(attemptsAt[1] - attemptsAt[0] >= 60, `first retry after ${attemptsAt[1] - attemptsAt[0]} ms`);
  assert.ok(attemptsAt[2] - attemptsAt[1] >= 120, `second retry after ${attemptsAt[2] - attemptsAt[1]} ms`);
  const counts = await score.metrics.snapshot();
  assert.equal(counts.failed, 3);
  assert.equal(counts.processed, 1);
});

test('bad input is refused before anything is enqueued; an unknown run is "missing"', async () => {
  await assert.rejects(enqueueTrainingFlow(producer, trainingSpec('train:2', ['0'])), {
    message: 'training run: run id "train:2" must be 1 to 128 characters of A-Z a-z 0-9 . _ -',
  });
  await assert.rejects(enqueueTrainingFlow(producer, trainingSpec('train-2', ['0', '..'])), {
    message: 'training run train-2: shard id ".." must not start with "." or contain ".."',
  });
  const spec = trainingSpec('train-3', ['0', '1']);
  spec.shards[1].imageKeys = [];
  await assert.rejects(enqueueTrainingFlow(producer, spec), {
    message: 'invalid extract-features payload in job train-3~features~1: imageKeys: Too small: expected array to have >=1 items',
  });
  await assert.rejects(enqueueTrainingFlow(producer, { ...trainingSpec('train-4', ['0', '0']) }), {
    message: 'invalid build-index payload in job train-4~index: shards[1]: duplicate shard id "0"',
  });
  for (const run of ['train-2', 'train-3', 'train-4']) {
    const p = await runProgress(conn, run, 'training', { prefix: PREFIX });
    assert.equal(p.state, 'missing');
    assert.equal(p.parent, null);
  }
  await assert.rejects(runProgress(conn, 'a b', 'evaluation'), { message: 'evaluation run: run id "a b" must be 1 to 128 characters of A-Z a-z 0-9 . _ -' });
  // The shared connection outlives the Queue objects runProgress opened and closed.
  assert.equal(await conn.ping(), 'PONG');
});
