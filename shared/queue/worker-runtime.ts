// The generic worker: a BullMQ Worker plus what every service needs around it, namely payload
// validation before the handler runs, a per-job logger, counters, a health endpoint (with Prometheus
// metrics on /metrics, see prometheus.ts) and graceful shutdown. Nothing here is process-global except
// the SIGTERM/SIGINT listeners (opt out with handleSignals: false), so one process can run several
// workers, e.g. in tests.
//
// Shutdown (close() or the first SIGTERM/SIGINT):
//   1. stop taking jobs and let running ones finish, for up to `shutdownGraceMs`;
//   2. when the grace period runs out (or a second signal arrives), hand every still-running job back:
//      it is moved from active to waiting with its lock token released, so another worker starts it at
//      once and the attempt does not count, then the handler's AbortSignal fires.
// We hand jobs back explicitly rather than rely on BullMQ's force close, which leaves them locked
// until the lock expires and then counts them as stalled: a job stalled more than maxStalledCount
// times fails, so a few rolling deploys would fail long jobs. A handler that ignores the signal
// keeps running until the process exits; its late result is then refused by Redis (lock lost).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Queue, UnrecoverableError, WaitingError, Worker, type Job, type WorkerOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { DEFAULT_QUEUE_PREFIX, MAX_STALLED_COUNT, stalledIntervalMs } from './config.js';
import { KIND_OF_QUEUE, validatePayload, type JobPayloads, type KindOfQueue, type QueueName } from './jobs.js';
import { PROMETHEUS_CONTENT_TYPE, renderMetrics, workerMetricFamilies, type QueueJobCounts, type WorkerExposition } from './prometheus.js';

export interface JobContext {
  job: Job;
  /** Child logger carrying { runId, jobId, queue, attempt }. */
  log: Logger;
  /** 1 for the first try. */
  attempt: number;
  /** Fires when the worker hands the job back during shutdown; long loops should check it. */
  signal: AbortSignal;
  /** Progress shown by `status` (a percentage or a small object). */
  progress(value: number | object): Promise<void>;
}

export type JobHandler<Q extends QueueName, R = unknown> = (payload: JobPayloads[KindOfQueue<Q>], ctx: JobContext) => Promise<R>;

export interface StartWorkerOptions<Q extends QueueName, R> {
  queue: Q;
  connection: Redis;
  handler: JobHandler<Q, R>;
  logger: Logger;
  /** Jobs run at once by this worker; default 1. */
  concurrency?: number;
  /** Queue key prefix; must match the producers' (QUEUE_PREFIX). Default 'bull'. */
  prefix?: string;
  /**
   * Job lock lifetime in ms, default 60000. BullMQ renews it at half that from a timer, so a handler
   * that blocks the event loop longer than this loses the job to the stalled checker.
   */
  lockDuration?: number;
  /** Port of the health endpoint; 0 = any free port; undefined/null = no endpoint. */
  healthPort?: number | null;
  /** Default 0.0.0.0, so that Kubernetes probes reach it. */
  healthHost?: string;
  /** How long close() lets running jobs finish before handing them back; default 30000. */
  shutdownGraceMs?: number;
  /** Close on SIGTERM/SIGINT (a second signal hands running jobs back at once); default true. */
  handleSignals?: boolean;
  /**
   * Other workers of this process, on the same connection and prefix, that /metrics also shows (with their
   * queues' backlog): a process serving two queues has one health endpoint. Called at every scrape.
   */
  alsoExport?: () => Iterable<{ metrics: WorkerMetrics; health(): { ready: HealthReport } }>;
  /** Further BullMQ worker options (stalledInterval, maxStalledCount, drainDelay, ...). */
  workerOptions?: Partial<Omit<WorkerOptions, 'connection' | 'prefix' | 'concurrency' | 'autorun'>>;
}

/** Upper bounds (seconds) of the job-duration histogram, exported as they are on /metrics. */
export const DURATION_BUCKETS_S = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800] as const;

export interface WorkerMetrics {
  readonly queue: QueueName;
  /** Attempts whose handler returned. */
  processed: number;
  /** Attempts whose handler threw (a job retried twice and then failing counts 3). */
  failed: number;
  /** Jobs handed back unfinished at shutdown. */
  handedBack: number;
  /** Jobs running now. */
  running: number;
  /** Images reported by processed attempts: the sum of their results' numeric `images` field. */
  images: number;
  /** Handler durations of processed and failed attempts: count per bucket (last = over the top bound). */
  durationCounts: number[];
  durationSumSeconds: number;
  durationCount: number;
}

export type WorkerPhase = 'running' | 'draining' | 'closed';

