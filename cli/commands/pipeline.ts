// The distributed pipeline's commands: workers, dataset upload, run submission, status and report download.
// Redis and S3 come from the environment (REDIS_URL, QUEUE_PREFIX, S3_*; see the README).
import { resolve } from 'node:path';
import { z } from 'zod';
import { RECIPE_NAMES } from '../../shared/features/recipes.js';
import { createLogger } from '../../shared/log.js';
import { defaultWeightsPath } from '../../shared/paths.js';
import { sha256File } from '../../shared/pipeline/weights.js';
import { startProgress } from '../../shared/run/progress.js';
import { createRedisConnection, redisConfigFromEnv } from '../../shared/queue/config.js';
import { createFlowProducer, runProgress, type RunKind, type RunProgress } from '../../shared/queue/flows.js';
import { reportPrefix } from '../../shared/storage/keys.js';
import { ObjectStore } from '../../shared/storage/object-store.js';
import { listSchedules, removeSchedule, setSchedule } from '../../services/producer/scheduler.js';
import { ingestDataset, runKindOf, submitEvaluation, submitTraining, waitForRun } from '../../services/producer/submit.js';
import { UsageError, intFlag, numberFlag, parseCommand, sizeOrNone } from '../args.js';

const positiveInt = intFlag.refine((n) => n > 0, { message: 'expected a positive integer' });
const ratio = numberFlag.refine((r) => r > 0 && r <= 1, { message: 'expected a ratio in (0, 1]' });

export const WORKER_USAGE = `patchcore worker <features|index|score|scheduler>
  Runs one worker of the distributed pipeline until SIGTERM/SIGINT (what each service's container runs).
  Configuration from the environment: REDIS_URL, QUEUE_PREFIX, S3_ENDPOINT, S3_BUCKET, S3_REGION,
  S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_FORCE_PATH_STYLE, WORKER_CONCURRENCY, HEALTH_PORT,
  SHUTDOWN_GRACE_MS, LOCK_DURATION_MS, PATCHCORE_WEIGHTS, PATCHCORE_ENGINE, BATCH_SIZE, MODEL_CACHE_DIR.`;

export async function workerCommand(argv: string[]): Promise<void> {
  const { kind } = parseCommand('worker', argv, {},
    z.object({ kind: z.enum(['features', 'index', 'score', 'scheduler'], { error: 'expected features, index, score or scheduler' }) }), ['kind']);
  const starters = {
    features: async () => (await import('../../services/feature-worker/main.js')).startFeatureWorker(),
    index: async () => (await import('../../services/index-worker/main.js')).startIndexWorker(),
    score: async () => (await import('../../services/scorer/main.js')).startScorer(),
    scheduler: async () => (await import('../../services/producer/main.js')).startScheduler(),
  };
  const service = await starters[kind]();
  await Promise.all(service.handles.map((h) => h.closed));
  await service.close();
}

function producerContext(name: string) {
  const log = createLogger(name);
  const store = ObjectStore.fromEnv();
  const redisConfig = redisConfigFromEnv();
  const connection = createRedisConnection(redisConfig, { mode: 'fail-fast', connectionName: name, logger: log });
  const flows = createFlowProducer(connection, redisConfig.prefix);
  const close = async () => {
    await flows.close();
    await connection.quit().catch(() => connection.disconnect());
    store.destroy();
  };
  return { log, store, connection, flows, prefix: redisConfig.prefix, close };
}

export const INGEST_USAGE = `patchcore ingest <category dir> --dataset <name>
  Uploads a local MVTec-style folder to datasets/<name>/ in the bucket (S3_* variables).`;

export async function ingestCommand(argv: string[]): Promise<void> {
  const opts = parseCommand('ingest', argv, { dataset: { type: 'string' } },
    z.object({ dir: z.string({ error: 'is required' }), dataset: z.string({ error: 'is required' }) }), ['dir']);
  const store = ObjectStore.fromEnv();
  try {
    await store.ensureBucket();
    const r = await ingestDataset(store, resolve(opts.dir), opts.dataset);
    process.stdout.write(JSON.stringify({ dataset: opts.dataset, prefix: r.prefix, files: r.files }) + '\n');
  } finally {
    store.destroy();
  }
}

export const SUBMIT_USAGE = `patchcore submit train --dataset <name> [options]
  --category <name>          model category (default: the dataset name)
  --recipe paper|seed        (default paper)   --coreset-ratio <r>  (default: the recipe's)
  --per-shard-coreset <r>    reduce each shard with its own coreset first (merge-and-reduce)
  --shard-size <n>           images per shard (default 32)     --batch-size <n>  (default 8)
  --seed <n>  --resize <n|none>  --crop <n|none>  --run-id <id>  --version <id>
  --weights <h5>             the weights file the workers use (its sha256 goes into the jobs)
  --wait                     wait for the run and show its progress
patchcore submit evaluate --dataset <name> [--category <name>] [--model-version <v>|latest] [--shard-size <n>]
                          [--run-id <id>] [--wait]`;

