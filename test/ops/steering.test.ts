// Steering runs against a real redis-server: `retry` puts a failed run's jobs back and the run completes;
// `cancel` takes a run's jobs out of the queues (a running one finishes alone, and nothing follows it).
// The jobs' handlers here are small stand-ins: what is under test is the queue control, not the pipeline steps.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker, type FlowProducer } from 'bullmq';
import type { Redis } from 'ioredis';
import { startRedisServer, waitFor, type RedisServer } from '../../shared/embedded/redis-server.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { cancelRun, collectShardResults, createFlowProducer, enqueueTrainingFlow, jobIds, retryRun, runProgress, type TrainingRunSpec } from '../../shared/queue/flows.js';
import { FEATURES_QUEUE, INDEX_QUEUE } from '../../shared/queue/jobs.js';

const PREFIX = 'ops';
let redis: RedisServer;
let conn: Redis;
let flows: FlowProducer;
const workers: Worker[] = [];
const connections: Redis[] = [];

before(async () => {
  redis = await startRedisServer();
  conn = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  flows = createFlowProducer(conn, PREFIX);
});
after(async () => {
  await Promise.all(workers.map((w) => w.close(true)));
  await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
  await flows.close();
  await conn.quit();
  await redis.stop();
});

const spec = (runId: string, shards: string[]): TrainingRunSpec => ({
  runId, category: 'bottle', version: `v-${runId}`, recipe: 'paper', datasetPrefix: 'datasets/bottle/', frame: { resize: 256, crop: 224 },
  weights: { file: 'w.h5', sha256: '0f'.repeat(32) }, batchSize: 1, coreset: { ratio: 0.1, seed: 0, projectionDim: 128 },
  hnsw: { M: 16, efConstruction: 64, efSearch: 32 },
  shards: shards.map((shardId) => ({ shardId, imageKeys: [`datasets/bottle/train/good/${shardId}.png`] })),
  jobOptions: { attempts: 1 },
});

function worker(queue: string, handler: (job: import('bullmq').Job) => Promise<unknown>) {
  const connection = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  connections.push(connection);
  const w = new Worker(queue, handler, { connection, prefix: PREFIX, stalledInterval: 1000, lockDuration: 2000 });
  w.on('error', () => {});
  workers.push(w);
  return w;
}

test('retry: a run failed by one shard goes back to the queue and completes, with every shard\'s result', { timeout: 60_000 }, async () => {
  let broken = true;
  worker(FEATURES_QUEUE, async (job) => {
    if (job.data.runId !== 'train-retry') return null;
    if (broken && job.data.shardId === '0001') throw new Error('image unreadable');
    return { shard: job.data.shardId };
  });
  worker(INDEX_QUEUE, async (job) => {
    if (job.data.runId !== 'train-retry') return null;
    const results = await collectShardResults(job, job.data.shards);
    return { shards: [...results.keys()].sort() };
  });
  await enqueueTrainingFlow(flows, spec('train-retry', ['0000', '0001', '0002']));
  const failed = await waitFor('the run to fail', async () => {
    const p = await runProgress(conn, 'train-retry', 'training', { prefix: PREFIX });
    return p.state === 'failed' && p.parent?.state === 'failed' ? p : null;
  }, { timeoutMs: 30_000 });
  assert.deepEqual(failed.failures.map((f) => f.shardId), ['0001', null]);

  broken = false;
  const r = await retryRun(conn, 'train-retry', 'training', { prefix: PREFIX });
  assert.deepEqual(r.retried, [jobIds.buildIndex('train-retry'), jobIds.extractFeatures('train-retry', '0001')]);
  const done = await waitFor('the retried run to complete', async () => {
    const p = await runProgress(conn, 'train-retry', 'training', { prefix: PREFIX });
    return p.state === 'completed' || p.state === 'failed' ? p : null;
  }, { timeoutMs: 30_000 });
  assert.equal(done.state, 'completed', JSON.stringify(done.failures));
  assert.deepEqual(done.parent?.returnValue, { shards: ['0000', '0001', '0002'] });
  // Nothing failed is left: a second retry has nothing to do.
  assert.deepEqual((await retryRun(conn, 'train-retry', 'training', { prefix: PREFIX })).retried, []);
  await Promise.all(workers.splice(0).map((w) => w.close()));
});

test('cancel: waiting jobs are removed, a running one finishes alone and releases nothing, the run id is free again', { timeout: 60_000 }, async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let started = false;
  let parentRan = false;
  worker(FEATURES_QUEUE, async (job) => {
    if (job.data.runId !== 'train-cancel') return null;
    started = true;
    await held; // one shard at a time: 0000 is held, the others wait
    return {};
  }).concurrency = 1;
  worker(INDEX_QUEUE, async (job) => {
    if (job.data.runId === 'train-cancel') parentRan = true;
    return null;
  });
  await enqueueTrainingFlow(flows, spec('train-cancel', ['0000', '0001', '0002']));
  await waitFor('a shard to start', () => started, { timeoutMs: 20_000 });
  const c = await cancelRun(conn, 'train-cancel', 'training', { prefix: PREFIX });
  assert.equal(c.running.length, 1, JSON.stringify(c));
  assert.equal(c.removed.length, 3, JSON.stringify(c)); // the parent and two waiting shards
  assert.ok(c.removed.includes(jobIds.buildIndex('train-cancel')));
  release();
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(parentRan, false, 'the cancelled run\'s parent ran');
  assert.equal((await runProgress(conn, 'train-cancel', 'training', { prefix: PREFIX })).state, 'missing');
  const again = await enqueueTrainingFlow(flows, spec('train-cancel', ['0000']));
  assert.equal(again.alreadySubmitted, false);
});
