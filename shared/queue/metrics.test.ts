// test-lane: integration (real redis-server, s3rver or Chromium)
// The Prometheus exposition: what prom-client must guarantee for it (escaping, cumulative buckets, refused names),
// the registry of one process with two queues, then /metrics of a live worker on a real redis-server (counters,
// histogram, images, queue backlog with failed jobs, stalled jobs, and a scrape that stays fast while Redis does
// not answer).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { createRedisConnection, redisConfigFromEnv } from './config.js';
import { REPORT_QUEUE, SCORE_QUEUE, type ScoreShardPayload } from './jobs.js';
import { startRedisServer, waitFor, type RedisServer } from '../embedded/redis-server.js';
import { DURATION_BUCKETS_S, QUEUE_COUNTS_TIMEOUT_MS, WorkerMetrics, type QueueSource } from './metrics.js';
import { WorkerRuntime } from './worker-runtime.js';

const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Sample lines as `series -> value`, after checking every line against the text format. Labels are keyed in name
 * order, so `h_bucket{le="1",queue="q"}` whichever order the exposition writes them in.
 */
function parseExposition(text: string): Map<string, number> {
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') continue; // the format allows empty lines (prom-client separates families with one)
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3], /^(counter|gauge|histogram|summary)$/, line);
        assert.ok(!typed.has(meta[2]), `second TYPE for ${meta[2]}`);
        typed.add(meta[2]);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed sample line: ${JSON.stringify(line)}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(typed.has(m[1]) || typed.has(family), `sample before its TYPE: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/g)].map((l) => `${l[1]}="${l[2]}"`).sort();
    const series = m[1] + (labels.length ? `{${labels.join(',')}}` : '');
    assert.ok(!samples.has(series), `duplicate series ${series}`);
    samples.set(series, m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]));
  }
  return samples;
}

test('the exposition escapes help and label values and spells infinities (prom-client, as the format wants)', async () => {
  const r = new Registry();
  new Counter({ name: 'demo_total', help: 'A "counter"\nwith a back\\slash.', labelNames: ['path'], registers: [r] }).inc({ path: 'a"b\\c\nd' }, 3);
  const g = new Gauge({ name: 'demo_gauge', help: 'g', labelNames: ['x'], registers: [r] });
  g.set(0.25);
  g.set({ x: '1' }, -Infinity);
  assert.equal(
    await r.metrics(),
    '# HELP demo_total A "counter"\\nwith a back\\\\slash.\n# TYPE demo_total counter\ndemo_total{path="a\\"b\\\\c\\nd"} 3\n\n' +
      '# HELP demo_gauge g\n# TYPE demo_gauge gauge\ndemo_gauge 0.25\ndemo_gauge{x="1"} -Inf\n',
  );
  assert.equal(r.contentType, PROMETHEUS_CONTENT_TYPE);
});

test('bad metric and label names and a metric registered twice are refused', () => {
  const r = new Registry();
  assert.throws(() => new Gauge({ name: 'bad-name', help: 'x', registers: [r] }), /Invalid metric name/);
  assert.throws(() => new Gauge({ name: 'm', help: 'x', labelNames: ['le-x'], registers: [r] }), /Invalid label name/);
  assert.throws(() => new Histogram({ name: 'h', help: 'x', labelNames: ['le'], registers: [r] }), /reserved label keyword/);
  new Gauge({ name: 'g', help: 'x', registers: [r] });
  assert.throws(() => new Gauge({ name: 'g', help: 'x', registers: [r] }), /A metric with the name g has already been registered/);
  const metrics = new WorkerMetrics({ processMetrics: false });
  const source: QueueSource = { queue: SCORE_QUEUE, connection: new Redis({ lazyConnect: true }), prefix: 'bull', ready: () => true };
  metrics.addQueue(source);
  assert.throws(() => metrics.addQueue(source), { message: 'metrics: queue patchcore-score already has a worker in this registry' });
});

test('job durations go into cumulative buckets with sum and count; images only from processed jobs', async () => {
  const metrics = new WorkerMetrics({ processMetrics: false });
  const score = metrics.addQueue({ queue: SCORE_QUEUE, connection: new Redis({ lazyConnect: true }), prefix: 'bull', ready: () => true });
  for (const s of [0.0625, 0.0625, 1.5, 1.5]) score.processed(s, 24);
  score.failed(2);
  score.failed(4000);
  assert.deepEqual(DURATION_BUCKETS_S, [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]);
  const m = parseExposition((await metrics.expose()).text);
  const bucket = (le: string) => m.get(`patchcore_worker_job_duration_seconds_bucket{le="${le}",queue="patchcore-score"}`);
  assert.deepEqual(['0.1', '0.5', '1', '2', '5', '1800', '+Inf'].map(bucket), [2, 2, 2, 5, 5, 5, 6]);
  assert.equal(m.get('patchcore_worker_job_duration_seconds_sum{queue="patchcore-score"}'), 4005.125);
  assert.equal(m.get('patchcore_worker_job_duration_seconds_count{queue="patchcore-score"}'), 6);
  assert.equal(m.get('patchcore_worker_images_processed_total{queue="patchcore-score"}'), 96);
  assert.deepEqual(await score.snapshot(), {
    processed: 4, failed: 2, handedBack: 0, stalled: 0, running: 0, images: 96, durationCount: 6, durationSumSeconds: 4005.125,
  });
});

let redis: RedisServer;
let conn: Redis;
let probe: Redis;
let scoreQueue: Queue;
let reportQueue: Queue;

before(async () => {
  redis = await startRedisServer();
  conn = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  probe = createRedisConnection(redisConfigFromEnv({ REDIS_URL: redis.url }));
  scoreQueue = new Queue(SCORE_QUEUE, { connection: probe });
  reportQueue = new Queue(REPORT_QUEUE, { connection: probe });
});

after(async () => {
  await scoreQueue.close();
  await reportQueue.close();
  await probe.quit();
  await conn.quit();
  await redis.stop();
});

const payload = (runId: string, shardId: string, images: number): ScoreShardPayload => ({
  runId,
  shardId,
  model: { category: 'bottle', version: 'v1' },
  imageKeys: Array.from({ length: images }, (_, i) => `test/good/${String(i).padStart(3, '0')}.png`),
  datasetPrefix: 'datasets/bottle/',
});

test('one registry for two queues labels each by queue, and leaves out a backlog that could not be read', async () => {
  const metrics = new WorkerMetrics();
  const down = new Redis({ lazyConnect: true }); // never connected: its queue's counts cannot be read
  await conn.ping(); // connected, as a running worker's connection is
  try {
    metrics.addQueue({ queue: SCORE_QUEUE, connection: conn, prefix: 'bull', ready: () => true }).processed(0.2, 5);
    metrics.addQueue({ queue: REPORT_QUEUE, connection: down, prefix: 'bull', ready: () => false });
    const m = parseExposition((await metrics.expose()).text);
    assert.equal(m.get('patchcore_worker_jobs_processed_total{queue="patchcore-score"}'), 1);
    assert.equal(m.get('patchcore_worker_jobs_processed_total{queue="patchcore-report"}'), 0);
    assert.equal(m.get('patchcore_queue_scrape_success{queue="patchcore-score"}'), 1);
    assert.equal(m.get('patchcore_queue_scrape_success{queue="patchcore-report"}'), 0);
    assert.equal(m.get('patchcore_worker_ready{queue="patchcore-score"}'), 1);
    assert.equal(m.get('patchcore_worker_ready{queue="patchcore-report"}'), 0);
    assert.equal(m.get('patchcore_queue_jobs{queue="patchcore-score",state="waiting"}'), 0);
    assert.ok(![...m.keys()].some((k) => k.startsWith('patchcore_queue_jobs{queue="patchcore-report"')));
    const start = m.get('process_start_time_seconds')!;
    assert.ok(Math.abs(start - performance.timeOrigin / 1000) < 2, `process_start_time_seconds ${start}`);
  } finally {
    await metrics.close();
    down.disconnect();
  }
});

test('a live worker serves /metrics: job counts, durations, images, backlog and failed jobs of its queue and of a peer', async () => {
  // The process's registry, shared with a peer as the scorer's report worker: no endpoint of its own, shown through this one.
  const metrics = new WorkerMetrics();
  metrics.addQueue({ queue: REPORT_QUEUE, connection: conn, prefix: 'bull', ready: () => true }).processed(0.5, 0);
  const handle = await new WorkerRuntime(
    SCORE_QUEUE,
    async (p) => {
      if (p.shardId === 'boom') throw new Error('decoder exploded');
      return { shardId: p.shardId, images: p.imageKeys.length };
    },
    {
      connection: conn,
      logger: pino({ level: 'silent' }),
      handleSignals: false,
      healthPort: 0,
      healthHost: '127.0.0.1',
      metrics,
      workerOptions: { drainDelay: 1 },
    },
  ).start();
  try {
    await handle.worker.waitUntilReady();
    await scoreQueue.add('score-shard', payload('run-1', '0000', 2), { jobId: 'run-1~score~0000' });
    await scoreQueue.add('score-shard', payload('run-1', '0001', 3), { jobId: 'run-1~score~0001' });
    await scoreQueue.add('score-shard', payload('run-1', 'boom', 1), { jobId: 'run-1~score~boom' });
    await scoreQueue.add('score-shard', payload('run-2', '0000', 4), { jobId: 'later', delay: 60_000 });
    await reportQueue.add('report', { runId: 'run-1' }, { jobId: 'r1' });
    await reportQueue.add('report', { runId: 'run-3' }, { jobId: 'r3' });
    await waitFor('three jobs to finish', async () => {
      const c = await handle.metrics.snapshot();
      return c.processed + c.failed === 3 ? true : null;
    });

    const res = await fetch(`http://127.0.0.1:${handle.port}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), PROMETHEUS_CONTENT_TYPE);
    const m = parseExposition(await res.text());
    const q = 'queue="patchcore-score"';
    assert.equal(m.get(`patchcore_worker_jobs_processed_total{${q}}`), 2);
    assert.equal(m.get(`patchcore_worker_jobs_failed_total{${q}}`), 1);
    assert.equal(m.get(`patchcore_worker_jobs_handed_back_total{${q}}`), 0);
    assert.equal(m.get(`patchcore_worker_jobs_stalled_total{${q}}`), 0);
    assert.equal(m.get(`patchcore_worker_jobs_running{${q}}`), 0);
    assert.equal(m.get(`patchcore_worker_images_processed_total{${q}}`), 5, 'images of the two processed shards, not of the failed one');
    assert.equal(m.get(`patchcore_worker_job_duration_seconds_count{${q}}`), 3);
    assert.equal(m.get(`patchcore_worker_job_duration_seconds_bucket{le="+Inf",${q}}`), 3);
    assert.equal(m.get(`patchcore_worker_job_duration_seconds_bucket{le="0.1",${q}}`), 3, 'trivial handlers finish within 0.1 s');
    assert.ok(m.get(`patchcore_worker_job_duration_seconds_sum{${q}}`)! < 0.3);
    assert.equal(m.get(`patchcore_worker_ready{${q}}`), 1);
    assert.equal(m.get(`patchcore_queue_scrape_success{${q}}`), 1);
    assert.equal(m.get(`patchcore_queue_jobs{${q},state="waiting"}`), 0);
    assert.equal(m.get(`patchcore_queue_jobs{${q},state="active"}`), 0);
    assert.equal(m.get(`patchcore_queue_jobs{${q},state="delayed"}`), 1);
    assert.equal(m.get(`patchcore_queue_jobs{${q},state="failed"}`), 1, 'the failed job, in the failed set');
    assert.equal(m.get('patchcore_queue_jobs{queue="patchcore-report",state="waiting"}'), 2);
    assert.equal(m.get('patchcore_worker_jobs_processed_total{queue="patchcore-report"}'), 1);
    assert.ok(m.get('process_resident_memory_bytes')! > 10 * 2 ** 20);

    // /healthz tells the same story.
    const health = (await (await fetch(`http://127.0.0.1:${handle.port}/healthz`)).json()) as Record<string, unknown>;
    assert.deepEqual([health.status, health.processed, health.failed, health.running], ['ok', 2, 1, 0]);

    // Redis holding every command: the scrape gives up on the backlog after the timeout instead of hanging.
    await probe.call('CLIENT', 'PAUSE', String(QUEUE_COUNTS_TIMEOUT_MS + 1500), 'ALL');
    const t0 = performance.now();
    const paused = parseExposition(await (await fetch(`http://127.0.0.1:${handle.port}/metrics`)).text());
    const ms = performance.now() - t0;
    assert.ok(ms >= QUEUE_COUNTS_TIMEOUT_MS - 50 && ms < QUEUE_COUNTS_TIMEOUT_MS + 1000, `scrape took ${Math.round(ms)} ms`);
    assert.equal(paused.get(`patchcore_queue_scrape_success{${q}}`), 0);
    assert.equal(paused.get(`patchcore_queue_jobs{${q},state="delayed"}`), undefined);
    assert.equal(paused.get(`patchcore_worker_jobs_processed_total{${q}}`), 2, 'counters are still there');
    // Once Redis answers again, so does the backlog.
    const back = await waitFor('backlog to come back', async () => {
      const again = parseExposition(await (await fetch(`http://127.0.0.1:${handle.port}/metrics`)).text());
      return again.get(`patchcore_queue_scrape_success{${q}}`) === 1 ? again : null;
    });
    assert.equal(back.get(`patchcore_queue_jobs{${q},state="delayed"}`), 1);
  } finally {
    await handle.close({ graceMs: 0 });
    await metrics.close();
    await scoreQueue.obliterate({ force: true });
    await reportQueue.obliterate({ force: true });
  }
});