export async function submitCommand(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (what !== 'train' && what !== 'evaluate') throw new UsageError('patchcore submit: expected "train" or "evaluate"');
  const ctx = producerContext('producer');
  try {
    let submitted;
    if (what === 'train') {
      const o = parseCommand('submit train', rest, {
        dataset: { type: 'string' }, category: { type: 'string' }, recipe: { type: 'string' },
        'coreset-ratio': { type: 'string' }, 'per-shard-coreset': { type: 'string' }, 'shard-size': { type: 'string' },
        'batch-size': { type: 'string' }, seed: { type: 'string' }, resize: { type: 'string' }, crop: { type: 'string' },
        'run-id': { type: 'string' }, version: { type: 'string' }, weights: { type: 'string' }, wait: { type: 'boolean' },
      }, z.object({
        dataset: z.string({ error: 'is required' }), category: z.string().optional(), recipe: z.enum(RECIPE_NAMES).default('paper'),
        'coreset-ratio': ratio.optional(), 'per-shard-coreset': ratio.optional(), 'shard-size': positiveInt.default(32),
        'batch-size': positiveInt.default(8), seed: intFlag.default(0), resize: sizeOrNone.default(256), crop: sizeOrNone.default(224),
        'run-id': z.string().optional(), version: z.string().optional(),
        weights: z.string().default(() => defaultWeightsPath()), wait: z.boolean().default(false),
      }));
      const weightsPath = resolve(o.weights);
      submitted = await submitTraining(ctx, {
        dataset: o.dataset, category: o.category, recipe: o.recipe, coresetRatio: o['coreset-ratio'],
        perShardCoresetRatio: o['per-shard-coreset'] ?? null, shardSize: o['shard-size'], batchSize: o['batch-size'],
        seed: o.seed, frame: { resize: o.resize, crop: o.crop }, runId: o['run-id'], version: o.version,
        weights: { file: weightsPath, sha256: await sha256File(weightsPath) },
      });
      process.stdout.write(JSON.stringify(submitted) + '\n');
      if (o.wait) await waitAndPrint(ctx, submitted.runId, 'training');
    } else {
      const o = parseCommand('submit evaluate', rest, {
        dataset: { type: 'string' }, category: { type: 'string' }, 'model-version': { type: 'string' },
        'shard-size': { type: 'string' }, 'run-id': { type: 'string' }, wait: { type: 'boolean' },
      }, z.object({
        dataset: z.string({ error: 'is required' }), category: z.string().optional(), 'model-version': z.string().default('latest'),
        'shard-size': positiveInt.default(32), 'run-id': z.string().optional(), wait: z.boolean().default(false),
      }));
      submitted = await submitEvaluation(ctx, {
        dataset: o.dataset, category: o.category, version: o['model-version'], shardSize: o['shard-size'], runId: o['run-id'],
      });
      process.stdout.write(JSON.stringify(submitted) + '\n');
      if (o.wait) await waitAndPrint(ctx, submitted.runId, 'evaluation');
    }
  } finally {
    await ctx.close();
  }
}

/** Waits for a run with a progress bar over its shards; throws with the failure reasons if it fails. */
export async function watchRun(
  connection: Parameters<typeof waitForRun>[0], runId: string, kind: RunKind, prefix: string, log: ReturnType<typeof createLogger>,
  signal?: AbortSignal,
): Promise<RunProgress> {
  let bar: ReturnType<typeof startProgress> | null = null;
  let shown = 0;
  const final = await waitForRun(connection, runId, kind, prefix, {
    signal,
    onProgress: (p) => {
      bar ??= startProgress(`${kind} ${runId.slice(0, 24)}`, p.counts.total + 1, log);
      const done = p.counts.done + (p.state === 'completed' ? 1 : 0);
      if (done > shown) bar.tick(done - shown);
      shown = Math.max(shown, done);
    },
  });
  (bar as ReturnType<typeof startProgress> | null)?.stop();
  if (final.state === 'failed') {
    const reasons = final.failures.map((f) => `${f.jobId}: ${f.reason}`).join('\n  ');
    throw new Error(`${kind} run ${runId} failed:\n  ${reasons}`);
  }
  return final;
}

async function waitAndPrint(ctx: ReturnType<typeof producerContext>, runId: string, kind: RunKind): Promise<void> {
  const final = await watchRun(ctx.connection, runId, kind, ctx.prefix, ctx.log);
  process.stdout.write(JSON.stringify({ runId, state: final.state, result: final.parent?.returnValue ?? null }) + '\n');
}

