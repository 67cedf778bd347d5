// Scheduled retraining: a BullMQ job scheduler (cron) puts one `retrain` job per tick on the schedule queue; the
// scheduler worker turns each into a training run. The run id comes from the tick, so a retried tick job
// re-submits the same run (deterministic job ids make that a no-op) rather than a second one. Every run writes a
// new model version, and the category's `latest` pointer moves only when the index worker has written it all.
//
// Guards: `schedule set` checks everything a tick will need (the cron and time zone, the gap between ticks against
// a minimum, the ids the tick's run will have), so a bad schedule is refused when it is set, not at 2 am. A tick
// that finds the category's previous scheduled run still queued or running is skipped and counted.
import { defaultRepeatStrategy, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ObjectStore } from '../../shared/storage/object-store.js';
import { defaultJobOptions, SCHEDULE_QUEUE, validatePayload, type RetrainPayload } from '../../shared/queue/jobs.js';
import { createFlowProducer, runProgress } from '../../shared/queue/flows.js';
import { idProblem } from '../../shared/queue/jobs.js';
import { UserError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { submitTraining, type SubmittedRun } from './submit.js';

export const schedulerId = (category: string) => `retrain-${category}`;

export interface ScheduleSpec extends RetrainPayload {
  /** Cron expression (5 or 6 fields), evaluated in `tz` (default UTC). */
  cron: string;
  tz?: string;
}

/** The shortest gap allowed between two ticks of one schedule (a retraining takes minutes). */
export const MIN_SCHEDULE_INTERVAL_MS = 10 * 60_000;

/** The ticks of `cron` after `from` as BullMQ will compute them (its own strategy), `count` of them. */
export function nextTicks(cron: string, tz: string, count: number, from = Date.now()): number[] {
  const ticks: number[] = [];
  let t = from;
  for (let i = 0; i < count; i++) {
    const next = defaultRepeatStrategy(t, { pattern: cron, tz });
    if (next === undefined) break;
    ticks.push(next);
    t = next;
  }
  return ticks;
}

/** Refuses a schedule that cannot work or would swamp the workers; every message names the input. */
export function checkSchedule(spec: ScheduleSpec, minIntervalMs = MIN_SCHEDULE_INTERVAL_MS): void {
  const tz = spec.tz ?? 'UTC';
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    throw new UserError(`schedule of "${spec.category}": --tz "${tz}" is not a known time zone (e.g. UTC, Europe/Berlin)`);
  }
  const fields = spec.cron.trim().split(/\s+/);
  if (fields.length < 5 || fields.length > 6) {
    throw new UserError(`schedule of "${spec.category}": --cron "${spec.cron}" has ${fields.length} fields; expected 5 (minute hour day month weekday) or 6 (with seconds first)`);
  }
  let ticks: number[];
  try {
    ticks = nextTicks(spec.cron, tz, 50);
  } catch (err) {
    throw new UserError(`schedule of "${spec.category}": --cron "${spec.cron}" is not a valid cron expression: ${(err as Error).message}`);
  }
  if (ticks.length === 0) throw new UserError(`schedule of "${spec.category}": --cron "${spec.cron}" never fires`);
  let gap = Infinity;
  for (let i = 1; i < ticks.length; i++) gap = Math.min(gap, ticks[i] - ticks[i - 1]);
  if (gap < minIntervalMs) {
    throw new UserError(`schedule of "${spec.category}": --cron "${spec.cron}" fires every ${Math.round(gap / 1000)} s at times; the minimum interval between retrainings is ${Math.round(minIntervalMs / 60_000 * 10) / 10} min`);
  }
  // The tick's run id (and the version named after it) must be a valid id: check it with a real tick's time.
  const runId = scheduledRunId(spec.category, ticks[0]);
  const problem = idProblem(runId);
  if (problem) {
    throw new UserError(`schedule of "${spec.category}": the category name is too long or invalid for the run ids of its ticks ("${runId.slice(0, 40)}..." ${problem}); use a category of at most ${128 - scheduledRunId('', ticks[0]).length} characters`);
  }
}

