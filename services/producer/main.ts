// Scheduler worker: runs the `retrain` jobs that the job schedulers (`patchcore schedule set`) produce, and, with
// GC_INTERVAL_MS set, the bucket's retention (gc) every so often, exporting the bucket's size per prefix on /metrics.
import { Gauge } from 'prom-client';
import { runningService, serviceContext, workerDefaults, type RunningService } from '../../shared/distributed/service.js';
import { sha256File } from '../../shared/pipeline/weights.js';
import { SCHEDULE_QUEUE } from '../../shared/queue/jobs.js';
import { WorkerRuntime } from '../../shared/queue/worker-runtime.js';
import { retentionSettingsFromEnv, startRetentionLoop } from '../../shared/retention/gc.js';
import { runRetrain } from './scheduler.js';

/** A scheduler job's id ends with the tick's time in ms (repeat:<scheduler>:<millis>). */
export function tickOf(jobId: string | undefined, fallback: number): number {
  const m = /:(\d{10,})$/.exec(jobId ?? '');
  return m ? Number(m[1]) : fallback;
}

export async function startScheduler(opts: { handleSignals?: boolean } = {}): Promise<RunningService> {
  const ctx = serviceContext('scheduler');
  const weights = { file: ctx.settings.weightsPath, sha256: await sha256File(ctx.settings.weightsPath) };
  const worker = await new WorkerRuntime(
    SCHEDULE_QUEUE,
    (payload, job) =>
      runRetrain(payload, tickOf(job.job.id, job.job.timestamp), {
        store: ctx.store, connection: ctx.connection, prefix: ctx.redisConfig.prefix, log: job.log, weights,
      }),
    { ...workerDefaults(ctx, opts.handleSignals), concurrency: 1 },
  ).start();
  const retention = retentionSettingsFromEnv();
  const bucketBytes = new Gauge({
    name: 'patchcore_bucket_bytes', help: 'Bytes in the bucket per top-level prefix, as of the last gc pass.',
    labelNames: ['prefix'], registers: [ctx.metrics.registry],
  });
  const gc = retention.intervalMs > 0
    ? startRetentionLoop({
      store: ctx.store, connection: ctx.connection, prefix: ctx.redisConfig.prefix, settings: retention,
      intervalMs: retention.intervalMs, log: ctx.log,
      onUsage: (u) => Object.entries(u.byRoot).forEach(([prefix, bytes]) => bucketBytes.set({ prefix }, bytes)),
    })
    : null;
  return runningService(ctx, [worker], () => gc?.stop());
}
