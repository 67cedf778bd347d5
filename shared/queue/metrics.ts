// Prometheus metrics of a worker process, with prom-client: one Registry per process, which /metrics serves
// (see worker-runtime.ts). Every worker of the process adds its queue to it, so a process serving two queues
// (the scorer) shows both on one endpoint.
//
// Series (every one labelled with the BullMQ queue name); names and labels are a contract (k8s PodMonitor, KEDA
// docs, dashboards: docs/deploy.md):
//   patchcore_worker_jobs_processed_total / _failed_total / _handed_back_total   counters of job attempts
//   patchcore_worker_jobs_stalled_total       jobs this worker's stalled checker took back from a dead worker
//   patchcore_worker_jobs_running                                                gauge
//   patchcore_worker_job_duration_seconds                                        histogram of handler time
//   patchcore_worker_images_processed_total   images reported by finished jobs (rate() of it is images/s)
//   patchcore_worker_ready                    1 while the worker takes jobs (the /readyz view)
//   patchcore_queue_jobs{state="waiting|active|delayed|failed"}   the queue's jobs by state, read from Redis per scrape
//   patchcore_queue_scrape_success            0 when that read failed or timed out (the counts are then absent)
// plus prom-client's default process_* and nodejs_* series (memory, CPU, start time, event loop, GC).
//
// BullMQ's own Queue#exportPrometheusMetrics is not used: it writes HELP/TYPE per queue (two queues in one process
// would give an invalid exposition), reads every state plus its metrics sets with no timeout, and its
// completed/failed totals need the workers' `metrics` option; Queue#getJobCounts, which it calls, is used instead.
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueName } from './jobs.js';

/** Upper bounds (seconds) of the job-duration histogram, exported as they are on /metrics. */
export const DURATION_BUCKETS_S = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800] as const;

/** How long a /metrics scrape waits for Redis to count a queue's jobs before it leaves the counts out. */
export const QUEUE_COUNTS_TIMEOUT_MS = 1000;

/** The job states `patchcore_queue_jobs` shows, as BullMQ's getJobCounts names them -> the `state` label. */
const COUNTED_STATES = { wait: 'waiting', active: 'active', delayed: 'delayed', failed: 'failed' } as const;

export type QueueJobCounts = Record<(typeof COUNTED_STATES)[keyof typeof COUNTED_STATES], number>;

/** What one worker reports about its queue: where its jobs live in Redis, and whether it takes jobs now. */
export interface QueueSource {
  queue: QueueName;
  connection: Redis;
  prefix: string;
  ready(): boolean;
}

/** The counters of one queue's worker, read back (for /healthz and tests). */
export interface QueueMetricsSnapshot {
  processed: number;
  failed: number;
  handedBack: number;
  stalled: number;
  running: number;
  images: number;
  /** Number and total seconds of the processed and failed attempts the duration histogram holds. */
  durationCount: number;
  durationSumSeconds: number;
}

/** Reads one queue's job counts for a scrape: at most one read in flight, given up after QUEUE_COUNTS_TIMEOUT_MS. */
class QueueCounter {
  #queue: Queue | undefined;
  #inFlight: Promise<QueueJobCounts | null> | undefined;
  #scrape: Promise<QueueJobCounts | null> | undefined;

  constructor(readonly source: QueueSource) {}

  /** One answer per scrape: the collectors of both queue gauges run in the same tick and share it. */
  read(): Promise<QueueJobCounts | null> {
    if (!this.#scrape) {
      this.#scrape = this.#readWithTimeout();
      void this.#scrape.then(() => (this.#scrape = undefined));
    }
    return this.#scrape;
  }

