// `patchcore submit train --wait` (the real CLI, a separate process) while redis-server crashes and comes back
// 4 s later on the same port and append-only file: longer than the CLI's fail-fast Redis client keeps trying on
// its own (about 1.5 s). The command must ride it out and end with the run's result. The queue's jobs are run
// by small stand-in workers in this process: what is under test is the waiting, not the pipeline steps.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { startRedisServer, waitFor, type RedisServer } from '../../shared/embedded/redis-server.js';
import { startS3rver, type S3Server } from '../../shared/embedded/s3-server.js';
import { repoRoot } from '../../shared/paths.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { FEATURES_QUEUE, INDEX_QUEUE } from '../../shared/queue/jobs.js';
import { storageConfigFromEnv } from '../../shared/storage/config.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { ingestDataset } from '../../services/producer/submit.js';

let redis: RedisServer;
let s3: S3Server;
const workers: Worker[] = [];
const connections: Redis[] = [];

before(async () => {
  redis = await startRedisServer({ appendOnly: true, appendFsync: 'always' });
  s3 = await startS3rver('ops-outage');
  const store = new ObjectStore(storageConfigFromEnv(s3.env));
  await store.ensureBucket();
  const dir = mkdtempSync(join(tmpdir(), 'patchcore-ops-ds-'));
  mkdirSync(join(dir, 'train', 'good'), { recursive: true });
  for (const n of ['000', '001']) writeFileSync(join(dir, 'train', 'good', `${n}.png`), 'stand-in');
  await ingestDataset(store, dir, 'outage');
  store.destroy();
});
after(async () => {
  await Promise.all(workers.map((w) => w.close(true)));
  await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
  await redis?.stop();
  await s3?.stop();
});

function worker(queue: string, handler: (job: import('bullmq').Job) => Promise<unknown>) {
  const connection = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  connections.push(connection);
  const w = new Worker(queue, handler, { connection, prefix: 'bull' });
  w.on('error', () => {});
  workers.push(w);
}

test('submit --wait rides out a Redis restart and prints the run\'s result', { timeout: 120_000 }, async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let started = false;
  worker(FEATURES_QUEUE, async (job) => {
    started = true;
    await gate;
    return { shard: job.data.shardId };
  });
  worker(INDEX_QUEUE, async (job) => ({ built: job.data.version }));

  const weights = join(mkdtempSync(join(tmpdir(), 'patchcore-ops-w-')), 'w.h5');
  writeFileSync(weights, 'stand-in weights');
  const child = spawn(process.execPath, [join(repoRoot, 'bin/patchcore.js'), 'submit', 'train', '--dataset', 'outage', '--run-id', 'train-outage',
    '--shard-size', '1', '--weights', weights, '--wait'], {
    env: { ...process.env, ...s3.env, REDIS_URL: redis.url, QUEUE_PREFIX: 'bull', LOG_LEVEL: 'warn' },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number>((r) => child.once('close', (code) => r(code ?? -1)));

  await waitFor('a shard to start', () => started, { timeoutMs: 60_000 });
  await redis.restart({ crash: true, downMs: 4000 });
  release();
  const code = await exited;
  assert.equal(code, 0, `exit ${code}\nstdout: ${stdout}\nstderr: ${stderr.slice(-2000)}`);
  const last = JSON.parse(stdout.trim().split('\n').at(-1)!);
  assert.deepEqual(last, { runId: 'train-outage', state: 'completed', result: { built: 'v-outage' } });
});