export interface HealthReport {
  status: 'ok' | 'unavailable';
  reason?: string;
  queue: QueueName;
  phase: WorkerPhase;
  redis: string;
  running: number;
  processed: number;
  failed: number;
}

export interface WorkerHandle {
  /** The BullMQ worker, for events and tests; close through the handle, not through it. */
  worker: Worker;
  /** Bound port of the health endpoint, null when there is none. */
  port: number | null;
  metrics: WorkerMetrics;
  /** Liveness (/healthz) as reported now; `ready` is the /readyz view, false while draining. */
  health(): { live: HealthReport; ready: HealthReport };
  /** Graceful close (see the top of this file); idempotent. `graceMs` overrides shutdownGraceMs. */
  close(opts?: { graceMs?: number }): Promise<void>;
  /** Settles when the worker has closed, whoever closed it (close() or a signal). */
  closed: Promise<void>;
}

function newMetrics(queue: QueueName): WorkerMetrics {
  return {
    queue,
    processed: 0,
    failed: 0,
    handedBack: 0,
    running: 0,
    images: 0,
    durationCounts: new Array<number>(DURATION_BUCKETS_S.length + 1).fill(0),
    durationSumSeconds: 0,
    durationCount: 0,
  };
}

function observeDuration(m: WorkerMetrics, seconds: number): void {
  let b = 0;
  while (b < DURATION_BUCKETS_S.length && seconds > DURATION_BUCKETS_S[b]) b++;
  m.durationCounts[b]++;
  m.durationSumSeconds += seconds;
  m.durationCount++;
}

interface RunningJob {
  job: Job;
  token: string;
  handedBack: boolean;
}

/** How long close() waits for the hand-back, and then for handlers to stop, after the grace period. */
const HAND_BACK_TIMEOUT_MS = 1000;

/** How long a /metrics scrape waits for Redis to count a queue's jobs before it leaves the counts out. */
export const QUEUE_COUNTS_TIMEOUT_MS = 1000;

/** The `images` a handler's result reports (feature and score results do), else 0. */
function imagesOf(result: unknown): number {
  const images = typeof result === 'object' && result !== null ? (result as { images?: unknown }).images : undefined;
  return typeof images === 'number' && Number.isFinite(images) && images > 0 ? images : 0;
}

