// The generic worker, in BullMQ's own style: `new WorkerRuntime(queue, handler, opts)` wraps a BullMQ Worker with
// what every service needs around it, namely payload validation before the handler runs, a per-job logger,
// Prometheus metrics (metrics.ts), a health endpoint (health-server.ts: /healthz, /readyz, /metrics) and graceful
// shutdown. `start()` runs it, `close()` stops it, `closed` settles when it has stopped; it emits 'started',
// 'closing', 'handed-back' and 'closed'. Nothing here is process-global except the SIGTERM/SIGINT listeners (opt
// out with handleSignals: false), so one process can run several workers, e.g. in tests.
//
// Errors: a PermanentError (shared/errors.ts; an invalid payload is one) and BullMQ's UnrecoverableError fail the
// job at once, whatever its attempts; any other error is retried with the job's backoff.
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
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { UnrecoverableError, WaitingError, Worker, type Job, type WorkerOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { InvalidPayloadError, isPermanent } from '../errors.js';
import type { Logger } from '../log.js';
import { DEFAULT_QUEUE_PREFIX, MAX_STALLED_COUNT, stalledIntervalMs } from './config.js';
import { HealthServer, jsonAnswer } from './health-server.js';
import { KIND_OF_QUEUE, validatePayload, type JobPayloads, type KindOfQueue, type QueueName } from './jobs.js';
import { WorkerMetrics, type QueueMetrics } from './metrics.js';

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

export interface WorkerRuntimeOptions {
  connection: Redis;
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
   * The process's metrics registry, which /metrics serves; give every worker of a process the same one (a process
   * serving two queues has one health endpoint). Default: a registry of this worker's own.
   */
  metrics?: WorkerMetrics;
  /** Further BullMQ worker options (stalledInterval, maxStalledCount, drainDelay, ...). */
  workerOptions?: Partial<Omit<WorkerOptions, 'connection' | 'prefix' | 'concurrency' | 'autorun'>>;
}

export type WorkerPhase = 'idle' | 'running' | 'draining' | 'closed';

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

export interface WorkerRuntimeEvents {
  started: [port: number | null];
  closing: [];
  'handed-back': [jobId: string];
  closed: [];
}

interface RunningJob {
  job: Job;
  token: string;
  handedBack: boolean;
}

/** How long close() waits for the hand-back, and then for handlers to stop, after the grace period. */
const HAND_BACK_TIMEOUT_MS = 1000;

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

/** Retrying cannot help: BullMQ fails the job at once. Keeps the message (the job's failedReason) and the stack. */
function unrecoverable(err: Error): UnrecoverableError {
  const u = new UnrecoverableError(err.message);
  u.stack = err.stack;
  u.cause = err;
  return u;
}

/** A worker on one queue; see the top of this file. */
export class WorkerRuntime<Q extends QueueName, R = unknown> extends EventEmitter<WorkerRuntimeEvents> {
  /** The BullMQ worker, for its events and tests; close through the runtime, not through it. */
  readonly worker: Worker<unknown, R>;
  /** This queue's series in the process's registry. */
  readonly metrics: QueueMetrics;
  /** The registry /metrics serves. */
  readonly registry: WorkerMetrics;
  /** Settles when the worker has closed, whoever closed it (close() or a signal). */
  readonly closed: Promise<void>;

  readonly #kind: KindOfQueue<Q>;
  readonly #handler: JobHandler<Q, R>;
  readonly #opts: WorkerRuntimeOptions;
  readonly #log: Logger;
  readonly #running = new Map<string, RunningJob>();
  readonly #ownsRegistry: boolean;
  #phase: WorkerPhase = 'idle';
  #server: HealthServer | undefined;
  #closing: Promise<void> | undefined;
  #hurry: (() => void) | undefined;
  #resolveClosed!: () => void;
  readonly #onSignal = (signal: NodeJS.Signals) => {
    this.#log.info({ signal }, this.#closing ? 'second signal: handing running jobs back now' : 'signal received: closing');
    void this.close(this.#closing ? { graceMs: 0 } : {});
  };