  async #readWithTimeout(): Promise<QueueJobCounts | null> {
    const { connection, queue, prefix } = this.source;
    // A command on a connection that is down waits for it (a worker's connection never gives up).
    if (connection.status !== 'ready') return null;
    if (!this.#inFlight) {
      if (!this.#queue) {
        this.#queue = new Queue(queue, { connection, prefix });
        this.#queue.on('error', () => {}); // the worker logs connection errors already
      }
      const read = this.#queue.getJobCounts(...(Object.keys(COUNTED_STATES) as (keyof typeof COUNTED_STATES)[])).then(
        (c) => Object.fromEntries(Object.entries(COUNTED_STATES).map(([bull, state]) => [state, c[bull] ?? 0])) as QueueJobCounts,
        () => null,
      );
      // A slow read stays the one in flight until Redis answers, so slow scrapes do not pile commands up.
      this.#inFlight = read;
      void read.then(() => (this.#inFlight = undefined));
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), QUEUE_COUNTS_TIMEOUT_MS)));
    try {
      return await Promise.race([this.#inFlight, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The Queue shares the worker's connection, so closing it only detaches it. */
  async close(): Promise<void> {
    await this.#queue?.close().catch(() => {});
  }
}

/** The metrics registry of a worker process; give the same one to every worker of the process. */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly #queues = new Map<QueueName, QueueCounter>();

  readonly #processed = this.#counter('patchcore_worker_jobs_processed_total', 'Job attempts whose handler returned.');
  readonly #failed = this.#counter('patchcore_worker_jobs_failed_total', 'Job attempts whose handler threw (each retry counts).');
  readonly #handedBack = this.#counter('patchcore_worker_jobs_handed_back_total', 'Jobs handed back to the queue unfinished at shutdown.');
  readonly #stalled = this.#counter(
    'patchcore_worker_jobs_stalled_total',
    "Jobs this worker's stalled checker found without a live lock (their worker died) and moved back to wait; " +
      'one stalled more than maxStalledCount times then fails.',
  );
  readonly #images = this.#counter(
    'patchcore_worker_images_processed_total',
    'Images reported by processed jobs (the numeric "images" of their results); rate() gives images per second.',
  );
  readonly #running = new Gauge({ name: 'patchcore_worker_jobs_running', help: 'Jobs running now.', labelNames: ['queue'], registers: [this.registry] });
  readonly #duration = new Histogram({
    name: 'patchcore_worker_job_duration_seconds',
    help: 'Handler duration of processed and failed job attempts.',
    labelNames: ['queue'],
    buckets: [...DURATION_BUCKETS_S],
    registers: [this.registry],
  });

  constructor(opts: { processMetrics?: boolean } = {}) {
    const queues = this.#queues;
    new Gauge({
      name: 'patchcore_worker_ready',
      help: '1 while the worker takes jobs (Redis connected, not shutting down), else 0.',
      labelNames: ['queue'],
      registers: [this.registry],
      collect() {
        for (const [queue, q] of queues) this.set({ queue }, q.source.ready() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'patchcore_queue_jobs',
      help: 'Jobs in the queue by state, read from Redis at scrape time.',
      labelNames: ['queue', 'state'],
      registers: [this.registry],
      async collect() {
        this.reset(); // a queue whose read fails this time shows no counts rather than old ones
        await Promise.all(
          [...queues].map(async ([queue, q]) => {
            const counts = await q.read();
            if (counts) for (const [state, n] of Object.entries(counts)) this.set({ queue, state }, n);
          }),
        );
      },
    });
    new Gauge({
      name: 'patchcore_queue_scrape_success',
      help: '1 when the queue counts were read at this scrape, 0 when Redis failed or timed out.',
      labelNames: ['queue'],
      registers: [this.registry],
      async collect() {
        await Promise.all([...queues].map(async ([queue, q]) => this.set({ queue }, (await q.read()) ? 1 : 0)));
      },
    });
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  #counter(name: string, help: string): Counter<'queue'> {
    return new Counter({ name, help, labelNames: ['queue'], registers: [this.registry] });
  }

  /** Adds a worker's queue; every series of it starts at 0. One worker per queue and registry. */
  addQueue(source: QueueSource): QueueMetrics {
    const { queue } = source;
    if (this.#queues.has(queue)) throw new Error(`metrics: queue ${queue} already has a worker in this registry`);
    this.#queues.set(queue, new QueueCounter(source));
    for (const c of [this.#processed, this.#failed, this.#handedBack, this.#stalled, this.#images]) c.inc({ queue }, 0);
    this.#running.set({ queue }, 0);
    this.#duration.zero({ queue });
    return new QueueMetrics(queue, {
      processed: this.#processed,
      failed: this.#failed,
      handedBack: this.#handedBack,
      stalled: this.#stalled,
      images: this.#images,
      running: this.#running,
      duration: this.#duration,
    });
  }

  /** The exposition text and its content type, as /metrics serves them. */
  async expose(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }

  /** Detaches the queue readers (not the connections: their owners close those). */
  async close(): Promise<void> {
    await Promise.all([...this.#queues.values()].map((q) => q.close()));
  }
}

interface QueueSeries {
  processed: Counter<'queue'>;
  failed: Counter<'queue'>;
  handedBack: Counter<'queue'>;
  stalled: Counter<'queue'>;
  images: Counter<'queue'>;
  running: Gauge<'queue'>;
  duration: Histogram<'queue'>;
}

/** One queue's view of the registry: what its worker records. */
export class QueueMetrics {
  readonly #labels: { queue: QueueName };
  readonly #series: QueueSeries;

  constructor(
    readonly queue: QueueName,
    series: QueueSeries,
  ) {
    this.#labels = { queue };
    this.#series = series;
  }

  jobStarted(): void {
    this.#series.running.inc(this.#labels);
  }

  jobEnded(): void {
    this.#series.running.dec(this.#labels);
  }

  processed(seconds: number, images: number): void {
    this.#series.processed.inc(this.#labels);
    if (images > 0) this.#series.images.inc(this.#labels, images);
    this.#series.duration.observe(this.#labels, seconds);
  }

  failed(seconds: number): void {
    this.#series.failed.inc(this.#labels);
    this.#series.duration.observe(this.#labels, seconds);
  }

  handedBack(): void {
    this.#series.handedBack.inc(this.#labels);
  }

  stalled(): void {
    this.#series.stalled.inc(this.#labels);
  }

  /** The current values of this queue's series. */
  async snapshot(): Promise<QueueMetricsSnapshot> {
    const s = this.#series;
    const valueOf = async (m: Counter<'queue'> | Gauge<'queue'>) =>
      (await m.get()).values.find((v) => v.labels.queue === this.queue)?.value ?? 0;
    const duration = (await s.duration.get()).values.filter((v) => v.labels.queue === this.queue);
    const named = (suffix: string) => duration.find((v) => v.metricName === `patchcore_worker_job_duration_seconds${suffix}`)?.value ?? 0;
    return {
      processed: await valueOf(s.processed),
      failed: await valueOf(s.failed),
      handedBack: await valueOf(s.handedBack),
      stalled: await valueOf(s.stalled),
      running: await valueOf(s.running),
      images: await valueOf(s.images),
      durationCount: named('_count'),
      durationSumSeconds: named('_sum'),
    };
  }
}
