// The Prometheus exposition: the renderer on its own, then /metrics of a live worker on a real redis-server
// (counters, histogram, images, queue backlog, and a scrape that stays fast while Redis does not answer).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { createRedisConnection, redisConfigFromEnv } from './config.js';
import { REPORT_QUEUE, SCORE_QUEUE, type ScoreShardPayload } from './jobs.js';
import { startRedisServer, waitFor, type RedisServer } from '../embedded/redis-server.js';
import { PROMETHEUS_CONTENT_TYPE, formatValue, histogramSamples, renderMetrics, workerMetricFamilies } from './prometheus.js';
import { DURATION_BUCKETS_S, QUEUE_COUNTS_TIMEOUT_MS, startWorker, type WorkerMetrics } from './worker-runtime.js';

/** Sample lines as `series -> value`, after checking every line against the text format. */
function parseExposition(text: string): Map<string, number> {
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3], /^(counter|gauge|histogram)$/, line);
        typed.add(meta[2]);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed sample line: ${JSON.stringify(line)}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(typed.has(m[1]) || typed.has(family), `sample before its TYPE: ${line}`);
    assert.ok(!samples.has(m[1] + (m[2] ?? '')), `duplicate series ${m[1]}${m[2] ?? ''}`);
    samples.set(m[1] + (m[2] ?? ''), m[3] === '+Inf' ? Infinity : Number(m[3]));
  }
  return samples;
}

function metricsOf(queue: typeof SCORE_QUEUE | typeof REPORT_QUEUE, over: Partial<WorkerMetrics> = {}): WorkerMetrics {
  return {
    queue, processed: 0, failed: 0, handedBack: 0, running: 0, images: 0,
    durationCounts: new Array<number>(DURATION_BUCKETS_S.length + 1).fill(0), durationSumSeconds: 0, durationCount: 0,
    ...over,
  };
}

test('renderMetrics writes HELP, TYPE and escaped samples; formatValue spells the special values', () => {
  const text = renderMetrics([
    { name: 'demo_total', help: 'A "counter"\nwith a back\\slash.', type: 'counter', samples: [{ labels: { path: 'a"b\\c\nd' }, value: 3 }] },
    { name: 'demo_gauge', help: 'g', type: 'gauge', samples: [{ value: 0.25 }, { labels: { x: '1' }, value: -Infinity }] },
  ]);
  assert.equal(
    text,
    '# HELP demo_total A "counter"\\nwith a back\\\\slash.\n# TYPE demo_total counter\ndemo_total{path="a\\"b\\\\c\\nd"} 3\n' +
      '# HELP demo_gauge g\n# TYPE demo_gauge gauge\ndemo_gauge 0.25\ndemo_gauge{x="1"} -Inf\n',
  );
  assert.deepEqual([NaN, Infinity, 1e21, 0.1 + 0.2, 7].map(formatValue), ['NaN', '+Inf', '1e+21', '0.30000000000000004', '7']);
});

test('renderMetrics refuses bad names, misplaced suffixes and duplicate series', () => {
  assert.throws(() => renderMetrics([{ name: 'bad-name', help: '', type: 'gauge', samples: [] }]), /invalid metric name "bad-name"/);
  assert.throws(
    () => renderMetrics([{ name: 'm', help: '', type: 'gauge', samples: [{ labels: { 'le-x': '1' }, value: 1 }] }]),
    /metric m: invalid label name "le-x"/,
  );
  assert.throws(
    () => renderMetrics([{ name: 'm', help: '', type: 'gauge', samples: [{ labels: { __name__: 'x' }, value: 1 }] }]),
    /invalid label name "__name__"/,
  );
  assert.throws(() => renderMetrics([{ name: 'h', help: '', type: 'histogram', samples: [{ value: 1 }] }]), /a histogram cannot have a sample with suffix ""/);
  assert.throws(() => renderMetrics([{ name: 'c', help: '', type: 'counter', samples: [{ suffix: '_sum', value: 1 }] }]), /a counter cannot/);
  assert.throws(
    () => renderMetrics([{ name: 'g', help: '', type: 'gauge', samples: [{ labels: { q: 'a' }, value: 1 }, { labels: { q: 'a' }, value: 2 }] }]),
    /series g\{q="a"\} appears twice/,
  );
  assert.throws(
    () => renderMetrics([{ name: 'g', help: '', type: 'gauge', samples: [] }, { name: 'g', help: '', type: 'gauge', samples: [] }]),
    /metric g is listed twice/,
  );
});

test('histogramSamples turns per-bucket counts into cumulative buckets, sum and count', () => {
  const s = histogramSamples('h', [0.5, 1, 5], [2, 0, 3, 1], 9.75, { queue: 'q' });
  assert.deepEqual(
    s.map((x) => [x.suffix, x.labels?.le ?? null, x.value]),
    [['_bucket', '0.5', 2], ['_bucket', '1', 2], ['_bucket', '5', 5], ['_bucket', '+Inf', 6], ['_sum', null, 9.75], ['_count', null, 6]],
  );
  assert.throws(() => histogramSamples('h', [1, 2], [1, 2], 0), /histogram h: 2 bucket counts for 2 bounds/);
  assert.throws(() => histogramSamples('h', [1, 1], [0, 0, 0], 0), /bounds must increase, got 1 then 1/);
});

