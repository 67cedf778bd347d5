// Scheduled retraining: a BullMQ job scheduler (cron) puts one `retrain` job per tick on the schedule queue; the
// scheduler worker turns each into a training run. The run id comes from the tick, so a retried tick job
// re-submits the same run (deterministic job ids make that a no-op) rather than a second one. Every run writes a
// new model version, and the category's `latest` pointer moves only when the index worker has written it all.
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ObjectStore } from '../../shared/storage/object-store.js';
import { defaultJobOptions, SCHEDULE_QUEUE, validatePayload, type RetrainPayload } from '../../shared/queue/jobs.js';
import { createFlowProducer } from '../../shared/queue/flows.js';
import type { Logger } from '../../shared/log.js';
import { submitTraining, type SubmittedRun } from './submit.js';

export const schedulerId = (category: string) => `retrain-${category}`;

export interface ScheduleSpec extends RetrainPayload {
  /** Cron expression (5 or 6 fields), evaluated in `tz` (default UTC). */
  cron: string;
  tz?: string;
}

export async function setSchedule(connection: Redis, prefix: string, spec: ScheduleSpec): Promise<{ id: string; next: number | null }> {
  const { cron, tz, ...payload } = spec;
  const data = validatePayload('retrain', payload, schedulerId(spec.category));
  const queue = new Queue(SCHEDULE_QUEUE, { connection, prefix });
  try {
    const job = await queue.upsertJobScheduler(
      schedulerId(spec.category),
      { pattern: cron, tz: tz ?? 'UTC' },
      { name: 'retrain', data, opts: { attempts: defaultJobOptions.attempts, backoff: defaultJobOptions.backoff, removeOnComplete: 100, removeOnFail: 100 } },
    );
    const delay = job?.opts.delay;
    return { id: schedulerId(spec.category), next: job ? job.timestamp + (typeof delay === 'number' ? delay : 0) : null };
  } catch (err) {
    throw new Error(`cannot schedule retraining of "${spec.category}" with cron "${cron}": ${(err as Error).message}`);
  } finally {
    await queue.close();
  }
}

export async function listSchedules(connection: Redis, prefix: string) {
  const queue = new Queue(SCHEDULE_QUEUE, { connection, prefix });
  try {
    return await queue.getJobSchedulers();
  } finally {
    await queue.close();
  }
}

export async function removeSchedule(connection: Redis, prefix: string, category: string): Promise<boolean> {
  const queue = new Queue(SCHEDULE_QUEUE, { connection, prefix });
  try {
    return await queue.removeJobScheduler(schedulerId(category));
  } finally {
    await queue.close();
  }
}

/** The run id of a scheduler tick: the category and the tick's time, so retries of the tick map to one run. */
export function scheduledRunId(category: string, tickMillis: number): string {
  const stamp = new Date(tickMillis).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `train-${category}-${stamp}-sched`;
}

export async function runRetrain(
  payload: RetrainPayload, tickMillis: number,
  ctx: { store: ObjectStore; connection: Redis; prefix: string; log: Logger; weights: { file: string; sha256: string } },
): Promise<SubmittedRun> {
  const flows = createFlowProducer(ctx.connection, ctx.prefix);
  try {
    return await submitTraining({ store: ctx.store, flows, log: ctx.log }, {
      dataset: payload.dataset, category: payload.category, recipe: payload.recipe, coresetRatio: payload.coresetRatio,
      perShardCoresetRatio: payload.perShardCoresetRatio ?? null, shardSize: payload.shardSize,
      runId: scheduledRunId(payload.category, tickMillis), weights: ctx.weights,
    });
  } finally {
    await flows.close();
  }
}