/** A cancellable timer; `fire()` ends it early. Cancelled timers do not keep the process alive. */
function timer(ms: number): { done: Promise<void>; fire: () => void; cancel: () => void } {
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  const t = setTimeout(resolve, ms);
  return {
    done,
    fire: () => {
      clearTimeout(t);
      resolve();
    },
    cancel: () => clearTimeout(t),
  };
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Starts a worker on `queue`; see StartWorkerOptions. Resolves once the health endpoint listens. */
export async function startWorker<Q extends QueueName, R = unknown>(opts: StartWorkerOptions<Q, R>): Promise<WorkerHandle> {
  const { queue, connection, handler } = opts;
  const kind = KIND_OF_QUEUE[queue];
  if (!kind) throw new Error(`startWorker: unknown queue ${JSON.stringify(queue)}`);
  const concurrency = opts.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new Error(`startWorker: concurrency must be a positive integer, got ${concurrency}`);
  }
  const graceDefault = opts.shutdownGraceMs ?? 30_000;
  const logger = opts.logger.child({ queue });
  const metrics = newMetrics(queue);
  const running = new Map<string, RunningJob>();
  let phase: WorkerPhase = 'running';

  const processor = async (job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<R> => {
    const started = performance.now();
    const attempt = job.attemptsMade + 1;
    const data = job.data as { runId?: unknown } | undefined;
    const runId = typeof data?.runId === 'string' ? data.runId : undefined;
    const log = logger.child({ runId, jobId: job.id, attempt }); // `queue` comes from the worker's logger
    const entry: RunningJob = { job, token: token ?? '', handedBack: false };
    running.set(job.id!, entry);
    metrics.running++;
    try {
      if (job.name !== kind) {
        throw new UnrecoverableError(`job ${job.id} in queue ${queue} is named "${job.name}", expected "${kind}"`);
      }
      let payload: JobPayloads[KindOfQueue<Q>];
      try {
        payload = validatePayload(kind, job.data, job.id) as JobPayloads[KindOfQueue<Q>];
      } catch (err) {
        // Retrying cannot fix a malformed payload.
        throw new UnrecoverableError((err as Error).message);
      }
      log.info('job started');
      const result = await handler(payload, {
        job,
        log,
        attempt,
        signal: signal ?? new AbortController().signal,
        progress: (value) => job.updateProgress(value),
      });
      const seconds = (performance.now() - started) / 1000;
      if (entry.handedBack) {
        log.info({ seconds }, 'handed-back job finished late; its result is dropped');
        // Tells BullMQ the job was moved away already, so it does not try to complete it.
        throw new WaitingError();
      }
      metrics.processed++;
      metrics.images += imagesOf(result);
      observeDuration(metrics, seconds);
      log.info({ seconds }, 'job done');
      return result;
    } catch (err) {
      const seconds = (performance.now() - started) / 1000;
      if (entry.handedBack) {
        if (!(err instanceof WaitingError)) log.info({ seconds }, 'handed-back job stopped');
        throw err instanceof WaitingError ? err : new WaitingError();
      } else {
        metrics.failed++;
        observeDuration(metrics, seconds);
        const unrecoverable = err instanceof UnrecoverableError;
        const willRetry = !unrecoverable && attempt < (job.opts.attempts ?? 1);
        log.error({ err, seconds, willRetry }, 'job failed');
      }
      throw err;
    } finally {
      running.delete(job.id!);
      metrics.running--;
    }
  };

  const worker = new Worker<unknown, R>(queue, processor, {
    connection,
    prefix: opts.prefix ?? DEFAULT_QUEUE_PREFIX,
    concurrency,
    lockDuration: opts.lockDuration ?? 60_000,
    // BullMQ checks for stalled jobs every 30 s whatever the lock; follow the lock so a dead worker's job is
    // taken over soon after its lock expires, and let a job survive a few worker deaths before failing it.
    stalledInterval: stalledIntervalMs(opts.lockDuration ?? 60_000),
    maxStalledCount: MAX_STALLED_COUNT,
    ...opts.workerOptions,
  });
  let lastError = '';
  worker.on('error', (err) => {
    // A dead Redis produces the same error on every retry; log each distinct one once.
    if (err.message === lastError) return;
    lastError = err.message;
    logger.warn({ err: err.message }, 'worker error');
  });
  worker.on('ready', () => {
    lastError = '';
  });

  const report = (forReadiness: boolean): HealthReport => {
    const redis = connection.status;
    let reason: string | undefined;
    if (redis !== 'ready') reason = `redis connection is ${redis}`;
    else if (phase === 'closed') reason = 'worker closed';
    else if (forReadiness && phase === 'draining') reason = 'worker is shutting down';
    return {
      status: reason ? 'unavailable' : 'ok',
      ...(reason ? { reason } : {}),
      queue,
      phase,
      redis,
      running: metrics.running,
      processed: metrics.processed,
      failed: metrics.failed,
    };
  };
  const health = () => ({ live: report(false), ready: report(true) });

  // Queues whose backlog /metrics reads, made at the first scrape; they share the worker's connection.
  const countingQueues = new Map<QueueName, Queue>();
  const countsInFlight = new Map<QueueName, Promise<QueueJobCounts | null>>();
  const readQueueCounts = async (name: QueueName): Promise<QueueJobCounts | null> => {
    // A command on a connection that is down waits for it (the worker's connection never gives up).
    if (connection.status !== 'ready') return null;
    let counts = countsInFlight.get(name);
    if (!counts) {
      let q = countingQueues.get(name);
      if (!q) {
        q = new Queue(name, { connection, prefix: opts.prefix ?? DEFAULT_QUEUE_PREFIX });
        q.on('error', () => {}); // the worker logs connection errors already
        countingQueues.set(name, q);
      }
      const read = q.getJobCounts('wait', 'active', 'delayed').then(
        (c) => ({ waiting: c.wait ?? 0, active: c.active ?? 0, delayed: c.delayed ?? 0 }),
        () => null,
      );
      // A slow read stays the one in flight until Redis answers, so slow scrapes do not pile commands up.
      countsInFlight.set(name, read);
      void read.then(() => countsInFlight.delete(name));
      counts = read;
    }
    const wait = timer(QUEUE_COUNTS_TIMEOUT_MS);
    try {
      return await Promise.race([counts, wait.done.then(() => null)]);
    } finally {
      wait.cancel();
    }
  };

  const serveMetrics = async (res: ServerResponse): Promise<void> => {
    const workers = [{ metrics, ready: report(true).status === 'ok' }];
    for (const other of opts.alsoExport?.() ?? []) {
      workers.push({ metrics: other.metrics, ready: other.health().ready.status === 'ok' });
    }
    const exposed: WorkerExposition[] = await Promise.all(
      workers.map(async (w) => ({ ...w, queueCounts: await readQueueCounts(w.metrics.queue) })),
    );
    const cpu = process.cpuUsage();
    const text = renderMetrics(
      workerMetricFamilies(exposed, DURATION_BUCKETS_S, {
        residentMemoryBytes: process.memoryUsage.rss(),
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        startTimeSeconds: performance.timeOrigin / 1000,
      }),
    );
    res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store' }).end(text);
  };

  let server: Server | undefined;
  let port: number | null = null;
  if (opts.healthPort !== undefined && opts.healthPort !== null) {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method === 'GET' && path === '/metrics') {
        serveMetrics(res).catch((err: unknown) => {
          logger.warn({ err: (err as Error).message }, 'metrics scrape failed');
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics unavailable: ${(err as Error).message}\n`);
        });
        return;
      }
      const body =
        req.method !== 'GET' ? null : path === '/healthz' ? report(false) : path === '/readyz' ? report(true) : null;
      if (!body) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"status":"not found"}');
        return;
      }
      res.writeHead(body.status === 'ok' ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    });
    try {
      port = await listen(server, opts.healthPort, opts.healthHost ?? '0.0.0.0');
    } catch (err) {
      await worker.close(true);
      throw new Error(`health endpoint for ${queue}: cannot listen on port ${opts.healthPort}: ${(err as Error).message}`);
    }
  }

  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing: Promise<void> | undefined;
  let hurry: (() => void) | undefined;

  const handBack = async (): Promise<void> => {
    const jobs = [...running.values()].filter((r) => !r.handedBack);
    for (const r of jobs) r.handedBack = true;
    await Promise.all(
      jobs.map(async (r) => {
        try {
          await r.job.moveToWait(r.token);
          metrics.handedBack++;
          logger.warn({ jobId: r.job.id, runId: (r.job.data as { runId?: string })?.runId }, 'job handed back to the queue');
        } catch (err) {
          logger.error({ jobId: r.job.id, err: (err as Error).message }, 'could not hand job back; it will be recovered as stalled');
        }
      }),
    );
  };

  const drainThenHandBack = async (graceMs: number): Promise<void> => {
    // close(false) stops fetching and resolves once running jobs have finished and been recorded.
    const drained = worker.close(false).then(
      () => true,
      (err: unknown) => {
        logger.warn({ err: (err as Error).message }, 'worker close failed');
        return true;
      },
    );
    const grace = timer(graceMs);
    hurry = grace.fire;
    const finished = await Promise.race([drained, grace.done.then(() => false)]);
    grace.cancel();
    if (finished) return;
    if (running.size > 0) {
      // Bounded: should Redis fail now, the hand-back itself would wait for the connection for ever.
      const handBackWait = timer(HAND_BACK_TIMEOUT_MS);
      await Promise.race([handBack(), handBackWait.done]);
      handBackWait.cancel();
      worker.cancelAllJobs('worker shutting down');
    }
    // Cooperative handlers stop at the abort; do not wait for ones that do not.
    const abortWait = timer(HAND_BACK_TIMEOUT_MS);
    await Promise.race([drained, abortWait.done]);
    abortWait.cancel();
  };

  const close = (closeOpts: { graceMs?: number } = {}): Promise<void> => {
    if (closing) {
      if (closeOpts.graceMs === 0) hurry?.();
      return closing;
    }
    phase = 'draining';
    const graceMs = closeOpts.graceMs ?? graceDefault;
    logger.info({ running: running.size, graceMs }, 'worker closing');
    closing = (async () => {
      if (connection.status !== 'ready') {
        // Without Redis no job can record its result or be handed back, and BullMQ's graceful close
        // would wait for the connection for ever; running jobs are recovered as stalled elsewhere.
        logger.warn({ redis: connection.status, running: running.size }, 'redis unavailable: closing without waiting');
        for (const r of running.values()) r.handedBack = true;
        worker.cancelAllJobs('worker shutting down');
        await worker.close(true).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'worker close failed'));
      } else {
        await drainThenHandBack(graceMs);
      }
      phase = 'closed';
      detachSignals();
      if (server) {
        const s = server;
        await new Promise<void>((r) => {
          s.close(() => r());
          s.closeAllConnections();
        });
      }
      if (countingQueues.size > 0) {
        // They share the worker's connection, so closing them only detaches them; bounded all the same.
        const queuesWait = timer(HAND_BACK_TIMEOUT_MS);
        await Promise.race([Promise.all([...countingQueues.values()].map((q) => q.close().catch(() => {}))), queuesWait.done]);
        queuesWait.cancel();
      }
      logger.info({ processed: metrics.processed, failed: metrics.failed, handedBack: metrics.handedBack }, 'worker closed');
      resolveClosed();
    })();
    return closing;
  };

  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, closing ? 'second signal: handing running jobs back now' : 'signal received: closing');
    void close(closing ? { graceMs: 0 } : {});
  };
  const detachSignals = () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
  if (opts.handleSignals ?? true) {
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  logger.info({ concurrency, healthPort: port }, 'worker started');
  return { worker, port, metrics, health, close, closed };
}