test('workerMetricFamilies labels every worker by queue and leaves out a backlog that could not be read', () => {
  const score = metricsOf(SCORE_QUEUE, { processed: 4, failed: 1, images: 96, running: 1 });
  score.durationCounts[3] = 5;
  score.durationSumSeconds = 7.5;
  const samples = parseExposition(
    renderMetrics(
      workerMetricFamilies(
        [
          { metrics: score, ready: true, queueCounts: { waiting: 7, active: 1, delayed: 2 } },
          { metrics: metricsOf(REPORT_QUEUE), ready: false, queueCounts: null },
        ],
        DURATION_BUCKETS_S,
        { residentMemoryBytes: 1024, cpuSeconds: 1.5, startTimeSeconds: 1700000000.25 },
      ),
    ),
  );
  assert.equal(samples.get('patchcore_worker_jobs_processed_total{queue="patchcore-score"}'), 4);
  assert.equal(samples.get('patchcore_worker_images_processed_total{queue="patchcore-score"}'), 96);
  assert.equal(samples.get('patchcore_worker_job_duration_seconds_bucket{queue="patchcore-score",le="1"}'), 0);
  assert.equal(samples.get('patchcore_worker_job_duration_seconds_bucket{queue="patchcore-score",le="2"}'), 5);
  assert.equal(samples.get('patchcore_worker_job_duration_seconds_bucket{queue="patchcore-score",le="+Inf"}'), 5);
  assert.equal(samples.get('patchcore_worker_job_duration_seconds_count{queue="patchcore-score"}'), 5);
  assert.equal(samples.get('patchcore_queue_jobs{queue="patchcore-score",state="delayed"}'), 2);
  assert.equal(samples.get('patchcore_queue_scrape_success{queue="patchcore-score"}'), 1);
  assert.equal(samples.get('patchcore_queue_scrape_success{queue="patchcore-report"}'), 0);
  assert.equal(samples.get('patchcore_worker_ready{queue="patchcore-report"}'), 0);
  assert.ok(![...samples.keys()].some((k) => k.startsWith('patchcore_queue_jobs{queue="patchcore-report"')));
  assert.equal(samples.get('process_start_time_seconds'), 1700000000.25);
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

test('a live worker serves /metrics: job counts, durations, images, backlog of its queue and of an exported peer', async () => {
  // A peer as the scorer's report worker would be: no endpoint of its own, shown through this one.
  const reportMetrics = metricsOf(REPORT_QUEUE, { processed: 1, images: 0 });
  const handle = await startWorker({
    queue: SCORE_QUEUE,
    connection: conn,
    logger: pino({ level: 'silent' }),
    handleSignals: false,
    healthPort: 0,
    healthHost: '127.0.0.1',
    workerOptions: { drainDelay: 1 },
    alsoExport: () => [{ metrics: reportMetrics, health: () => ({ ready: { status: 'ok' } as never }) }],
    handler: async (p) => {
      if (p.shardId === 'boom') throw new Error('decoder exploded');
      return { shardId: p.shardId, images: p.imageKeys.length };
    },
  });
  try {
    await handle.worker.waitUntilReady();
    await scoreQueue.add('score-shard', payload('run-1', '0000', 2), { jobId: 'run-1~score~0000' });
    await scoreQueue.add('score-shard', payload('run-1', '0001', 3), { jobId: 'run-1~score~0001' });
    await scoreQueue.add('score-shard', payload('run-1', 'boom', 1), { jobId: 'run-1~score~boom' });
    await scoreQueue.add('score-shard', payload('run-2', '0000', 4), { jobId: 'later', delay: 60_000 });
    await reportQueue.add('report', { runId: 'run-1' }, { jobId: 'r1' });
    await reportQueue.add('report', { runId: 'run-3' }, { jobId: 'r3' });
    await waitFor('three jobs to finish', async () => (handle.metrics.processed + handle.metrics.failed === 3 ? true : null));

    const res = await fetch(`http://127.0.0.1:${handle.port}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), PROMETHEUS_CONTENT_TYPE);
    const m = parseExposition(await res.text());
    const q = 'queue="patchcore-score"';
    assert.equal(m.get(`patchcore_worker_jobs_processed_total{${q}}`), 2);
    assert.equal(m.get(`patchcore_worker_jobs_failed_total{${q}}`), 1);
    assert.equal(m.get(`patchcore_worker_jobs_handed_back_total{${q}}`), 0);
    assert.equal(m.get(`patchcore_worker_jobs_running{${q}}`), 0);
    assert.equal(m.get(`patchcore_worker_images_processed_total{${q}}`), 5, 'images of the two processed shards, not of the failed one');
    assert.equal(m.get(`patchcore_worker_job_duration_seconds_count{${q}}`), 3);
    assert.equal(m.get(`patchcore_worker_job_duration_seconds_bucket{${q},le="+Inf"}`), 3);
    assert.equal(m.get(`patchcore_worker_job_duration_seconds_bucket{${q},le="0.1"}`), 3, 'trivial handlers finish within 0.1 s');
    assert.ok(m.get(`patchcore_worker_job_duration_seconds_sum{${q}}`)! < 0.3);
    assert.equal(m.get(`patchcore_worker_ready{${q}}`), 1);
    assert.equal(m.get(`patchcore_queue_scrape_success{${q}}`), 1);
    assert.equal(m.get(`patchcore_queue_jobs{${q},state="waiting"}`), 0);
    assert.equal(m.get(`patchcore_queue_jobs{${q},state="active"}`), 0);
    assert.equal(m.get(`patchcore_queue_jobs{${q},state="delayed"}`), 1);
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
  }
});