  constructor(
    readonly queue: Q,
    handler: JobHandler<Q, R>,
    opts: WorkerRuntimeOptions,
  ) {
    super();
    const kind = KIND_OF_QUEUE[queue] as KindOfQueue<Q> | undefined;
    if (!kind) throw new Error(`WorkerRuntime: unknown queue ${JSON.stringify(queue)}`);
    const concurrency = opts.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(`WorkerRuntime: concurrency must be a positive integer, got ${concurrency}`);
    }
    this.#kind = kind;
    this.#handler = handler;
    this.#opts = opts;
    this.#log = opts.logger.child({ queue });
    this.closed = new Promise<void>((r) => (this.#resolveClosed = r));
    this.#ownsRegistry = !opts.metrics;
    this.registry = opts.metrics ?? new WorkerMetrics();
    const prefix = opts.prefix ?? DEFAULT_QUEUE_PREFIX;
    this.metrics = this.registry.addQueue({ queue, connection: opts.connection, prefix, ready: () => this.#report(true).status === 'ok' });

    const lockDuration = opts.lockDuration ?? 60_000;
    this.worker = new Worker<unknown, R>(queue, (job, token, signal) => this.#process(job, token, signal), {
      connection: opts.connection,
      prefix,
      concurrency,
      lockDuration,
      // BullMQ checks for stalled jobs every 30 s whatever the lock; follow the lock so a dead worker's job is
      // taken over soon after its lock expires, and let a job survive a few worker deaths before failing it.
      stalledInterval: stalledIntervalMs(lockDuration),
      maxStalledCount: MAX_STALLED_COUNT,
      ...opts.workerOptions,
      autorun: false,
    });
    let lastError = '';
    this.worker.on('error', (err) => {
      // A dead Redis produces the same error on every retry; log each distinct one once.
      if (err.message === lastError) return;
      lastError = err.message;
      this.#log.warn({ err: err.message }, 'worker error');
    });
    this.worker.on('ready', () => {
      lastError = '';
    });
    this.worker.on('stalled', (jobId) => {
      this.metrics.stalled();
      this.#log.warn({ jobId }, 'job stalled (its worker stopped renewing the lock); moved back to wait, or failed after too many stalls');
    });
  }

  /** Bound port of the health endpoint; null when there is none (or before start()). */
  get port(): number | null {
    return this.#server?.port ?? null;
  }

  /** Starts the health endpoint (when healthPort is set) and then taking jobs. Resolves once both run. */
  async start(): Promise<this> {
    if (this.#phase !== 'idle') throw new Error(`WorkerRuntime ${this.queue}: start() called twice`);
    const { healthPort } = this.#opts;
    if (healthPort !== undefined && healthPort !== null) {
      const server = new HealthServer(
        {
          '/healthz': async () => this.#answer(false),
          '/readyz': async () => this.#answer(true),
          '/metrics': async () => {
            const { contentType, text } = await this.registry.expose();
            return { status: 200, contentType, body: text };
          },
        },
        this.#log,
      );
      try {
        await server.listen(healthPort, this.#opts.healthHost ?? '0.0.0.0');
      } catch (err) {
        await this.worker.close(true);
        await this.#closeRegistry();
        this.#phase = 'closed';
        this.#resolveClosed();
        throw new Error(`health endpoint for ${this.queue}: cannot listen on port ${healthPort}: ${(err as Error).message}`);
      }
      this.#server = server;
    }
    this.#phase = 'running';
    if (this.#opts.handleSignals ?? true) {
      process.on('SIGTERM', this.#onSignal);
      process.on('SIGINT', this.#onSignal);
    }
    // As BullMQ's own autorun does: run() settles when the worker closes.
    this.worker.run().catch((err: unknown) => this.#log.error({ err: (err as Error).message }, 'worker stopped with an error'));
    this.#log.info({ concurrency: this.#opts.concurrency ?? 1, healthPort: this.port }, 'worker started');
    this.emit('started', this.port);
    return this;
  }

  /** Liveness (/healthz) and readiness (/readyz, false while draining), with this worker's counts. */
  async health(): Promise<{ live: HealthReport; ready: HealthReport }> {
    const { processed, failed } = await this.metrics.snapshot();
    return { live: this.#report(false, processed, failed), ready: this.#report(true, processed, failed) };
  }

  async #answer(forReadiness: boolean) {
    const h = await this.health();
    const report = forReadiness ? h.ready : h.live;
    return jsonAnswer(report, report.status === 'ok');
  }

  #report(forReadiness: boolean, processed = 0, failed = 0): HealthReport {
    const redis = this.#opts.connection.status;
    const phase = this.#phase;
    let reason: string | undefined;
    if (redis !== 'ready') reason = `redis connection is ${redis}`;
    else if (phase === 'closed') reason = 'worker closed';
    else if (phase === 'idle') reason = 'worker not started';
    else if (forReadiness && phase === 'draining') reason = 'worker is shutting down';
    return {
      status: reason ? 'unavailable' : 'ok',
      ...(reason ? { reason } : {}),
      queue: this.queue,
      phase,
      redis,
      running: this.#running.size,
      processed,
      failed,
    };
  }

  async #process(job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<R> {
    const started = performance.now();
    const attempt = job.attemptsMade + 1;
    const data = job.data as { runId?: unknown } | undefined;
    const runId = typeof data?.runId === 'string' ? data.runId : undefined;
    const log = this.#log.child({ runId, jobId: job.id, attempt }); // `queue` comes from the worker's logger
    const entry: RunningJob = { job, token: token ?? '', handedBack: false };
    this.#running.set(job.id!, entry);
    this.metrics.jobStarted();
    try {
      if (job.name !== this.#kind) {
        throw new InvalidPayloadError(`job ${job.id} in queue ${this.queue} is named "${job.name}", expected "${this.#kind}"`);
      }
      let payload: JobPayloads[KindOfQueue<Q>];
      try {
        payload = validatePayload(this.#kind, job.data, job.id) as JobPayloads[KindOfQueue<Q>];
      } catch (err) {
        throw new InvalidPayloadError((err as Error).message, { cause: err });
      }
      log.info('job started');
      const result = await this.#handler(payload, {
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
      this.metrics.processed(seconds, imagesOf(result));
      log.info({ seconds }, 'job done');
      return result;
    } catch (err) {
      const seconds = (performance.now() - started) / 1000;
      if (entry.handedBack) {
        if (!(err instanceof WaitingError)) log.info({ seconds }, 'handed-back job stopped');
        throw err instanceof WaitingError ? err : new WaitingError();
      }
      this.metrics.failed(seconds);
      const permanent = isPermanent(err) || err instanceof UnrecoverableError;
      const willRetry = !permanent && attempt < (job.opts.attempts ?? 1);
      log.error({ err, seconds, willRetry, permanent }, 'job failed');
      throw isPermanent(err) ? unrecoverable(err) : err;
    } finally {
      this.#running.delete(job.id!);
      this.metrics.jobEnded();
    }
  }

  async #handBack(): Promise<void> {
    const jobs = [...this.#running.values()].filter((r) => !r.handedBack);
    for (const r of jobs) r.handedBack = true;
    await Promise.all(
      jobs.map(async (r) => {
        try {
          await r.job.moveToWait(r.token);
          this.metrics.handedBack();
          this.#log.warn({ jobId: r.job.id, runId: (r.job.data as { runId?: string })?.runId }, 'job handed back to the queue');
          this.emit('handed-back', r.job.id!);
        } catch (err) {
          this.#log.error({ jobId: r.job.id, err: (err as Error).message }, 'could not hand job back; it will be recovered as stalled');
        }
      }),
    );
  }

  async #drainThenHandBack(graceMs: number): Promise<void> {
    // close(false) stops fetching and resolves once running jobs have finished and been recorded.
    const drained = this.worker.close(false).then(
      () => true,
      (err: unknown) => {
        this.#log.warn({ err: (err as Error).message }, 'worker close failed');
        return true;
      },
    );
    const grace = timer(graceMs);
    this.#hurry = grace.fire;
    const finished = await Promise.race([drained, grace.done.then(() => false)]);
    grace.cancel();
    if (finished) return;
    if (this.#running.size > 0) {
      // Bounded: should Redis fail now, the hand-back itself would wait for the connection for ever.
      const handBackWait = timer(HAND_BACK_TIMEOUT_MS);
      await Promise.race([this.#handBack(), handBackWait.done]);
      handBackWait.cancel();
      this.worker.cancelAllJobs('worker shutting down');
    }
    // Cooperative handlers stop at the abort; do not wait for ones that do not.
    const abortWait = timer(HAND_BACK_TIMEOUT_MS);
    await Promise.race([drained, abortWait.done]);
    abortWait.cancel();
  }

  async #closeRegistry(): Promise<void> {
    if (!this.#ownsRegistry) return;
    // Its queue readers share the worker's connection, so closing them only detaches them; bounded all the same.
    const wait = timer(HAND_BACK_TIMEOUT_MS);
    await Promise.race([this.registry.close(), wait.done]);
    wait.cancel();
  }

  /** Graceful close (see the top of this file); idempotent. `graceMs` overrides shutdownGraceMs; 0 while closing hurries it. */
  close(opts: { graceMs?: number } = {}): Promise<void> {
    if (this.#closing) {
      if (opts.graceMs === 0) this.#hurry?.();
      return this.#closing;
    }
    this.#phase = 'draining';
    const graceMs = opts.graceMs ?? this.#opts.shutdownGraceMs ?? 30_000;
    this.#log.info({ running: this.#running.size, graceMs }, 'worker closing');
    this.emit('closing');
    this.#closing = (async () => {
      const { connection } = this.#opts;
      if (connection.status !== 'ready') {
        // Without Redis no job can record its result or be handed back, and BullMQ's graceful close
        // would wait for the connection for ever; running jobs are recovered as stalled elsewhere.
        this.#log.warn({ redis: connection.status, running: this.#running.size }, 'redis unavailable: closing without waiting');
        for (const r of this.#running.values()) r.handedBack = true;
        this.worker.cancelAllJobs('worker shutting down');
        await this.worker.close(true).catch((err: unknown) => this.#log.warn({ err: (err as Error).message }, 'worker close failed'));
      } else {
        await this.#drainThenHandBack(graceMs);
      }
      this.#phase = 'closed';
      process.off('SIGTERM', this.#onSignal);
      process.off('SIGINT', this.#onSignal);
      await this.#server?.close();
      await this.#closeRegistry();
      const m = await this.metrics.snapshot();
      this.#log.info({ processed: m.processed, failed: m.failed, handedBack: m.handedBack }, 'worker closed');
      this.#resolveClosed();
      this.emit('closed');
    })();
    return this.#closing;
  }
}