test('a job whose worker died is counted as stalled on /metrics, and then finished by a live worker', async () => {
  // The dead worker: takes the job by hand with a short lock and never renews it, as a killed process would not.
  const dead = new Worker(SCORE_QUEUE, null, { connection: probe, lockDuration: 1000, autorun: false });
  await scoreQueue.add('score-shard', payload('run-s', '0000', 1), { jobId: 'run-s~score~0000' });
  const taken = await dead.getNextJob('dead-worker-token');
  assert.equal(taken?.id, 'run-s~score~0000');
  assert.equal(await scoreQueue.getJobState('run-s~score~0000'), 'active');

  const attempts: number[] = [];
  const handle = await new WorkerRuntime(
    SCORE_QUEUE,
    async (_p, ctx) => {
      attempts.push(ctx.attempt);
      return { images: 1 };
    },
    {
      connection: conn,
      logger: pino({ level: 'silent' }),
      handleSignals: false,
      healthPort: 0,
      healthHost: '127.0.0.1',
      workerOptions: { drainDelay: 1, stalledInterval: 300 },
    },
  ).start();
  try {
    const done = await waitFor('stalled job to be recovered and completed', async () => {
      const state = await scoreQueue.getJobState('run-s~score~0000');
      return state === 'completed' ? state : null;
    });
    assert.equal(done, 'completed');
    assert.deepEqual(attempts, [1], 'a stall is not a failed attempt');
    const m = parseExposition(await (await fetch(`http://127.0.0.1:${handle.port}/metrics`)).text());
    assert.equal(m.get('patchcore_worker_jobs_stalled_total{queue="patchcore-score"}'), 1);
    assert.equal(m.get('patchcore_worker_jobs_processed_total{queue="patchcore-score"}'), 1);
    assert.equal((await handle.metrics.snapshot()).stalled, 1);
  } finally {
    await handle.close({ graceMs: 0 });
    await dead.close(true);
    await scoreQueue.obliterate({ force: true });
  }
});