export const STATUS_USAGE = `patchcore status <run id> [--watch]
  Shows a run's state and its shards' progress; --watch follows it to the end with a progress bar.`;

export async function statusCommand(argv: string[]): Promise<void> {
  const o = parseCommand('status', argv, { watch: { type: 'boolean' } },
    z.object({ run: z.string({ error: 'is required' }), watch: z.boolean().default(false) }), ['run']);
  const ctx = producerContext('status');
  try {
    const kind = await runKindOf(ctx.connection, o.run, ctx.prefix);
    if (!kind) throw new Error(`no run "${o.run}" in the queues (QUEUE_PREFIX "${ctx.prefix}")`);
    const p = o.watch ? await watchRun(ctx.connection, o.run, kind, ctx.prefix, ctx.log) : await runProgress(ctx.connection, o.run, kind, { prefix: ctx.prefix });
    process.stdout.write(JSON.stringify(p, null, 2) + '\n');
  } finally {
    await ctx.close();
  }
}

export const REPORT_USAGE = `patchcore report get <run id> <dir>
  Downloads reports/<run id>/ (metrics.json, scores.csv, index.html, plots, gallery) into <dir>.`;

export async function reportCommand(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (what !== 'get') throw new UsageError('patchcore report: expected "get"');
  const o = parseCommand('report get', rest, {},
    z.object({ run: z.string({ error: 'is required' }), dir: z.string({ error: 'is required' }) }), ['run', 'dir']);
  const store = ObjectStore.fromEnv();
  try {
    const r = await store.downloadPrefix(reportPrefix(o.run), resolve(o.dir));
    if (r.files === 0) throw new Error(`run "${o.run}" has no report in the bucket (nothing under ${reportPrefix(o.run)})`);
    process.stdout.write(JSON.stringify({ run: o.run, dir: resolve(o.dir), files: r.files, bytes: r.bytes }) + '\n');
  } finally {
    store.destroy();
  }
}

export const SCHEDULE_USAGE = `patchcore schedule set <category> --dataset <name> --cron "<expr>" [--tz <zone>] [--recipe paper|seed]
                      [--coreset-ratio <r>] [--per-shard-coreset <r>] [--shard-size <n>]
patchcore schedule list
patchcore schedule remove <category>
  Scheduled retraining with a BullMQ job scheduler: at every cron tick a \`patchcore worker scheduler\` process submits
  a training run of the dataset; each run writes a new model version and moves the category's latest pointer
  only once that version is complete.`;

export async function scheduleCommand(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  const ctx = producerContext('schedule');
  try {
    if (what === 'set') {
      const o = parseCommand('schedule set', rest, {
        dataset: { type: 'string' }, cron: { type: 'string' }, tz: { type: 'string' }, recipe: { type: 'string' },
        'coreset-ratio': { type: 'string' }, 'per-shard-coreset': { type: 'string' }, 'shard-size': { type: 'string' },
      }, z.object({
        category: z.string({ error: 'is required' }), dataset: z.string({ error: 'is required' }),
        cron: z.string({ error: 'is required' }), tz: z.string().optional(), recipe: z.enum(RECIPE_NAMES).optional(),
        'coreset-ratio': ratio.optional(), 'per-shard-coreset': ratio.optional(), 'shard-size': positiveInt.optional(),
      }), ['category']);
      const r = await setSchedule(ctx.connection, ctx.prefix, {
        category: o.category, dataset: o.dataset, cron: o.cron, tz: o.tz, recipe: o.recipe, coresetRatio: o['coreset-ratio'],
        perShardCoresetRatio: o['per-shard-coreset'] ?? null, shardSize: o['shard-size'],
      });
      process.stdout.write(JSON.stringify({ scheduler: r.id, next: r.next ? new Date(r.next).toISOString() : null }) + '\n');
    } else if (what === 'list') {
      process.stdout.write(JSON.stringify(await listSchedules(ctx.connection, ctx.prefix), null, 2) + '\n');
    } else if (what === 'remove') {
      const o = parseCommand('schedule remove', rest, {}, z.object({ category: z.string({ error: 'is required' }) }), ['category']);
      const removed = await removeSchedule(ctx.connection, ctx.prefix, o.category);
      if (!removed) throw new Error(`no retraining schedule for category "${o.category}"`);
      process.stdout.write(JSON.stringify({ removed: o.category }) + '\n');
    } else {
      throw new UsageError('patchcore schedule: expected "set", "list" or "remove"');
    }
  } finally {
    await ctx.close();
  }
}
