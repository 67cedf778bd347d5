// test-lane: integration (real redis-server, s3rver or Chromium)
// The worker runtime against real redis-servers: health endpoint and counters, per-job log context,
// payload validation, permanent versus transient errors, graceful close, hand-back after the grace period,
// and signal handling.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { createRedisConnection, redisConfigFromEnv } from './config.js';
import { SCORE_QUEUE, type ScoreShardPayload } from './jobs.js';
import { startRedisServer, waitFor, type RedisServer } from '../embedded/redis-server.js';
import { PermanentError, WeightsMismatchError } from '../errors.js';
import { WorkerRuntime, type JobHandler, type WorkerRuntimeOptions } from './worker-runtime.js';

const quiet = pino({ level: 'silent' });

let redis: RedisServer;
let conn: Redis;
let queue: Queue;

before(async () => {
  redis = await startRedisServer();
  conn = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  queue = new Queue(SCORE_QUEUE, { connection: conn });
});

after(async () => {
  await queue.close();
  await conn.quit();
  await redis.stop();
});

const payload = (runId: string, shardId: string): ScoreShardPayload => ({
  runId,
  shardId,
  model: { category: 'bottle', version: 'v1' },
  imageKeys: ['test/good/000.png', 'test/good/001.png'],
  datasetPrefix: 'datasets/bottle/',
});