export async function setSchedule(
  connection: Redis, prefix: string, spec: ScheduleSpec, opts: { minIntervalMs?: number } = {},
): Promise<{ id: string; next: number | null }> {
  const { cron, tz, ...payload } = spec;
  const data = validatePayload('retrain', payload, schedulerId(spec.category));
  checkSchedule(spec, opts.minIntervalMs);
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

/** Redis keys of the in-flight guard: the category's last scheduled run, and how many ticks were skipped. */
export const inFlightKey = (prefix: string, category: string) => `${prefix}:patchcore:retrain:${category}:run`;
export const skippedTicksKey = (prefix: string, category: string) => `${prefix}:patchcore:retrain:${category}:skipped`;

/** How many ticks of the category were skipped because its previous run was still going. */
export async function skippedTicks(connection: Redis, prefix: string, category: string): Promise<number> {
  return Number((await connection.get(skippedTicksKey(prefix, category))) ?? 0);
}

const RELEASE_LOCK = `
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`;

export type RetrainOutcome = SubmittedRun | { skipped: true; category: string; runningRunId: string; skippedTicks: number };

export async function runRetrain(
  payload: RetrainPayload, tickMillis: number,
  ctx: { store: ObjectStore; connection: Redis; prefix: string; log: Logger; weights: { file: string; sha256: string } },
): Promise<RetrainOutcome> {
  const runId = scheduledRunId(payload.category, tickMillis);
  const key = inFlightKey(ctx.prefix, payload.category);
  // One tick of a category at a time (two scheduler workers may handle two ticks at once): the check and the
  // submission happen under a short Redis lock, so the second tick sees the first one's run as queued.
  const lock = `${key}:lock`;
  const token = `${process.pid}-${Math.random()}`;
  for (let waited = 0; (await ctx.connection.set(lock, token, 'PX', 60_000, 'NX')) !== 'OK'; waited += 100) {
    if (waited > 120_000) throw new Error(`retraining tick of "${payload.category}": the tick lock ${lock} stayed taken for 2 min`);
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    const previous = await ctx.connection.get(key);
    if (previous && previous !== runId) {
      const p = await runProgress(ctx.connection, previous, 'training', { prefix: ctx.prefix });
      if (p.state === 'queued' || p.state === 'running') {
        const n = await ctx.connection.incr(skippedTicksKey(ctx.prefix, payload.category));
        ctx.log.warn({ category: payload.category, runningRunId: previous, tick: new Date(tickMillis).toISOString(), skippedTicks: n },
          'retraining tick skipped: the previous scheduled run is still going');
        return { skipped: true, category: payload.category, runningRunId: previous, skippedTicks: n };
      }
    }
    await ctx.connection.set(key, runId);
    return await submitScheduledRun(payload, runId, ctx);
  } finally {
    await ctx.connection.eval(RELEASE_LOCK, 1, lock, token);
  }
}

async function submitScheduledRun(
  payload: RetrainPayload, runId: string,
  ctx: { store: ObjectStore; connection: Redis; prefix: string; log: Logger; weights: { file: string; sha256: string } },
): Promise<SubmittedRun> {
  const flows = createFlowProducer(ctx.connection, ctx.prefix);
  try {
    return await submitTraining({ store: ctx.store, flows, log: ctx.log }, {
      dataset: payload.dataset, category: payload.category, recipe: payload.recipe, coresetRatio: payload.coresetRatio,
      perShardCoresetRatio: payload.perShardCoresetRatio ?? null, shardSize: payload.shardSize,
      coresetSize: payload.coresetSize, fanIn: payload.fanIn, validationSplit: payload.validationSplit,
      runId, weights: ctx.weights,
    });
  } finally {
    await flows.close();
  }
}