async function get(port: number, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function scoreWorker(connection: Redis, handler: JobHandler<typeof SCORE_QUEUE>, extra: Partial<WorkerRuntimeOptions> = {}) {
  return new WorkerRuntime(SCORE_QUEUE, handler, { connection, logger: quiet, handleSignals: false, ...extra }).start();
}

/** State first, then the job: the data read is at least as new as the state. */
async function stateOf(q: Queue, jobId: string) {
  const state = await q.getJobState(jobId);
  const job = await q.getJob(jobId);
  return job ? { state, job } : null;
}

test('health endpoint reports counters while Redis is up, 503 once it goes away; jobs log with their context', async () => {
  // A server of its own, because this test kills it.
  const own = await startRedisServer();
  const ownConn = createRedisConnection(redisConfigFromEnv({ REDIS_URL: own.url }));
  const ownQueue = new Queue(SCORE_QUEUE, { connection: ownConn });
  ownQueue.on('error', () => {}); // expected once the server is killed
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  const handle = await scoreWorker(
    ownConn,
    async (p, ctx) => {
      ctx.log.info({ images: p.imageKeys.length }, 'scoring shard');
      return p.imageKeys.length;
    },
    // drainDelay 1 s: BullMQ's watchdog on the blocking fetch (drainDelay + 1 s) outlives a force close, and
    // would keep this file's process alive for 6 s after the test.
    { logger: pino(sink), healthPort: 0, healthHost: '127.0.0.1', workerOptions: { drainDelay: 1 } },
  );
  try {
    await handle.worker.waitUntilReady();
    assert.ok(handle.port && handle.port > 0);
    assert.deepEqual(await get(handle.port, '/healthz'), {
      status: 200,
      body: { status: 'ok', queue: SCORE_QUEUE, phase: 'running', redis: 'ready', running: 0, processed: 0, failed: 0 },
    });
    assert.equal((await get(handle.port, '/readyz')).status, 200);
    assert.equal((await get(handle.port, '/nope')).status, 404);

    await ownQueue.add('score-shard', payload('run-7', '0004'), { jobId: 'run-7~score~0004' });
    // Bad payloads fail at once: retrying cannot fix them.
    await ownQueue.add('score-shard', { ...payload('run-7', 'x:y'), imageKeys: 'a.png' }, { jobId: 'bad-1', attempts: 3 });
    await ownQueue.add('report', payload('run-7', '0005'), { jobId: 'misrouted-1', attempts: 3 });
    const bad = await waitFor('bad job to fail', async () => {
      const s = await stateOf(ownQueue, 'bad-1');
      return s?.state === 'failed' ? s.job : null;
    });
    assert.equal(
      bad.failedReason,
      'invalid score-shard payload in job bad-1: shardId: "x:y" must be 1 to 128 characters of A-Z a-z 0-9 . _ -; ' +
        'imageKeys: Invalid input: expected array, received string',
    );
    assert.equal(bad.attemptsMade, 1);
    const misrouted = await waitFor('misrouted job to fail', async () => {
      const s = await stateOf(ownQueue, 'misrouted-1');
      return s?.state === 'failed' ? s.job : null;
    });
    assert.equal(misrouted.failedReason, 'job misrouted-1 in queue patchcore-score is named "report", expected "score-shard"');
    const good = await stateOf(ownQueue, 'run-7~score~0004');
    assert.equal(good?.state, 'completed');
    assert.equal(good?.job.returnvalue, 2);

    const { status, body } = await get(handle.port, '/healthz');
    assert.equal(status, 200);
    assert.deepEqual([body.processed, body.failed, body.running], [1, 2, 0]);
    assert.equal((await handle.metrics.snapshot()).durationCount, 3);
    const exposition = await (await fetch(`http://127.0.0.1:${handle.port}/metrics`)).text();
    assert.match(exposition, /^patchcore_worker_job_duration_seconds_bucket\{le="\+Inf",queue="patchcore-score"\} 3$/m);

    const scoring = lines.find((l) => l.msg === 'scoring shard');
    assert.ok(scoring, 'handler log line');
    assert.deepEqual(
      [scoring.runId, scoring.jobId, scoring.queue, scoring.attempt, scoring.images],
      ['run-7', 'run-7~score~0004', SCORE_QUEUE, 1, 2],
    );
    const failedLine = lines.find((l) => l.msg === 'job failed' && l.jobId === 'bad-1');
    assert.equal(failedLine?.willRetry, false);

    await own.kill();
    const down = await waitFor('health to turn 503', async () => {
      const r = await get(handle.port!, '/healthz');
      return r.status === 503 ? r : null;
    });
    assert.equal(down.body.status, 'unavailable');
    assert.match(String(down.body.reason), /^redis connection is (connecting|reconnecting|close)/);
    assert.equal((await get(handle.port, '/readyz')).status, 503);
  } finally {
    const t0 = Date.now();
    await handle.close({ graceMs: 200 });
    assert.ok(Date.now() - t0 < 5000, `close with Redis down took ${Date.now() - t0} ms`);
    await assert.rejects(fetch(`http://127.0.0.1:${handle.port}/healthz`));
    await ownQueue.close().catch(() => {});
    ownConn.disconnect();
    await own.stop();
  }
});

test('graceful close: the running job completes, no new job is taken, readyz says draining', async () => {
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  const handle = await scoreWorker(
    conn,
    async () => {
      started();
      await new Promise((r) => setTimeout(r, 400));
      return 'finished';
    },
    { healthPort: 0, healthHost: '127.0.0.1' },
  );
  await queue.add('score-shard', payload('run-g', '0000'), { jobId: 'run-g~score~0000' });
  await running;
  const closing = handle.close();
  const ready = await get(handle.port!, '/readyz');
  assert.equal(ready.status, 503);
  assert.equal(ready.body.reason, 'worker is shutting down');
  const live = await get(handle.port!, '/healthz');
  assert.deepEqual([live.status, live.body.phase, live.body.running], [200, 'draining', 1]);
  await queue.add('score-shard', payload('run-g', '0001'), { jobId: 'run-g~score~0001' });
  await closing;
  const first = await stateOf(queue, 'run-g~score~0000');
  assert.equal(first?.state, 'completed');
  assert.equal(first?.job.returnvalue, 'finished');
  assert.equal((await stateOf(queue, 'run-g~score~0001'))?.state, 'waiting');
  const counts = await handle.metrics.snapshot();
  assert.deepEqual([counts.processed, counts.failed, counts.handedBack], [1, 0, 0]);
  assert.equal((await handle.health()).live.status, 'unavailable');
  await queue.remove('run-g~score~0001');
});

test('after the grace period a running job is handed back, not failed, and another worker finishes it', async () => {
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  let sawAbort = false;
  const stuck = await scoreWorker(conn, async (_p, ctx) => {
    started();
    await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
    sawAbort = true;
    throw new Error('aborted');
  });
  await queue.add('score-shard', payload('run-h', '0000'), { jobId: 'run-h~score~0000', attempts: 2 });
  await running;
  const t0 = Date.now();
  await stuck.close({ graceMs: 150 });
  assert.ok(Date.now() - t0 < 1500, `close took ${Date.now() - t0} ms`);
  assert.ok(sawAbort, 'the handler saw the abort signal');
  const back = await stateOf(queue, 'run-h~score~0000');
  assert.equal(back?.state, 'waiting');
  assert.equal(back?.job.attemptsMade, 0);
  const stuckCounts = await stuck.metrics.snapshot();
  assert.deepEqual([stuckCounts.handedBack, stuckCounts.failed, stuckCounts.processed], [1, 0, 0]);

  const attempts: number[] = [];
  const next = await scoreWorker(conn, async (_p, ctx) => {
    attempts.push(ctx.attempt);
    return 'second worker';
  });
  try {
    const done = await waitFor('handed-back job to complete', async () => {
      const s = await stateOf(queue, 'run-h~score~0000');
      return s?.state === 'completed' ? s.job : null;
    });
    assert.equal(done.returnvalue, 'second worker');
    assert.deepEqual(attempts, [1]);
  } finally {
    await next.close();
  }
});

test('SIGTERM closes the worker and removes its listeners; handleSignals: false adds none', async () => {
  const before = process.listeners('SIGTERM');
  const quietHandle = await scoreWorker(conn, async () => null);
  assert.equal(process.listenerCount('SIGTERM'), before.length);
  await quietHandle.close();

  const handle = await scoreWorker(conn, async () => null, { handleSignals: true });
  const added = process.listeners('SIGTERM').filter((l) => !before.includes(l));
  assert.equal(added.length, 1);
  assert.equal(process.listeners('SIGINT').filter((l) => l === added[0]).length, 1);
  // Call our listener directly: emitting a real signal would also reach the test runner's own handlers.
  (added[0] as (s: NodeJS.Signals) => void)('SIGTERM');
  await handle.closed;
  assert.equal((await handle.health()).live.phase, 'closed');
  assert.deepEqual(process.listeners('SIGTERM'), before);
  assert.ok(!process.listeners('SIGINT').includes(added[0]));
});

test('bad options are refused with the option named', () => {
  assert.throws(
    () => new WorkerRuntime('patchcore-nope' as typeof SCORE_QUEUE, async () => null, { connection: conn, logger: quiet }),
    { message: 'WorkerRuntime: unknown queue "patchcore-nope"' },
  );
  assert.throws(() => new WorkerRuntime(SCORE_QUEUE, async () => null, { connection: conn, logger: quiet, concurrency: 0 }), {
    message: 'WorkerRuntime: concurrency must be a positive integer, got 0',
  });
});

test('a PermanentError fails the job at once, whatever its attempts; a transient error is retried', async () => {
  const attempts = new Map<string, number[]>();
  const handle = await scoreWorker(conn, async (p, ctx) => {
    attempts.set(p.shardId, [...(attempts.get(p.shardId) ?? []), ctx.attempt]);
    if (p.shardId === 'weights') throw new WeightsMismatchError('weights file resnet50.h5 has sha256 ab..., the run was trained with cd...');
    if (p.shardId === 'permanent') throw new PermanentError('shard 0003 lists no image');
    if (p.shardId === 'transient' && ctx.attempt === 1) throw new Error('ECONNRESET while reading test/good/000.png');
    return 'scored';
  });
  try {
    const opts = { attempts: 3, backoff: { type: 'fixed', delay: 10 } } as const;
    await queue.add('score-shard', payload('run-p', 'weights'), { jobId: 'run-p~score~weights', ...opts });
    await queue.add('score-shard', payload('run-p', 'permanent'), { jobId: 'run-p~score~permanent', ...opts });
    await queue.add('score-shard', payload('run-p', 'transient'), { jobId: 'run-p~score~transient', ...opts });
    for (const [shard, reason] of [
      ['weights', 'weights file resnet50.h5 has sha256 ab..., the run was trained with cd...'],
      ['permanent', 'shard 0003 lists no image'],
    ]) {
      const failed = await waitFor(`${shard} job to fail`, async () => {
        const s = await stateOf(queue, `run-p~score~${shard}`);
        return s?.state === 'failed' ? s.job : null;
      });
      assert.equal(failed.failedReason, reason);
      assert.equal(failed.attemptsMade, 1, `${shard}: no retry`);
      assert.ok((await queue.getFailed()).some((j) => j.id === `run-p~score~${shard}`), `${shard} is in the failed set`);
    }
    const retried = await waitFor('transient job to complete', async () => {
      const s = await stateOf(queue, 'run-p~score~transient');
      return s?.state === 'completed' ? s.job : null;
    });
    assert.equal(retried.returnvalue, 'scored');
    assert.equal(retried.attemptsMade, 2);
    assert.deepEqual(Object.fromEntries(attempts), { weights: [1], permanent: [1], transient: [1, 2] });
    const counts = await handle.metrics.snapshot();
    assert.deepEqual([counts.processed, counts.failed], [1, 3]);
  } finally {
    await handle.close();
    for (const shard of ['weights', 'permanent', 'transient']) await queue.remove(`run-p~score~${shard}`);
  }
});

test('a health port already in use stops start() with the port named, and leaves nothing running', async () => {
  const first = await scoreWorker(conn, async () => null, { healthPort: 0, healthHost: '127.0.0.1' });
  try {
    const second = new WorkerRuntime(SCORE_QUEUE, async () => null, {
      connection: conn, logger: quiet, handleSignals: false, healthPort: first.port, healthHost: '127.0.0.1',
    });
    await assert.rejects(second.start(), {
      message: new RegExp(`^health endpoint for patchcore-score: cannot listen on port ${first.port}: .*EADDRINUSE`),
    });
    assert.equal(second.worker.isRunning(), false);
    assert.equal(second.port, null);
    await second.closed;
    assert.equal((await second.health()).live.phase, 'closed');
  } finally {
    await first.close();
  }
});
